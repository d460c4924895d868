"""Row 1: how many steps and seconds the reference encoder-decoder needs to learn copy and reverse.

train_copy_task stops at the first held-out check with 100% greedy exact match, so checking
every ``eval_every`` steps resolves the step count to that many steps. The seconds reported as
"training" leave out the time spent in those checks (greedy decoding of the held-out set), which
a less frequent check would not pay; the wall time with the checks is in the details.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from .common import Row, median

TITLE = "Capstone convergence: steps and seconds to 100% held-out exact match"
TARGETS = {1: (250, 3.0), 2: (300, 5.0)}  # n_layers -> (steps, seconds), from issue 6


@contextmanager
def timed_greedy_decode(module, spent: list[float]):
    """Wrap module.greedy_decode so the seconds spent in it are added to spent[0]."""
    original = module.greedy_decode

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    module.greedy_decode = timed
    try:
        yield
    finally:
        module.greedy_decode = original


def one_run(copy_task, n_layers: int, reverse: bool, seed: int, eval_every: int, max_steps: int, n_eval: int) -> dict:
    """Train once; return steps, training seconds, wall seconds and the final accuracy."""
    config = copy_task.CopyTaskConfig(n_layers=n_layers, reverse=reverse, seed=seed, eval_every=eval_every,
                                      max_steps=max_steps, n_eval=n_eval)
    spent = [0.0]
    with timed_greedy_decode(copy_task, spent):
        start = time.perf_counter()
        result = copy_task.train_copy_task(config)
        wall = time.perf_counter() - start
    return {"seed": seed, "steps": result.steps, "accuracy": result.accuracy, "reached": result.accuracy == 1.0,
            "train_s": wall - spent[0], "wall_s": wall}


def run(quick: bool = False) -> Row:
    from reference import s11_copy_task as copy_task

    row = Row("convergence", TITLE)
    seeds = [0] if quick else [0, 1, 2]
    eval_every, max_steps, n_eval = (10, 20, 50) if quick else (10, 1000, 200)
    row.details = {"seeds": seeds, "eval_every": eval_every, "max_steps": max_steps, "n_eval": n_eval, "runs": {}}
    for n_layers in (1, 2):
        step_target, second_target = TARGETS[n_layers]
        for reverse in (False, True):
            task = "reverse" if reverse else "copy"
            label = f"{task}, {n_layers} layer{'s' if n_layers > 1 else ''}"
            runs = [one_run(copy_task, n_layers, reverse, seed, eval_every, max_steps, n_eval) for seed in seeds]
            row.details["runs"][label] = runs
            reached = [r for r in runs if r["reached"]]
            how = f"median of {len(seeds)} seed(s), {len(reached)}/{len(runs)} reached 100% within {max_steps} steps"
            if len(reached) * 2 <= len(runs):  # the median run did not converge
                accuracy = median([r["accuracy"] for r in runs])
                row.add(f"{label}: steps to 100%", None, "steps", f"<= {step_target}",
                        note=f"{how}; median held-out accuracy {accuracy:.1%} at {max_steps} steps")
                row.add(f"{label}: training seconds to 100%", None, "s", f"<= {second_target:g}", note=how)
                continue
            # a seed that never converged counts as slower than every seed that did
            steps = median([r["steps"] if r["reached"] else float("inf") for r in runs])
            seconds = median([r["train_s"] if r["reached"] else float("inf") for r in runs])
            row.add(f"{label}: steps to 100%", steps, "steps", f"<= {step_target}", note=how,
                    met=steps <= step_target)
            row.add(f"{label}: training seconds to 100%", round(seconds, 2), "s", f"<= {second_target:g}",
                    note="held-out checks excluded; " + how, met=seconds <= second_target)
    return row
