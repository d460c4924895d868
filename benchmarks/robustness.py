"""Row 6: the reference capstone's verdict under perturbations that must not change it.

A learner's correct code rounds differently from ours: another CPU's vector kernels, another
thread count, the same formula written another way. Each perturbation below stands in for one of
those. Every run trains the reference capstone with its default recipe and is judged exactly as
tests/test_s11_copy_task.py judges a learner (its own judge and pass mark, imported from it): all
runs must pass, and the lowest judged accuracy, minus the pass mark, is the margin.

    perturbation     what changes
    none             nothing (torch threads 1): the baseline
    threads-2        two torch threads (reductions are split differently)
    weights-1e-6     every initial weight times (1 + 1e-6 N(0, 1)): another CPU's rounding, in miniature
    einsum-softmax   attention written with einsum and an explicit exp(x - max) / sum softmax
    cross-entropy    the loss as F.cross_entropy(ignore_index=pad) instead of LabelSmoothingLoss(smoothing 0)
    cpu-<kernels>    another of torch's CPU kernel sets (ATEN_CPU_CAPABILITY=avx2, default), in a child process

    python -m benchmarks --only robustness
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time

from .common import ROOT, Row

TITLE = "Capstone robustness: the reference's verdict under perturbed rounding"
IN_PROCESS = ("none", "threads-2", "weights-1e-6", "einsum-softmax", "cross-entropy")
KERNELS = ("avx2", "default")  # run in a child process each, where the CPU offers more than them
TASKS = ("copy", "reverse")


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
    """The CPU kernel sets below the one torch picked on this machine (each is run in a child)."""
    import torch

    native = torch.backends.cpu.get_cpu_capability().lower()
    order = ["default", "avx2", "avx512"]
    below = order[: order.index(native)] if native in order else []
    return [kernel for kernel in KERNELS if kernel in below]


def kernel_runs(kernels: list[str], seeds: list[int], results: dict[str, list[dict] | str]) -> None:
    """Each kernel set in a child process of its own (torch reads ATEN_CPU_CAPABILITY at start-up), one
    after the other; results[kernel] is the child's runs, or why there are none."""
    for kernel in kernels:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=kernel, PYTHONDONTWRITEBYTECODE="1")
        plan = json.dumps({"seeds": seeds, "name": f"cpu-{kernel}"})
        done = subprocess.run([sys.executable, "-m", "benchmarks.robustness", plan], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode == 0:
            results[kernel] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            results[kernel] = f"exited {done.returncode}: {done.stderr.strip()[-200:]}"


def worker(plan: dict) -> list[dict]:
    """In a child: every task and seed of the plan, unperturbed but for the environment it was given."""
    import torch

    torch.set_num_threads(1)
    runs = [one_run(task, seed, "none") for task in TASKS for seed in plan["seeds"]]
    return [run | {"perturbation": plan["name"]} for run in runs]


def run(quick: bool = False) -> Row:
    import torch

    row = Row("robustness", TITLE)
    seeds = [0] if quick else list(range(10))
    kernel_seeds = list(range(5))
    kernels = [] if quick else kernels_here()  # --quick: no children
    children: dict[str, list[dict] | str] = {}
    beside = threading.Thread(target=kernel_runs, args=(kernels, kernel_seeds, children))
    beside.start()  # the children run beside the in-process runs: two cores busy, one thread each
    runs = [one_run(task, seed, name, quick) for name in IN_PROCESS for task in TASKS for seed in seeds]
    beside.join()
    for kernel in kernels:
        if isinstance(children[kernel], str):
            row.add(f"cpu-{kernel}: child process", None, note=f"n/a: {children[kernel]}")
        else:
            runs += children[kernel]
    mark = judging_suite().PASS_MARK
    row.details = {"pass_mark": mark, "capability": torch.backends.cpu.get_cpu_capability(), "runs": runs}
    note = (f"{len(seeds)} seeds x {len(IN_PROCESS)} in-process perturbations x {len(TASKS)} tasks"
            + (f", + {len(kernel_seeds)} seeds x kernels {', '.join(kernels)} in children" if kernels else "")
            + ("; --quick: 3 steps and no children, so nothing passes and nothing is measured" if quick else ""))
    passed = sum(r["passed"] for r in runs)
    row.add("runs passed", passed, f"of {len(runs)}", f"all {len(runs)}", note=note, met=passed == len(runs))
    lowest = min(r["judged"] for r in runs)
    row.add("lowest judged accuracy", round(100 * lowest, 1), "%", f">= {100 * mark:g}",
            note=f"greedy exact match on the test's fresh strings; pass mark {mark:.0%}", met=lowest >= mark)
    row.add("margin over the pass mark", round(100 * (lowest - mark), 1), "points")
    for task in TASKS:
        mine = [r for r in runs if r["task"] == task]
        steps = sorted(r["steps"] for r in mine)
        cpu = sorted(r["cpu_s"] for r in mine if r["perturbation"] != "threads-2")
        row.add(f"{task}: steps (median, max)", steps[len(steps) // 2], "steps", note=f"max {steps[-1]}")
        row.add(f"{task}: CPU seconds per run (median, max)", cpu[len(cpu) // 2] if cpu else math.nan, "s",
                note=f"max {cpu[-1] if cpu else 'n/a'}; one thread, held-out checks and judging included")
    for name in IN_PROCESS + tuple(f"cpu-{k}" for k in kernels):
        mine = [r for r in runs if r["perturbation"] == name]
        if mine:
            worst = min(r["judged"] for r in mine)
            row.details.setdefault("by_perturbation", {})[name] = {
                "passed": sum(r["passed"] for r in mine), "runs": len(mine), "lowest_judged": worst}
    return row


if __name__ == "__main__":  # a child started by kernel_runs
    print(json.dumps(worker(json.loads(sys.argv[1]))))
