"""Every stage suite passes on the reference and fails on the stubs as shipped.

A test that passes on an untouched stub cannot tell a learner anything: it is a defect here.
"""

from __future__ import annotations

import pytest

from grader import curriculum

STAGES = curriculum.load()
IDS = [s.id for s in STAGES]
# Each fixture runs every stage suite in one child pytest (the capstones train real models): slow,
# and exempt from the per-test backstop because the child limits every test itself.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(0)]


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_suite_passes_on_the_reference(stage, reference_run):
    outcomes = reference_run.stage(stage.id)
    assert outcomes, f"{stage.id}: no tests ran on the reference\n{reference_run.output[-3000:]}"
    bad = {name: outcome for name, outcome in outcomes.items() if outcome != "passed"}
    assert not bad, f"{stage.id}: on the reference these did not pass: {bad}\n{reference_run.output[-3000:]}"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_suite_fails_on_the_stub_and_no_test_passes(stage, stub_run):
    outcomes = stub_run.stage(stage.id)
    assert outcomes, f"{stage.id}: no tests ran on the stubs\n{stub_run.output[-3000:]}"
    passing = sorted(name for name, outcome in outcomes.items() if outcome == "passed")
    skipped = sorted(name for name, outcome in outcomes.items() if outcome == "skipped")
    assert not passing, f"{stage.id}: these tests pass on the untouched stub, so they cannot fail: {passing}"
    assert not skipped, f"{stage.id}: these tests skip on the stub (a skip must never count as a pass): {skipped}"


def test_stage_suites_have_enough_tests(reference_run):
    thin = {s.id: len(reference_run.stage(s.id)) for s in STAGES if len(reference_run.stage(s.id)) < 5}
    assert not thin, f"stage suites with fewer than five tests: {thin}"
