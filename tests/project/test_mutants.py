"""The mutation score: every catalogued wrong implementation is caught by its own stage's suite.

Each mutant is reference/ with one realistic mistake in one stage file (tests/mutants/<stage>.toml).
Its stage's suite must fail on it, and the failure output must name the symptom.
"""

from __future__ import annotations

import json

import pytest

from grader import curriculum, mutants
from grader_kata import run_module

CATALOGUE = mutants.load()
STAGES = curriculum.load()


def test_catalogue_is_big_enough_and_covers_every_stage():
    per_stage = {stage.id: sum(m.stage == stage.id for m in CATALOGUE) for stage in STAGES}
    thin = {stage: n for stage, n in per_stage.items() if n < 2}
    assert len(CATALOGUE) >= 60, f"the catalogue has {len(CATALOGUE)} mutants; it needs at least 60"
    assert not thin, f"stages with fewer than two mutants: {thin}"


def test_mutant_names_are_unique_and_every_edit_applies():
    labels = [m.label for m in CATALOGUE]
    assert len(labels) == len(set(labels)), "two mutants share a name within a stage"
    for mutant in CATALOGUE:
        source = curriculum.REFERENCE.joinpath(f"{mutant.stage}.py").read_text(encoding="utf-8")
        assert mutants.mutate(source, mutant) != source, f"{mutant.label}: its edits change nothing"


@pytest.fixture(scope="module")
def verdicts(mutant_rows):
    """The whole catalogue's verdicts (run once per session by conftest's mutant_rows)."""
    by_label = {m.label: m for m in CATALOGUE}
    return {entry["label"]: mutants.Verdict(by_label[entry["label"]], entry["caught"], entry["symptom_shown"], entry["output"])
            for entry in mutant_rows}


@pytest.mark.slow
@pytest.mark.timeout(0)  # the first of these runs the catalogue (minutes when busy); each suite has its own limit
@pytest.mark.parametrize("mutant", CATALOGUE, ids=[m.label for m in CATALOGUE])
def test_mutant_is_caught_by_its_stage_with_the_symptom_named(mutant, verdicts):
    verdict = verdicts[mutant.label]
    tail = "\n".join(verdict.output.splitlines()[-30:])
    assert verdict.caught, f"{mutant.label} ({mutant.description}) passes its suite: the suite must catch it\n{tail}"
    assert verdict.symptom_shown, f"{mutant.label}: caught, but no failure message says {mutant.symptom!r}\n{tail}"


@pytest.mark.slow
@pytest.mark.timeout(0)
def test_mutation_score_is_reported(verdicts, capsys):
    caught = sum(v.ok for v in verdicts.values())
    with capsys.disabled():
        print(f"\nmutation score: {caught}/{len(verdicts)} catalogued mistakes caught")
    assert caught == len(verdicts)


@pytest.mark.slow
def test_through_the_grader_a_mutant_fails_only_its_own_stage(tmp_path):
    """The whole scorecard on reference/ with one mistake in multi-head attention (stage 5).

    Stage 5 must fail; every other stage must still pass, and the stages built on stage 5
    (encoder, decoder, model, capstone) must say they used the reference's stage 5 instead.
    """
    mutant = next(m for m in CATALOGUE if m.label == "s05_multihead:split_without_transpose")
    tree = mutants.build_tree(mutant, tmp_path / "submission")
    report = tmp_path / "result.json"
    done = run_module(curriculum.ROOT, "grader", "--impl", str(tree), "--format", "json", "--output", str(report))
    assert report.is_file(), f"the grader wrote no result (exit {done.returncode}): {done.stderr[-2000:]}"
    stages = {stage["id"]: stage for stage in json.loads(report.read_text(encoding="utf-8"))["stages"]}
    assert stages["s05_multihead"]["status"] != "passed", "the grader passed stage 5 with heads split without a transpose"
    others = {sid: (s["status"], s["reason"], next((f"{t['exc_type']}: {t['message'][:500]}" for t in s["tests"]
                                                    if t["outcome"] != "passed"), ""))
              for sid, s in stages.items() if sid != "s05_multihead" and s["status"] != "passed"}
    assert not others, f"a mistake in stage 5 made other stages fail: {others}"
    for dependent in ("s07_encoder", "s08_decoder", "s09_transformer", "s11_copy_task"):
        assert "s05_multihead" in stages[dependent]["substituted"], (
            f"{dependent} should have used reference/'s stage 5 and said so; substituted = {stages[dependent]['substituted']}")
