"""Row 4: how long a learner waits for the grader: the whole scorecard, and a one-stage re-grade.

Both run as the learner runs them, as child processes from the repository root, on the
reference (so every suite runs to the end instead of stopping at a stub).
"""

from __future__ import annotations

import subprocess
import sys
import time

from .common import ROOT, Row, median, not_available

TITLE = "Grader: wall time of the whole scorecard and of a one-stage re-grade (reference)"


def timed_command(arguments: list[str], timeout: float) -> tuple[float | None, str]:
    """Run ``python -m grader <arguments>``; return (seconds, note). Seconds is None if it failed."""
    command = [sys.executable, "-m", "grader", *arguments]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"n/a: still running after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    shown = "python -m grader " + " ".join(arguments)
    if done.returncode != 0:  # the reference passes every stage: anything else is a broken grader
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        return None, f"n/a: `{shown}` exited {done.returncode}: {last[:160]}"
    return round(seconds, 2), f"`{shown}`, one run, including interpreter start-up"


def median_of(arguments: list[str], repeats: int, timeout: float) -> tuple[float | None, str, list[float]]:
    """The median of ``repeats`` runs of ``python -m grader <arguments>`` (None if any failed)."""
    times = []
    for _ in range(repeats):
        seconds, note = timed_command(arguments, timeout)
        if seconds is None:
            return None, note, times
        times.append(seconds)
    shown = "python -m grader " + " ".join(arguments)
    return round(median(times), 2), f"`{shown}`, median of {repeats} runs, interpreter start-up included", times


def run(quick: bool = False) -> Row:
    if not (ROOT / "grader" / "__main__.py").is_file():
        return not_available("grader", TITLE, "grader/__main__.py (python -m grader) is not written yet")
    row = Row("grader", TITLE)
    if quick:
        row.add("whole scorecard", None, "s", note="n/a: skipped with --quick (it runs every suite)")
    else:
        seconds, note, times = median_of(["--impl", "reference", "--format", "json"], 3, timeout=600)
        row.add("whole scorecard", seconds, "s", "<= 15", note, met=None if seconds is None else seconds <= 15)
        row.details["whole scorecard, each run"] = times
    seconds, note, times = median_of(["--impl", "reference", "3"], 1 if quick else 5, timeout=120)
    row.add("one-stage re-grade (s03_attention)", seconds, "s", "<= 2", note, met=None if seconds is None else seconds <= 2)
    row.details["one-stage re-grade, each run"] = times
    return row
