"""python -m grader.train, run from outside as a person would: it trains, reports, substitutes loudly,
and answers bad input with one line and exit status 2."""

from __future__ import annotations

import os
import shutil
import subprocess

import preloaded
import pytest

from grader import curriculum

ROOT = curriculum.ROOT


def train(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([*preloaded.python_m(env), "grader.train", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=240)


@pytest.mark.slow
def test_copy_trains_the_reference_and_reports_accuracy_and_examples():
    done = train("copy", "--impl", "reference", "--steps", "3", "--quiet")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("copy: held-out exact match "), done.stdout
    assert "after 3 steps" in lines[0], done.stdout
    assert len([line for line in lines if " -> " in line]) == 3, f"expected three decoded examples:\n{done.stdout}"
    assert "using reference" not in done.stdout, "nothing is substituted when --impl is the reference"


@pytest.mark.slow
def test_lm_trains_and_prints_a_generated_sample_of_the_book():
    done = train("lm", "--impl", "reference", "--steps", "2", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "validation loss" in done.stdout and "unigram baseline" in done.stdout, done.stdout
    assert "It was on a dreary night of November" in done.stdout, f"the sample should continue the prompt:\n{done.stdout}"
    assert "\r" not in done.stdout, "no progress line when the output is not a terminal"


@pytest.mark.slow
def test_untouched_stubs_are_replaced_by_the_reference_and_named(stub_tree):
    done = train("reverse", "--impl", str(stub_tree), "--steps", "2")
    assert done.returncode == 0, done.stderr
    for stage_id in [f"s{n:02d}" for n in range(1, 12)]:
        assert any(line.startswith(f"using reference/{stage_id}_") and line.endswith("yours is not started")
                   for line in done.stdout.splitlines()), f"{stage_id} not reported as substituted:\n{done.stdout}"
    assert "reverse: held-out exact match" in done.stdout


@pytest.mark.slow
def test_a_stage_that_raises_not_implemented_while_training_is_substituted(tmp_path):
    impl = tmp_path / "mine"
    shutil.copytree(curriculum.REFERENCE, impl)
    source = (impl / "s10_noam_and_loss.py").read_text(encoding="utf-8")
    body = "    return lambda step: noam_lr(step, d_model, warmup, factor)"
    assert body in source
    unfinished = '    raise NotImplementedError("s10_noam_and_loss: not written yet — python -m grader hint s10_noam_and_loss")'
    (impl / "s10_noam_and_loss.py").write_text(source.replace(body, unfinished), encoding="utf-8")
    done = train("copy", "--impl", str(impl), "--steps", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    substituted = [line for line in done.stdout.splitlines() if line.startswith("using reference/")]
    assert substituted == ["using reference/s10_noam_and_loss.py: yours is not finished (it raises NotImplementedError); "
                           "starting again"], done.stdout


@pytest.mark.parametrize(
    "argv",
    [[], ["nonsense"], ["copy", "--steps", "0"], ["lm", "--steps", "many"], ["copy", "--impl", "/no/such/directory"],
     ["copy", "--frobnicate"]],
    ids=["no-task", "unknown-task", "zero-steps", "steps-not-a-number", "missing-impl", "unknown-option"],
)
def test_bad_input_is_one_line_on_stderr_and_exit_status_2(argv):
    done = train(*argv)
    assert done.returncode == 2, f"exit status {done.returncode}, expected 2\n{done.stdout}{done.stderr}"
    assert done.stdout == "", f"nothing on stdout for bad input, got {done.stdout!r}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m grader.train: "), f"expected one line, got {done.stderr!r}"
