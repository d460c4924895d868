"""What every benchmark row shares: the Row record, timing helpers, the machine description."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root


@dataclass
class Measurement:
    """One number in the table."""

    name: str  # what was measured, e.g. "copy, 1 layer: steps to 100%"
    value: float | None  # None when it could not be measured (see note)
    unit: str = ""  # "steps", "s", "ms", "x", "MiB", "tokens/s"
    target: str = ""  # what the project promises, e.g. "<= 250", or "" when nothing is promised
    met: bool | None = None  # whether the target is met; None when there is no target or no value
    note: str = ""  # how it was measured, or why it is missing


@dataclass
class Row:
    """One benchmark: an id, a title, and its measurements; status "n/a" with a reason when skipped."""

    id: str  # "convergence", "builtin", "attention", "grader", "part2", "robustness", "bpe", "generate", "encode"
    title: str
    status: str = "ok"  # "ok", or "n/a: <reason>"
    measurements: list[Measurement] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # raw numbers (per seed, per repeat) for the JSON

    def add(self, name: str, value: float | None, unit: str = "", target: str = "", note: str = "",
            met: bool | None = None) -> Measurement:
        measurement = Measurement(name, value, unit, target, met, note)
        self.measurements.append(measurement)
        return measurement

    def to_json(self) -> dict:
        return asdict(self)


def families():
    """tests/project/families.py: the builders of tokenizer files (and checkpoints) the family tests use."""
    folder = str(ROOT / "tests" / "project")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import families

    return families


def not_available(row_id: str, title: str, reason: str) -> Row:
    """A row that could not run, with the reason in its status."""
    return Row(row_id, title, status=f"n/a: {reason}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Like time_call for several functions, alternating between them on every repeat.

    On a machine that other processes also load, alternating spreads their noise over every
    contender instead of punishing whichever happened to run during a busy moment.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def machine() -> dict:
    """Where the numbers were measured: enough to know whether two tables are comparable."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": cores,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": load,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
