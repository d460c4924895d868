"""The verdict cache (grader/cache.py): a verdict is reused only when nothing it depends on changed, a course
never reads it, a broken entry is ignored. Its key is checked input by input in this process; the grader itself
runs as a process on a temporary copy of the miniature kata, with the cache in a temporary folder."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import pytest

from grader import cache, cli, curriculum, grading
from grader.batch import Options, grader_command
from grader.results import StageResult
from grader_kata import build_kata, grade, submission  # noqa: I001

WRONG_ADD = '"""A wrong edit."""\n\n\ndef add(a, b):\n    return a - b\n'


@pytest.fixture(scope="module")
def kata(tmp_path_factory) -> Path:
    return build_kata(tmp_path_factory.mktemp("cache") / "kata")


def key_of(kata: Path, tree: Path, learner: list[str] | None, **settings) -> str:
    """The key of s03_combo (it loads s01_add and s02_scale) graded on ``tree``, ``learner`` taken from it."""
    stages = curriculum.load(kata / "curriculum.toml")
    unit = next(u for u in grading.units_for(stages, kata) if u.stage.id == "s03_combo")
    found = grading.Settings(root=kata, impl=tree, reference=kata / "reference", **{"fallback": True} | settings)
    sources = {sid: tree if sid == "s03_combo" or sid in (learner or ()) else kata / "reference"
               for sid in ("s01_add", "s02_scale", "s03_combo")}
    return cache.key(found, unit, "", sources, cache.Digests())


def test_every_input_of_the_key_changes_it_and_nothing_else_does(kata, tmp_path, monkeypatch):
    tree = submission(kata, tmp_path / "mine")
    learner = ["s01_add"]  # s02_scale comes from reference/
    before = key_of(kata, tree, learner)
    assert key_of(kata, tree, learner) == before, "the same inputs must give the same key"
    for path in (tree / "s03_combo.py", tree / "s01_add.py", kata / "reference" / "s02_scale.py",
                 kata / "tests" / "test_s03_combo.py", kata / "tests" / "checks.py", kata / "tests" / "conftest.py",
                 kata / "curriculum.toml", kata / "grader" / "render.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text + "# a comment\n", encoding="utf-8")
        assert key_of(kata, tree, learner) != before, f"an edit to {path.name} must re-grade"
        path.write_text(text, encoding="utf-8")
    tree.joinpath("s02_scale.py").write_text("# not loaded: reference/s02_scale.py is\n", encoding="utf-8")
    assert key_of(kata, tree, learner) == before, "a stage the plan does not load is no input"
    assert key_of(kata, tree, ["s01_add", "s02_scale"]) != before, "which tree a stage comes from is an input"
    for change in ({"timeout": 1.0}, {"stage_timeout": 9.0}, {"memory_mb": 1}, {"device": "cuda"},
                   {"fallback": False}, {"no_credit": {"s03_combo": "no credit: reads the tests"}}):
        assert key_of(kata, tree, learner, **change) != before, f"{change} must re-grade"
    version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9" if name == "torch" else version(name))
    cache.machine.cache_clear()
    try:
        assert key_of(kata, tree, learner) != before, "another torch must re-grade"
    finally:
        monkeypatch.undo()
        cache.machine.cache_clear()
    assert key_of(kata, tree, learner) == before


def test_a_course_never_reads_nor_keeps_a_verdict(kata, monkeypatch):
    stages = curriculum.load(kata / "curriculum.toml")
    options = Options(kata, 1, 1, 600.0, 60.0, 300.0, 4096, None, False)
    for argv in (grader_command(kata / "reference", options)[3:], grader_command(kata / "reference", options,
                 "gradescope")[3:], ["--ci"], ["--budget", "100"], ["--format", "junit"], ["--format", "github"]):
        assert cli.course_mode(cli.parse(argv, stages, kata)), argv
    assert not cli.course_mode(cli.parse(["--format", "json", "--fresh"], stages, kata))
    for name, value in (("CI", "true"), ("GITHUB_ACTIONS", "true"), ("KATA_CACHE", "off")):
        monkeypatch.setenv(name, value)
        assert cache.folder(kata) is None, f"{name}={value}"
        monkeypatch.delenv(name)


def graded(kata: Path, tree: Path, store: Path, *args: str) -> dict[str, dict]:
    done = grade(kata, "--impl", str(tree), "--format", "json", *args, KATA_CACHE="", CI="", KATA_CACHE_DIR=str(store))
    assert done.code in (0, 1), done.stderr
    return {s["id"]: s for s in done.json()["stages"]}


@pytest.mark.slow  # about 20 grader runs, one per input of the key
def test_reused_while_unchanged_regraded_after_an_edit_never_read_by_a_course(kata, tmp_path):
    tree, store = submission(kata, tmp_path / "mine"), tmp_path / "store"
    first = graded(kata, tree, store)
    assert all(s["status"] == "passed" and not s["reused"] for s in first.values()), first
    assert all(s["reused"] and s["status"] == "passed" for s in graded(kata, tree, store).values())
    text = grade(kata, "--impl", str(tree), KATA_CACHE="", CI="", KATA_CACHE_DIR=str(store)).stdout
    assert "Reused 3 verdicts from an earlier run" in text and "--fresh" in text, text

    tree.joinpath("s01_add.py").write_text(WRONG_ADD, encoding="utf-8")  # a wrong edit right after a cached pass
    wrong = graded(kata, tree, store)
    assert wrong["s01_add"]["status"] == "failing" and not wrong["s01_add"]["reused"], wrong["s01_add"]
    assert not wrong["s03_combo"]["reused"] and wrong["s03_combo"]["substituted"] == ["s01_add"]
    assert wrong["s02_scale"]["reused"]
    assert not any(s["reused"] for s in graded(kata, tree, store, "--fresh").values()), "--fresh re-grades"

    folder = store / "verdicts"
    for entry in folder.glob("*.json"):  # forged: every kept verdict says passed
        document = json.loads(entry.read_text(encoding="utf-8"))
        entry.write_text(json.dumps(document | {"result": document["result"] | {"status": "passed"}}), encoding="utf-8")
    assert graded(kata, tree, store)["s01_add"]["status"] == "passed", "the forged entry is what a learner reads"
    stage = graded(kata, tree, store, "--ci")["s01_add"]  # batch's and Gradescope's command: the test above
    assert stage["status"] == "failing" and not stage["reused"], "--ci read a kept verdict"

    for entry in folder.glob("*.json"):
        entry.write_text("{not json", encoding="utf-8")
    again = graded(kata, tree, store)
    assert again["s01_add"]["status"] == "failing" and not any(s["reused"] for s in again.values())
    assert all(s["reused"] for s in graded(kata, tree, store).values()), "a broken entry is replaced by a good one"


def test_an_entry_that_is_not_a_kept_verdict_is_ignored(tmp_path):
    result = StageResult("s01_add", 1, "Add", "passed", 5.0, 5.0, "tests/test_s01_add.py")
    assert cache.store(tmp_path, "good", result) and cache.load(tmp_path, "good").reused
    assert not cache.store(tmp_path, "error", dataclasses.replace(result, status="error"))
    for name, text in (("schema", json.dumps({"schema": "other", "result": dataclasses.asdict(result)})),
                       ("fields", json.dumps({"schema": cache.SCHEMA, "result": {"id": "s01_add"}})),
                       ("list", "[]"), ("timed", json.dumps({"schema": cache.SCHEMA, "result": dataclasses.asdict(
                           dataclasses.replace(result, status="timed out"))}))):
        (tmp_path / f"{name}.json").write_text(text, encoding="utf-8")
        assert cache.load(tmp_path, name) is None, name
    assert not cache.store(tmp_path / "good.json" / "below", "x", result), "an unwritable folder keeps nothing"
    cache.prune(tmp_path, limit=1)
    assert len(list(tmp_path.glob("*.json"))) == 1
