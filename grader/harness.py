"""The harness of the commands that run your stages outside the grader (train, pictures, generate, chat): their
shared options, the plan said aloud, a progress line, and a crash named by your stage's file and line."""

from __future__ import annotations

import contextlib
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import curriculum, loader, options as shared

NOT_WRITTEN = re.compile(r"(s\d\d_\w+): not written yet")
OPTIONS = {  # the options of every command that runs learner code, as add_argument's keywords
    "--impl": {"default": "exercises", "help": "whose stages: exercises (default), reference, or a folder like it"},
    "--seed": {"type": int, "default": 0, "help": "random seed (default 0)"},
    "-v --verbose": {"action": "store_true", "help": "the full traceback of a crash (default: one line, file:line)"},
}


def parse(prog: str, doc: str, argv: list[str], options: dict[str, dict]):
    """``argv`` parsed with OPTIONS and ``options``, --steps checked and --impl resolved to ``impl_path``."""
    args = shared.parser(prog, doc, {**OPTIONS, **options}).parse_args(argv)
    if getattr(args, "steps", None) is not None and args.steps < 1:
        raise shared.UsageError(f"--steps must be at least 1, got {args.steps}")
    args.impl_path = shared.resolve_impl(args.impl, curriculum.load())
    return args


@dataclass
class Progress:
    """A line rewritten in place on a terminal (``live``), with the time left to ``total`` once it says ``step N``."""

    live: bool = False
    out: object = sys.stdout
    total: int | None = None
    early_stop: bool = False  # the time left is "at most" that
    start: float = field(default_factory=time.perf_counter)
    width: int = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, line: str) -> None:
        if not self.live:
            return
        text = f"{line}  {self.elapsed():6.1f}s"
        if self.total and (done := re.search(r"step\s+(\d+)", line)) and int(done[1]):
            left = self.elapsed() * max(0, self.total - int(done[1])) / int(done[1])
            text += f", {'at most ' if self.early_stop else ''}about {left:.0f}s left"
        print("\r" + text.ljust(self.width), end="", file=self.out, flush=True)
        self.width = len(text)

    def close(self) -> None:
        if self.live and self.width:
            print(file=self.out, flush=True)
        self.width = 0


def forward_frames(again: Callable[[], object]) -> list[tuple[str, int]]:
    """(file, line) of the forward call behind a failing backward: ``again`` (the crashed run) under anomaly mode."""
    with warnings.catch_warnings(record=True) as caught, torch.autograd.detect_anomaly(check_nan=False):
        warnings.simplefilter("always")
        with contextlib.suppress(Exception):  # the same crash, expected
            again()
    trace = "\n".join(str(w.message) for w in caught if "Traceback of forward call" in str(w.message))
    return [(name, int(line)) for name, line in re.findall(r'File "([^"]+)", line (\d+)', trace)]


def report_crash(prog: str, error: BaseException, plan: loader.Plan, verbose: bool, again: Callable[[], object]) -> int:
    """Exit status 1, one line on stderr: your stage's file:line (via ``again`` for a failing backward) or where."""
    if verbose:
        traceback.print_exception(error)
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(error.__traceback__)]
    if "gradient computation" in str(error) or "backward" in str(error):
        frames += forward_frames(again)
    what = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}".rstrip(": ")
    if found := plan.crashed_in(frames):
        line = f"your {found[0]} crashed at {plan.impl.name}/{found[0]}.py:{found[1]}: {what}"
    else:
        where = f" in {Path(frames[-1][0]).parent.name}/{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else ""
        using = f", while using your {', '.join(plan.yours())}" if plan.yours() else ""
        line = f"crashed{where}{using}: {what}"
    print(f"{prog}: {line}" + ("" if verbose else " (-v shows the traceback)"), file=sys.stderr)
    return 1


def run_plan(plan: loader.Plan, work: Callable, verbose: bool, prog: str, out=sys.stdout, **progress) -> tuple:
    """Say whose stages are used, then (0, work(modules, Progress(...))), restarted on a stage's NotImplementedError."""
    print("".join(line + "\n" for line in plan.describe()), end="", file=out)
    modules = lambda stage_id: loader.load_stage(plan.sources, stage_id)  # noqa: E731
    while True:
        bar = Progress(out=out, **progress)
        try:
            return 0, work(modules, bar)
        except Exception as error:  # noqa: BLE001 - the learner's code may raise anything
            bar.close()
            if isinstance(error, shared.UsageError):
                raise  # bad input (a checkpoint that cannot be run): one line, exit 2, from run_main
            found = isinstance(error, NotImplementedError) and NOT_WRITTEN.search(str(error))
            if not found or plan.sources.get(found[1]) == plan.reference:
                return report_crash(prog, error, plan, verbose, lambda: work(modules, Progress())), None
            plan.substitute(found[1], "not finished (it raises NotImplementedError)")
            print(f"using reference/{found[1]}.py: yours is {plan.substituted[found[1]]}; starting again", file=out)
