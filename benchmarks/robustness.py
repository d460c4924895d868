"""Row 6: the reference capstone's verdict under perturbations that must not change it.

A learner's correct code rounds differently from ours: another CPU's vector kernels, another
thread count, the same formula written another way. Each perturbation below stands in for one of
those. Every run trains the reference capstone with its default recipe and is judged exactly as
tests/test_s11_copy_task.py judges a learner (its own judge and pass mark, imported from it): all
runs must pass, and the lowest judged accuracy, minus the pass mark, is the margin.

    perturbation     what changes                                                          seeds
    none             nothing (one torch thread): the baseline                              0-9
    threads-2        two torch threads (reductions are split differently)                  0-4
    weights-1e-6     every initial weight times (1 + 1e-6 N(0, 1)): another CPU's rounding  0-4
    einsum-softmax   attention written with einsum and an explicit exp(x - max) / sum      0-4
    cross-entropy    the loss as F.cross_entropy(ignore_index=pad), not LabelSmoothingLoss  0-4
    cpu-<kernels>    torch's avx2 or default CPU kernels (ATEN_CPU_CAPABILITY), where the   0-2
                     CPU offers more

Each for copy and for reverse. The runs go to child processes, two at a time, one torch thread
each; about 8 CPU seconds a run on an idle machine.

    python -m benchmarks --only robustness
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from .common import ROOT, Row

TITLE = "Capstone robustness: the reference's verdict under perturbed rounding"
IN_PROCESS = ("none", "threads-2", "weights-1e-6", "einsum-softmax", "cross-entropy")
KERNELS = ("avx2", "default")  # where the CPU offers more than them
TASKS = ("copy", "reverse")
SEEDS = range(10)  # unperturbed
PERTURBED_SEEDS = range(5)  # under each in-process perturbation
KERNEL_SEEDS = range(3)  # under each other kernel set


def einsum_attention(query, key, value, mask=None, dropout=0.0):
    """softmax(Q Kᵀ / sqrt(d_k)) V written another way: einsum, and the softmax spelled out."""
    import torch

    scores = torch.einsum("...qd,...kd->...qk", query, key) * query.size(-1) ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # a fully masked row has max -inf
    exponentials = torch.exp(scores - top)
    weights = exponentials / exponentials.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
    if dropout > 0:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    return torch.einsum("...qk,...kd->...qd", weights, value), weights


class CrossEntropyLoss:
    """LabelSmoothingLoss(smoothing=0) computed by torch: the mean cross-entropy over non-pad targets."""

    def __init__(self, vocab_size: int, pad_id: int, smoothing: float = 0.0) -> None:
        if smoothing:
            raise ValueError("the cross-entropy rewrite stands in for LabelSmoothingLoss with smoothing 0 only")
        self.vocab_size, self.pad_id = vocab_size, pad_id

    def __call__(self, logits, target):
        import torch.nn.functional as F

        return F.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1), ignore_index=self.pad_id)


def perturbed(factory, relative: float, seed: int):
    """Wrap a model class: every parameter of a new model is scaled by (1 + relative * N(0, 1)).

    The noise comes from its own generator, so the training data and everything else stay the same.
    """
    import torch

    def build(*args, **kwargs):
        model = factory(*args, **kwargs)
        generator = torch.Generator().manual_seed(10_000 + seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1 + relative * torch.randn(parameter.shape, generator=generator))
        return model

    return build


@contextlib.contextmanager
def perturbation(copy_task, name: str, seed: int):
    """Apply one in-process perturbation to the reference modules for the duration of a run."""
    import torch

    from reference import s05_multihead

    saved = [(copy_task, "EncoderDecoder", copy_task.EncoderDecoder),
             (copy_task, "LabelSmoothingLoss", copy_task.LabelSmoothingLoss),
             (s05_multihead, "scaled_dot_product_attention", s05_multihead.scaled_dot_product_attention)]
    threads = torch.get_num_threads()
    try:
        if name == "threads-2":
            torch.set_num_threads(2)
        elif name == "weights-1e-6":
            copy_task.EncoderDecoder = perturbed(copy_task.EncoderDecoder, 1e-6, seed)
        elif name == "einsum-softmax":
            s05_multihead.scaled_dot_product_attention = einsum_attention
        elif name == "cross-entropy":
            copy_task.LabelSmoothingLoss = CrossEntropyLoss
        elif name != "none":
            raise ValueError(f"unknown perturbation {name!r}")
        yield
    finally:
        for module, attribute, value in saved:
            setattr(module, attribute, value)
        torch.set_num_threads(threads)


def judging_suite():
    """tests/test_s11_copy_task.py as a module: the benchmark judges exactly as the test does."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import test_s11_copy_task

    return test_s11_copy_task


def one_run(task: str, seed: int, name: str, quick: bool = False) -> dict:
    """Train the reference capstone once under a perturbation; judge it as the test does."""
    import torch

    from reference import s11_copy_task as copy_task

    suite = judging_suite()
    config = copy_task.CopyTaskConfig(reverse=task == "reverse", seed=seed)
    if quick:
        config = copy_task.CopyTaskConfig(reverse=task == "reverse", seed=seed, max_steps=3, eval_every=3)
    with perturbation(copy_task, name, seed):
        start = time.process_time()
        result = copy_task.train_copy_task(config)
        cpu = time.process_time() - start
        torch.manual_seed(0)  # as the test's autouse fixture does before judging
        accuracy, misses = suite.judge(copy_task, result.model, task == "reverse")
    run = {"task": task, "seed": seed, "perturbation": name, "steps": result.steps, "cpu_s": round(cpu, 2),
           "judged": accuracy, "passed": accuracy >= suite.PASS_MARK, "misses": misses}
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "")
    print(f"robustness: {task} seed {seed} {name} {capability}: judged {accuracy:.1%} after {result.steps} steps, "
          f"{cpu:.1f} CPU s", file=sys.stderr, flush=True)  # progress: a full run takes many minutes
    return run


def kernels_here() -> list[str]:
    """The CPU kernel sets below the one torch picked on this machine."""
    import torch

    native = torch.backends.cpu.get_cpu_capability().lower()
    order = ["default", "avx2", "avx512"]
    below = order[: order.index(native)] if native in order else []
    return [kernel for kernel in KERNELS if kernel in below]


def plan(quick: bool) -> list[tuple[str, int, str, str]]:
    """Every run as (task, seed, perturbation, kernel set or "" for torch's own choice)."""
    if quick:
        return [(task, 0, name, "") for name in IN_PROCESS for task in TASKS]
    runs = [(task, seed, "none", "") for task in TASKS for seed in SEEDS]
    runs += [(task, seed, name, "") for name in IN_PROCESS[1:] for task in TASKS for seed in PERTURBED_SEEDS]
    runs += [(task, seed, f"cpu-{kernel}", kernel) for kernel in kernels_here() for task in TASKS
             for seed in KERNEL_SEEDS]
    return runs


def in_child(chunk: list[tuple[str, int, str, str]], quick: bool) -> list[dict] | str:
    """Run a chunk in a fresh interpreter (torch reads ATEN_CPU_CAPABILITY at start-up): its runs, or why not."""
    # OMP_WAIT_POLICY=PASSIVE: on a busy machine, two threads that spin while they wait burn 20x the CPU
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_WAIT_POLICY="PASSIVE")
    if chunk[0][3]:
        env["ATEN_CPU_CAPABILITY"] = chunk[0][3]
    done = subprocess.run([sys.executable, "-m", "benchmarks.robustness", json.dumps({"runs": chunk, "quick": quick})],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)  # progress goes to our stderr
    if done.returncode != 0:
        return f"exited {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(job: dict) -> list[dict]:
    """In a child: the runs of one chunk, one torch thread (threads-2 sets its own)."""
    import torch

    torch.set_num_threads(1)
    return [one_run(task, seed, "none" if kernel else name, job["quick"]) | {"perturbation": name}
            for task, seed, name, kernel in job["runs"]]


def run(quick: bool = False) -> Row:
    row = Row("robustness", TITLE)
    runs_planned = plan(quick)
    jobs = max(1, min(2, os.cpu_count() or 1))  # two children at a time, one torch thread each
    chunks: list[list] = []
    for kernel in dict.fromkeys(r[3] for r in runs_planned):
        mine = [r for r in runs_planned if r[3] == kernel]
        parts = jobs if not kernel else 1
        chunks += [mine[i::parts] for i in range(parts) if mine[i::parts]]
    with ThreadPoolExecutor(jobs) as pool:
        outcomes = list(pool.map(lambda chunk: in_child(chunk, quick), chunks))
    runs = []
    for chunk, outcome in zip(chunks, outcomes):
        if isinstance(outcome, str):
            row.add(f"{chunk[0][2]} ...: child process", None, note=f"n/a: {outcome}")
        else:
            runs += outcome
    return summarize(row, runs, len(runs_planned), quick)


def summarize(row: Row, runs: list[dict], planned: int, quick: bool) -> Row:
    """The table's numbers from the runs' records."""
    import torch

    if not runs:
        row.status = "n/a: every child process failed"
        return row
    mark = judging_suite().PASS_MARK
    for record in runs:
        record["passed"] = record["judged"] >= mark
    names = list(dict.fromkeys(r["perturbation"] for r in runs))
    row.details = {"pass_mark": mark, "capability": torch.backends.cpu.get_cpu_capability(), "runs": runs,
                   "by_perturbation": {name: {"passed": sum(r["passed"] for r in runs if r["perturbation"] == name),
                                              "runs": sum(r["perturbation"] == name for r in runs),
                                              "lowest_judged": min(r["judged"] for r in runs if r["perturbation"] == name)}
                                       for name in names}}
    note = ("--quick: 3 steps, seed 0, no other kernels, so nothing passes and nothing is measured" if quick else
            f"seeds {SEEDS[0]}-{SEEDS[-1]} unperturbed; seeds {PERTURBED_SEEDS[0]}-{PERTURBED_SEEDS[-1]} under each of "
            f"{', '.join(IN_PROCESS[1:])}; seeds {KERNEL_SEEDS[0]}-{KERNEL_SEEDS[-1]} under each other kernel set "
            f"({', '.join(kernels_here()) or 'none below this CPU'}); copy and reverse each")
    passed = sum(r["passed"] for r in runs)
    row.add("runs passed", passed, f"of {len(runs)}", f"all {planned}", note=note, met=passed == planned)
    lowest = min(r["judged"] for r in runs)
    worst = min(runs, key=lambda r: r["judged"])
    row.add("lowest judged accuracy", round(100 * lowest, 1), "%", f">= {100 * mark:g}", met=lowest >= mark,
            note=f"greedy exact match on the test's {judging_suite().JUDGED} fresh strings; lowest: {worst['task']}, "
                 f"seed {worst['seed']}, {worst['perturbation']}")
    row.add("margin over the pass mark", round(100 * (lowest - mark), 1), "points", note=f"pass mark {mark:.0%}")
    for task in TASKS:
        mine = [r for r in runs if r["task"] == task]
        steps = sorted(r["steps"] for r in mine)
        cpu = sorted(r["cpu_s"] for r in mine if r["perturbation"] != "threads-2")
        row.add(f"{task}: steps (median)", steps[len(steps) // 2], "steps", note=f"max {steps[-1]}")
        row.add(f"{task}: CPU seconds per run (median)", cpu[len(cpu) // 2], "s",
                note=f"max {cpu[-1]}; one thread, held-out checks included, judging not")
    return row


if __name__ == "__main__":  # a child started by in_child
    print(json.dumps(worker(json.loads(sys.argv[1]))))
