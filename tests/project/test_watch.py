"""--watch never misses a save: a change made while the first scorecard is being graded triggers another
run. Tested as a process on a temporary copy of the miniature kata."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from grader_kata import build_kata, finish, start, submission  # noqa: I001

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches the grader's children in /proc")


def children(pid: int) -> list[int]:
    """The grader's child processes (its stage runners), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def test_a_save_during_the_first_scorecard_is_graded(tmp_path):
    kata = build_kata(tmp_path / "kata")
    tree = submission(kata, tmp_path / "sub", {"s02_scale": "always_equal.py"})
    process = start(kata, "--watch", "--impl", str(tree), "--max-regrades", "1", "--jobs", "1", fresh=True)
    deadline = time.monotonic() + 120
    while not children(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the first stage is being graded: the scorecard has started, not finished
    try:
        assert process.poll() is None, "the watcher ended before grading"
        target = tree / "s02_scale.py"
        shutil.copy(kata / "reference" / "s02_scale.py", target)  # the fix, saved mid-scorecard
        os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
        run = finish(process, timeout=90)
    finally:
        process.kill()
    first, _, after = run.stdout.partition("Watching ")
    assert "Total:" in first, f"the first scorecard comes first:\n{run.stdout}{run.stderr}"
    assert "s02_scale.py changed: re-graded in" in after, \
        f"the save made during the first scorecard was never graded:\n{run.stdout}{run.stderr}"
    assert "s02_scale: passed" in after, after
