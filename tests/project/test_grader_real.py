"""The grader on this repository's own curriculum: the untouched stubs score zero, all "not started".

Only stages whose suite exists are graded (the others are reported as missing), so this holds while
stages are still being written.
"""

from __future__ import annotations

import json

import pytest

from grader import curriculum, stubgen
from grader_kata import run_module


@pytest.mark.slow  # the real scorecard, every stage
def test_untouched_stubs_score_zero_with_every_graded_stage_not_started(tmp_path):
    stubs = tmp_path / "stubs"
    stages = [s for s in curriculum.load() if s.source(curriculum.REFERENCE).is_file()]
    stubgen.generate(curriculum.REFERENCE, stubs, stages)
    done = run_module(curriculum.ROOT, "grader", "--impl", str(stubs), "--format", "json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["score"] == 0
    graded = {s["id"]: s for s in doc["stages"] if s["status"] != "missing"}
    for stage in stages:
        if stage.suite.is_file():
            assert stage.id in graded, f"{stage.id} has a suite but was not graded"
    wrong = {sid: (s["status"], s["reason"], next((f"{t['exc_type']}: {t['message'][:500]}" for t in s["tests"]
                                                   if t["exc_type"] != "NotImplementedError"), ""))
             for sid, s in graded.items() if s["status"] != "not started"}
    assert not wrong, f"on the untouched stubs every graded stage must be 'not started': {wrong}"
