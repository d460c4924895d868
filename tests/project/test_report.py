"""A failing stage fits on one screen, summary first: status, the first failure in full, the others by
name, the next command; an untouched stub is one line; -v and JSON keep everything. Run from outside
on the real kata, with mutants from the catalogue standing in for a learner's mistakes."""

from __future__ import annotations

import json
import subprocess

import pytest

from grader import curriculum, mutants, render
from grader.results import FAILING, Report, StageResult
from grader.results import TestResult as Outcome
from grader_kata import run_module  # noqa: I001

ROOT = curriculum.ROOT
SCREEN = 40  # lines: the most a failing stage may print by default
STAGES = {stage.id: stage for stage in curriculum.load()}


def grade(*argv: str) -> subprocess.CompletedProcess:
    return run_module(ROOT, "grader", *argv, "--jobs", "2")


def test_an_untouched_stub_is_one_line_naming_the_file_and_the_hint(stub_tree):
    done = grade("1", "--impl", str(stub_tree))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"an untouched stub must be one line, got {len(lines)}:\n{done.stdout}"
    for words in ("s01_vocab: not started", "s01_vocab.py", "python -m grader hint 1"):
        assert words in lines[0], f"expected {words!r} in {lines[0]!r}"


# One realistic mistake per early stage, and every mistake of stage 5 (the 365-line example).
SAMPLE = [m for m in mutants.load() if m.stage == "s05_multihead"] + \
         [next(m for m in mutants.load([sid]) if m.stage == sid) for sid in ("s01_vocab", "s03_attention", "s06_feedforward")]


@pytest.mark.parametrize("mutant", [  # the fast subset keeps one mistake per stage
    pytest.param(m, id=m.label, marks=[pytest.mark.slow] * (m.stage == SAMPLE[0].stage and m is not SAMPLE[0]))
    for m in SAMPLE])
def test_a_failing_stage_fits_on_one_screen_summary_first(mutant, tmp_path):
    tree = mutants.build_tree(mutant, tmp_path / "tree")
    number = str(STAGES[mutant.stage].number)
    done = grade(number, "--impl", str(tree))
    lines = done.stdout.splitlines()
    assert done.returncode == 1, f"{mutant.label} should fail its stage:\n{done.stdout}{done.stderr}"
    assert len(lines) <= SCREEN, f"{mutant.label}: {len(lines)} lines, at most {SCREEN}:\n{done.stdout}"
    assert lines[0].startswith(f"{mutant.stage}: "), f"the status comes first, got {lines[0]!r}"
    assert lines[-1].startswith(f"Next: python -m grader hint {number}") and f"python -m grader {number} -v" in lines[-1]
    assert sum(line.startswith("  First failing test: ") for line in lines) <= 1, "one failure in full, not many"
    assert "Traceback" not in done.stdout


def test_verbose_and_json_keep_every_failure_the_screen_names_them(tmp_path):
    mutant = SAMPLE[0]
    tree = mutants.build_tree(mutant, tmp_path / "tree")
    short = grade("5", "--impl", str(tree)).stdout
    full = grade("5", "--impl", str(tree), "-v").stdout
    stage = next(s for s in json.loads(grade("5", "--impl", str(tree), "--format", "json").stdout)["stages"]
                 if s["id"] == mutant.stage)
    failing = [t for t in stage["tests"] if t["outcome"] != "passed"]
    assert failing, f"{mutant.label} must fail some test"
    assert f"First failing test: {failing[0]['name']}" in short, short
    if len(failing) > 1:
        assert f"{len(failing) - 1} more failing" in short, short
    for test in failing:
        assert test["name"] in full, f"-v must show {test['name']}"
        assert test["message"].strip().splitlines()[0] in full, f"-v must show {test['name']}'s message"
    assert len(full.splitlines()) > len(short.splitlines())


def _stage(tests: list[Outcome]) -> StageResult:
    return StageResult("s05_multihead", 5, "Multi-head attention", FAILING, 0.0, 10.0, "tests/test_s05_multihead.py",
                       tests=tests)


def test_a_long_first_message_is_cut_and_many_names_are_grouped():
    message = "\n".join(f"line {i}" for i in range(100)) + "\nLikely cause: the end"
    tests = [Outcome("test_first", "failed", "AssertionError", message, "s05_multihead.py:7")] + \
            [Outcome(f"test_many[{i}]", "failed", "AssertionError", "x") for i in range(50)] + \
            [Outcome(f"test_other_{i}", "failed", "AssertionError", "x") for i in range(60)]
    text = render.brief(_stage(tests))
    lines = text.splitlines()
    assert len(lines) <= SCREEN, text
    assert "  First failing test: test_first (exercises/s05_multihead.py:7)" in lines
    assert "more lines: add -v" in text and "line 99" not in text
    assert "110 more failing" in text and "test_many (x50)" in text
    card = render.scorecard(Report("exercises", True, "fallback: on", [_stage(tests)]))
    assert "line 99" not in card and "more lines: add -v" in card, "the scorecard cuts the message too"


def test_a_stage_that_does_not_load_says_so_once():
    error = Outcome("test_a[1]", "error", "SyntaxError", "invalid syntax (s05_multihead.py, line 3)")
    stage = _stage([error, Outcome("test_a[2]", "error", error.exc_type, error.message)])
    stage.status, stage.reason = "error", "s05_multihead.py does not load: SyntaxError: invalid syntax (s05_multihead.py, line 3)"
    lines = render.brief(stage).splitlines()
    assert lines[1:3] == [f"  {stage.reason}", "  every test (2) fails with this error"], lines
    assert len(lines) == 4 and lines[-1].startswith("Next: python -m grader hint 5"), lines
