"""Row 1: how many steps and seconds the reference encoder-decoder needs to learn copy and reverse.

Each run is the capstone's default recipe (CopyTaskConfig() but for the seed and the layer count):
train_copy_task stops once the held-out exact match is 100% at ``patience`` checks in a row, or at
max_steps, where its decaying schedule reaches zero. A run "reached 100%" when it stopped early.
Seconds are CPU seconds of this process (time.process_time, one torch thread), so a busy machine
inflates them less than wall time; "training" leaves out the held-out checks (greedy decoding),
which the details include in cpu_s and wall_s.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from .common import Row, median

TITLE = "Capstone convergence: steps and CPU seconds to 100% held-out exact match (default recipe)"
TARGETS = {1: (250, 3.0), 2: (300, 5.0)}  # n_layers -> (steps, seconds), from issue 6


@contextmanager
def timed_greedy_decode(module, spent: list[float]):
    """Wrap module.greedy_decode so the seconds spent in it are added to spent[0]."""
    original = module.greedy_decode

    def timed(*args, **kwargs):
        start = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - start

    module.greedy_decode = timed
    try:
        yield
    finally:
        module.greedy_decode = original


def one_run(copy_task, n_layers: int, reverse: bool, seed: int, quick: bool) -> dict:
    """Train once; return steps, training CPU seconds, CPU and wall seconds, and the final accuracy."""
    config = copy_task.CopyTaskConfig(n_layers=n_layers, reverse=reverse, seed=seed)
    if quick:
        config = copy_task.CopyTaskConfig(n_layers=n_layers, reverse=reverse, seed=seed, max_steps=20, eval_every=10,
                                          n_eval=50)
    spent = [0.0]
    with timed_greedy_decode(copy_task, spent):
        start, cpu = time.perf_counter(), time.process_time()
        result = copy_task.train_copy_task(config)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seed": seed, "steps": result.steps, "accuracy": result.accuracy,
            "reached": result.steps < config.max_steps, "train_s": cpu - spent[0], "cpu_s": cpu, "wall_s": wall}


def run(quick: bool = False) -> Row:
    from reference import s11_copy_task as copy_task

    row = Row("convergence", TITLE)
    seeds = [0] if quick else [0, 1, 2]
    max_steps = 20 if quick else copy_task.CopyTaskConfig().max_steps
    row.details = {"seeds": seeds, "recipe": "CopyTaskConfig() defaults", "runs": {}}
    for n_layers in (1, 2):
        step_target, second_target = TARGETS[n_layers]
        for reverse in (False, True):
            task = "reverse" if reverse else "copy"
            label = f"{task}, {n_layers} layer{'s' if n_layers > 1 else ''}"
            runs = [one_run(copy_task, n_layers, reverse, seed, quick) for seed in seeds]
            row.details["runs"][label] = runs
            reached = [r for r in runs if r["reached"]]
            accuracy = median([r["accuracy"] for r in runs])
            how = (f"median of {len(seeds)} seed(s); {len(reached)}/{len(runs)} stopped early at 100% held-out, the "
                   f"others ran to max_steps {max_steps}; median last held-out exact match {accuracy:.1%}")
            steps = median([r["steps"] for r in runs])
            seconds = median([r["train_s"] for r in runs])
            row.add(f"{label}: steps", steps, "steps", f"<= {step_target}", note=how, met=steps <= step_target)
            row.add(f"{label}: training CPU seconds", round(seconds, 2), "s", f"<= {second_target:g}",
                    note="one torch thread, held-out checks excluded", met=seconds <= second_target)
    return row
