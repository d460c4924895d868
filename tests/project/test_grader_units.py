"""Unit tests of the grader's pure parts: the edge cases a whole grader run rarely reaches.

test_grader.py runs the grader as a process on a miniature kata; these tests call the functions
behind it directly (reading a child's events, rendering reports, hints, the manifest, the mutant
catalogue, the command line), so each edge case costs milliseconds rather than a child process.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader import cli, curriculum, grading, hints, integrity, loader, mutants, render, sandbox
from grader.results import (
    ERROR,
    FAILING,
    MISSING,
    NOT_STARTED,
    PASSED,
    TIMED_OUT,
    Report,
    StageResult,
)
from grader.results import TestResult as Outcome  # not Test*: pytest would try to collect it

STAGE = curriculum.Stage("s01_add", 1, 1, "Add two tensors", 2, (), ("first nudge", "second, nearer"))


def _unit(stage: curriculum.Stage = STAGE, suite: str = "missing.py") -> grading.Unit:
    return grading.Unit(stage, (suite,), f"tests/test_{stage.id}.py", float(stage.points))


def _settings(tmp_path: Path, **kw) -> grading.Settings:
    return grading.Settings(root=tmp_path, impl=tmp_path, reference=None, fallback=False, **kw)


def _interpret(tmp_path: Path, events: list[dict], exitcode: int | None = 0, output_tail: str = "") -> StageResult:
    return grading.interpret(_unit(), events, exitcode=exitcode, killed_for_time=False, settings=_settings(tmp_path),
                         substituted=[], duration=0.1, output_tail=output_tail)


def _collected(*names: str) -> dict:
    return {"event": "collected", "tests": [f"tests/test_s01_add.py::{n}" for n in names]}


def _phase(name: str, when: str, outcome: str, exc_type: str = "", message: str = "") -> dict:
    return {"event": "phase", "test": f"tests/test_s01_add.py::{name}", "when": when, "outcome": outcome,
            "exc_type": exc_type, "message": message, "where": "", "duration": 0.01}


def _expect(result: StageResult, status: str, *words: str) -> None:
    assert result.status == status, f"expected status {status!r}, got {result.status!r} (reason {result.reason!r})"
    for word in words:
        assert word in result.reason, f"expected {word!r} in the reason, got {result.reason!r}"


# ---------------------------------------------------------------- the channel / grading.interpret


def test_channel_keeps_signed_events_in_order_and_names_a_forged_or_missing_line():
    key, other = b"k" * 32, b"o" * 32
    lines = [sandbox._sign(key, "stage", n, {"event": "start", "test": str(n)}) for n in range(3)]
    assert sandbox.verified(b"".join(lines) + lines[0][:20], key) == (
        [("stage", {"event": "start", "test": str(n)}) for n in range(3)], ""), "a last line cut short is ignored"
    forged = sandbox._sign(other, "stage", 1, {"event": "done", "exitstatus": 0})
    events, problem = sandbox.verified(lines[0] + forged + lines[1], key)
    assert events == [("stage", {"event": "start", "test": "0"})] and "not written by the grader" in problem
    events, problem = sandbox.verified(lines[0] + lines[2], key)
    assert "lost or repeated" in problem, "a line taken off the channel is noticed"
    assert sandbox.verified(lines[0] + b"\xff not json\n" + lines[1], key, strict=False) == (
        [("stage", {"event": "start", "test": "0"}), ("stage", {"event": "start", "test": "1"})], ""), \
        "a command's own output between signed lines is skipped, not the end of the channel"


def test_killed_by_sigkill_is_an_error_that_suggests_memory_and_names_the_running_test(tmp_path):
    events = [_collected("test_a"), {"event": "start", "test": "tests/test_s01_add.py::test_a"}]
    result = _interpret(tmp_path, events, exitcode=-9)
    _expect(result, ERROR, "killed (SIGKILL)", "in test_a", "out of memory?")
    assert result.score == 0.0, f"an error earns nothing, got {result.score}"


def test_an_unknown_signal_number_is_still_named(tmp_path):
    _expect(_interpret(tmp_path, [_collected("test_a")], exitcode=-99), ERROR, "crashed (signal 99)")


def test_a_crash_event_before_done_gives_its_first_line(tmp_path):
    events = [_collected("test_a"), {"event": "crash", "message": "\n  INTERNALERROR> boom\nmore"}]
    _expect(_interpret(tmp_path, events, exitcode=3), ERROR, "the test run failed: INTERNALERROR> boom")


def test_a_run_that_never_collected_reports_the_exit_code_and_the_last_output_line(tmp_path):
    result = _interpret(tmp_path, [], exitcode=4, output_tail="first line\nImportError: no torch\n\n")
    _expect(result, ERROR, "did not start (exit code 4): ImportError: no torch")
    silent = _interpret(tmp_path, [], exitcode=4)
    assert silent.reason == "the test run did not start (exit code 4)", f"no output, no tail: got {silent.reason!r}"


def test_a_collection_error_means_the_suite_could_not_be_loaded(tmp_path):
    events = [{"event": "collect_error", "message": "SyntaxError: invalid syntax\n  line 3"},
              {"event": "done", "exitstatus": 2}]
    _expect(_interpret(tmp_path, events, exitcode=2), ERROR, "could not be loaded: SyntaxError: invalid syntax")


def test_a_suite_with_no_tests_is_an_error_not_a_pass(tmp_path):
    events = [_collected(), {"event": "done", "exitstatus": 5}]
    _expect(_interpret(tmp_path, events, exitcode=5), ERROR, "collected no tests")


def test_a_skipped_test_never_counts_as_passed(tmp_path):
    events = [_collected("test_a", "test_b"), _phase("test_a", "call", "passed"),
              _phase("test_b", "setup", "skipped", "Skipped", "needs cuda"), {"event": "done", "exitstatus": 1}]
    result = _interpret(tmp_path, events, exitcode=1)
    _expect(result, ERROR, "test_b was skipped", "never counts as passed")
    assert [t.outcome for t in result.tests] == ["passed", "skipped"], f"got {[t.outcome for t in result.tests]}"


def test_the_first_problem_of_a_test_is_kept_when_teardown_also_fails(tmp_path):
    events = [_collected("test_a"),
              _phase("test_a", "call", "failed", "AssertionError", "values differ"),
              _phase("test_a", "teardown", "failed", "RuntimeError", "teardown broke"),
              {"event": "done", "exitstatus": 1}]
    result = _interpret(tmp_path, events, exitcode=1)
    _expect(result, FAILING, "first failure: test_a")
    test = result.tests[0]
    assert (test.outcome, test.exc_type, test.message) == ("failed", "AssertionError", "values differ"), \
        f"expected the call's failure to be kept, got {(test.outcome, test.exc_type, test.message)}"
    assert test.duration == pytest.approx(0.02), f"durations of both phases add up: got {test.duration}"


# ---------------------------------------------------------------- run planning and the scheduler


def test_precheck_reports_a_missing_suite_and_a_missing_stage_file(tmp_path):
    missing = grading.precheck(_unit(suite=str(tmp_path / "nope.py")), _settings(tmp_path))
    assert missing is not None and missing.status == MISSING and missing.max_score == 0.0, \
        f"no suite: expected MISSING worth 0, got {missing}"
    suite = tmp_path / "test_s01_add.py"
    suite.write_text("def test_a():\n    pass\n", encoding="utf-8")
    deleted = grading.precheck(_unit(suite=str(suite)), _settings(tmp_path))
    assert deleted is not None and deleted.status == ERROR and "no s01_add.py" in deleted.reason, \
        f"no stage file: expected an ERROR naming s01_add.py, got {deleted}"
    (tmp_path / "s01_add.py").write_text("", encoding="utf-8")
    assert grading.precheck(_unit(suite=str(suite)), _settings(tmp_path)) is None, "both present: the unit should run"


def test_hidden_suites_follow_their_stage_with_their_own_points(tmp_path):
    for name in ("test_s01_add.py", "test_s01_add_more.py", "test_s02_other.py"):
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "points.toml").write_text('[points]\n"test_s01_add_more.py" = 0.5\n', encoding="utf-8")
    units = grading.units_for([STAGE], tmp_path) + cli.extra_units(tmp_path, [STAGE], tmp_path / "work", tmp_path)
    got = [(u.label, u.points, u.extra) for u in units]
    assert got == [("tests/test_s01_add.py", 2.0, False), ("test_s01_add.py", 2.0, True),
                   ("test_s01_add_more.py", 0.5, True)], f"got {got}"


def test_a_dependency_cycle_is_reported_instead_of_hanging(tmp_path):
    """A manifest validated by curriculum.load cannot contain a cycle; the scheduler must still end."""
    a = curriculum.Stage("s01_a", 1, 1, "A", 1, ("s02_b",), ())
    b = curriculum.Stage("s02_b", 2, 1, "B", 1, ("s01_a",), ())
    c = curriculum.Stage("s03_c", 3, 1, "C", 1, (), ())
    (tmp_path / "tests").mkdir()
    for stage in (a, b):
        (tmp_path / "tests" / f"test_{stage.id}.py").write_text("def test_x():\n    pass\n", encoding="utf-8")
        (tmp_path / f"{stage.id}.py").write_text("", encoding="utf-8")
    units = grading.units_for([a, b, c], tmp_path)  # c has no suite: recorded at once as missing
    settings = grading.Settings(root=tmp_path, impl=tmp_path, reference=tmp_path / "ref", fallback=True, fork=False)
    seen = []
    results = grading.grade(units, settings, (a, b, c), on_result=seen.append)
    got = [(r.id, r.status, r.reason) for r in results]
    assert got == [("s01_a", ERROR, "its dependencies were never graded"),
                   ("s02_b", ERROR, "its dependencies were never graded"),
                   ("s03_c", MISSING, "no suite tests/test_s03_c.py yet")], f"got {got}"
    assert sorted(r.id for r in seen) == ["s01_a", "s02_b", "s03_c"], f"on_result saw {[r.id for r in seen]}"


# ---------------------------------------------------------------- report rendering


def _stage(number: int, status: str, **kw) -> StageResult:
    fields = dict(id=f"s{number:02d}_x{number}", number=number, title=f"Stage {number}", status=status,
                  score=2.0 if status == PASSED else 0.0, max_score=0.0 if status == MISSING else 2.0,
                  suite=f"tests/test_s{number:02d}_x{number}.py")
    return StageResult(**(fields | kw))


def _report(*stages: StageResult) -> Report:
    return Report(impl="exercises", fallback=True, fallback_note="fallback: on",
                  stages=list(stages))


def test_scorecard_counts_missing_suites_apart_and_lists_substitutions():
    rep = _report(_stage(1, PASSED), _stage(2, FAILING, substituted=["s01_x1"], tests=[Outcome("t", "failed")]),
                  _stage(3, MISSING, reason="no suite yet"))
    text = render.scorecard(rep)
    for words in ("Total: 2/4 points, 1 of 2 graded suites pass (1 without a suite yet, not counted)",
                  "Substituted from reference/ somewhere in this run: s01_x1", "no suite yet"):
        assert words in text, f"expected {words!r} in the scorecard:\n{text}"


def test_substitutions_are_listed_only_where_a_verdict_depended_on_them():
    rep = _report(_stage(1, NOT_STARTED), _stage(2, NOT_STARTED, substituted=["s01_x1"]))
    text = render.scorecard(rep)
    assert "used reference/" not in text and "Substituted" not in text, \
        f"a stage that was not started was not graded, so nothing it loaded mattered:\n{text}"
    assert text.rstrip().splitlines()[-1].startswith("  Details: python -m grader 1"), f"next step last:\n{text}"


def test_next_steps_when_nothing_is_graded_or_everything_passes():
    assert render.next_steps(_report(_stage(1, MISSING))) == ["Nothing was graded: no stage has a suite yet."]
    assert render.next_steps(_report(_stage(1, PASSED))) == ["Every graded stage passes. Well done."]


def test_next_steps_for_an_errored_stage_repeats_its_reason():
    lines = render.next_steps(_report(_stage(1, ERROR, reason="crashed (SIGSEGV)")))
    assert lines[1] == "  crashed (SIGSEGV)", f"expected the reason on the second line, got {lines}"
    started = render.next_steps(_report(_stage(1, NOT_STARTED)), "mine")
    assert "  Open mine/s01_x1.py and read its docstrings: they are the spec." in started, f"got {started}"


def test_detail_says_which_stages_came_from_reference():
    text = render.detail(_stage(2, FAILING, substituted=["s01_x1"],
                                tests=[Outcome("test_a", "failed", "ValueError", "bad", "exercises/s02.py:3")]))
    for words in ("used reference/ for: s01_x1 (yours do not pass yet)", "failed  test_a (exercises/s02.py:3)",
                  "ValueError: bad"):
        assert words in text, f"expected {words!r} in:\n{text}"


def test_junit_has_a_skipped_case_for_a_missing_suite_and_an_error_case_for_a_unit_that_never_ran():
    rep = _report(_stage(1, MISSING, reason="no suite yet"), _stage(2, ERROR, reason="crashed (SIGSEGV)"),
                  _stage(3, TIMED_OUT, reason="stopped after 5 s", tests=[Outcome("test_a", "passed")]))
    root = ET.fromstring(render.to_junit(rep).split("\n", 1)[1])
    assert (root.get("tests"), root.get("errors"), root.get("skipped")) == ("3", "1", "1"), \
        f"expected 3 cases, 1 error, 1 skipped, got {root.attrib}"
    suites = root.findall("testsuite")
    assert suites[0].find("testcase/skipped").get("message") == "no suite yet", ET.tostring(suites[0], "unicode")
    assert suites[1].find("testcase/error").text == "crashed (SIGSEGV)", ET.tostring(suites[1], "unicode")
    assert suites[2].find("system-err").text == "stopped after 5 s", ET.tostring(suites[2], "unicode")


def test_github_annotation_points_at_the_failing_line():
    failing = Outcome("test_a", "failed", "AssertionError", "50%\nof rows", "s01_x1.py:42")
    _, annotations = render.to_github(_report(_stage(1, FAILING, tests=[failing])))
    assert annotations == ["::error file=exercises/s01_x1.py,line=42,title=s01_x1 failing 1 of 1::"
                           "test_a: 50%25%0Aof rows"], f"got {annotations}"


def test_a_pass_threshold_needs_some_points_to_exist():
    rep = _report(_stage(1, MISSING))
    rep.pass_threshold = 0.0
    assert not rep.succeeded(), "a report worth 0 points must not succeed even with --pass-threshold 0"


# ---------------------------------------------------------------- hints


@pytest.mark.parametrize("platform, variable, expected", [
    ("win32", "LOCALAPPDATA", ("transformer-kata",)),
    ("darwin", None, ("Library", "Caches", "transformer-kata")),
    ("linux", "XDG_CACHE_HOME", ("transformer-kata",)),
])
def test_hint_state_lives_in_the_platforms_cache_directory(monkeypatch, tmp_path, platform, variable, expected):
    monkeypatch.delenv("KATA_STATE_DIR", raising=False)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    if variable:
        monkeypatch.setenv(variable, str(tmp_path / "cache"))
    path = hints.state_file(tmp_path / "clone")
    base = (tmp_path / "cache") if variable else (tmp_path / "home")
    assert path.parent == base.joinpath(*expected), f"{platform}: expected under {base.joinpath(*expected)}, got {path}"
    assert path.name.startswith("hints-") and path.suffix == ".json", f"got {path.name}"
    assert path != hints.state_file(tmp_path / "other"), "two clones must not share one counter"


def test_hints_stop_at_the_last_and_a_stage_without_hints_says_so(tmp_path):
    state = tmp_path / "hints.json"
    shown = [hints.next_hint(STAGE, state) for _ in range(3)]
    assert shown == [(1, "first nudge"), (2, "second, nearer"), (2, "second, nearer")], f"got {shown}"
    assert "that is the last one" in hints.format_hint(STAGE, 2, "second, nearer")
    bare = curriculum.Stage("s02_b", 2, 1, "B", 1, (), ())
    assert hints.next_hint(bare, state) == (0, "This stage has no hints yet.")


def test_a_corrupt_or_unwritable_hint_state_still_shows_a_hint(tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("[1, 2", encoding="utf-8")
    assert hints.next_hint(STAGE, corrupt) == (1, "first nudge"), "a corrupt file counts as no hints shown"
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    unwritable = blocker / "hints.json"  # its parent is a file: mkdir fails with an OSError
    got = [hints.next_hint(STAGE, unwritable) for _ in range(2)]
    assert got == [(1, "first nudge"), (1, "first nudge")], f"the counter cannot advance, got {got}"


# ---------------------------------------------------------------- the manifest


def _manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "curriculum.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, words", [
    ('[[stage]]\nid = "s01_a"\ntitle = "A"\npoints = 1\n', "stage #1: missing or malformed field ('part')"),
    ('[[stage]]\nid = "s01_a"\npart = "one"\ntitle = "A"\npoints = 1\n', "stage #1: missing or malformed field"),
    ('[[stage]]\nid = "s02_a"\npart = 1\ntitle = "A"\npoints = 1\n', "id 's02_a' should start with 's01_'"),
    ('[[stage]]\nid = "s01_a"\npart = 1\ntitle = "A"\npoints = 1\ndepends = ["s02_b"]\n',
     "(s01_a): depends on ['s02_b'], which are not earlier stages"),
])
def test_a_malformed_manifest_names_the_entry_and_the_problem(tmp_path, body, words):
    with pytest.raises(curriculum.ManifestError) as caught:
        curriculum.load(_manifest(tmp_path, body))
    assert words in str(caught.value), f"expected {words!r} in {str(caught.value)!r}"


def test_grader_reports_a_bad_manifest_in_one_line_with_exit_two(tmp_path, capsys):
    _manifest(tmp_path, '[[stage]]\nid = "s01_a"\n')
    code = cli.main([], root=tmp_path)
    err = capsys.readouterr().err
    assert code == 2, f"expected exit 2, got {code}"
    assert err.startswith("python -m grader: curriculum.toml: stage #1") and err.count("\n") == 1, \
        f"expected one line naming the entry, got {err!r}"


# ---------------------------------------------------------------- loader


def test_a_plan_package_imports_only_its_stages(tmp_path):
    (tmp_path / "s01_a.py").write_text("VALUE = 41 + 1\n", encoding="utf-8")
    module = loader.load_stage({"s01_a": tmp_path}, "s01_a")
    assert module.VALUE == 42, f"expected the stage from {tmp_path}, got {module.VALUE}"
    with pytest.raises(ModuleNotFoundError):
        loader.load_stage({"s01_a": tmp_path}, "not_a_stage")


# ---------------------------------------------------------------- mutants


def _mutant(*edits: tuple[str, str]) -> mutants.Mutant:
    return mutants.Mutant("s01_add", "m", "a mistake", "symptom", edits)


@pytest.mark.parametrize("source, count", [("a + b", 0), ("x + y; x + y", 2)])
def test_a_mutant_edit_must_match_exactly_once(source, count):
    with pytest.raises(ValueError) as caught:
        mutants.mutate(source, _mutant(("x + y", "x - y")))
    assert f"s01_add:m: edit text occurs {count} times" in str(caught.value), f"got {caught.value}"


def test_mutant_edits_apply_in_order():
    assert mutants.mutate("x + y", _mutant(("x + y", "x - y"), ("- y", "- 2 * y"))) == "x - 2 * y"


def test_mutant_catalogue_filters_by_stage_and_skips_stages_without_one(monkeypatch, tmp_path):
    first, second = (stage.id for stage in curriculum.load()[:2])
    (tmp_path / f"{first}.toml").write_text(
        '[[mutant]]\nname = "n"\ndescription = "d"\nsymptom = "s"\n[[mutant.edit]]\nold = "a"\nnew = "b"\n',
        encoding="utf-8")
    monkeypatch.setattr(mutants, "CATALOGUE", tmp_path)
    assert [m.label for m in mutants.load()] == [f"{first}:n"], "the stage without a catalogue is skipped"
    assert mutants.load([second]) == [], f"only {second} asked for: expected no mutants"


@pytest.mark.parametrize("argv, words", [(["--json"], "--json: expected one argument"),
                                          (["s99_nothing"], "unknown stage 's99_nothing'")])
def test_mutants_command_rejects_bad_usage(capsys, argv, words):
    assert mutants.main(argv) == 2, f"expected exit 2 for {argv}"
    err = capsys.readouterr().err
    assert words in err, f"expected {words!r} on stderr, got {err!r}"


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv, words", [
    (["1", "2"], "expected at most one stage, got 1 2"),
    (["1", "--refresh-hashes"], "--refresh-hashes cannot be combined"),
    (["hint", "1", "--watch"], "--watch cannot be combined with hint"),
    (["--watch", "--format", "json"], "--watch is for learners"),
    (["hint", "1", "--format", "json"], "hint prints text"),
    (["--jobs", "0"], "--jobs must be at least 1, the time limits positive"),
    (["--impl", "reference", "--device", "cuda"], "--device cuda: not available"),
    (["--impl", "reference", "--device", "mps"], "--device mps: not available"),
])
def test_bad_command_lines_are_one_clear_sentence(argv, words):
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present: the --device cases would be valid")  # never on the CPU-only CI
    with pytest.raises(cli.UsageError) as caught:
        cli.parse(argv, curriculum.load())
    assert words in str(caught.value), f"expected {words!r}, got {str(caught.value)!r}"


def test_extra_tests_must_be_a_directory(tmp_path):
    stages = curriculum.load()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / f"{stages[0].id}.py").write_text("", encoding="utf-8")
    (tmp_path / "hidden").write_text("", encoding="utf-8")  # a file, not a directory
    with pytest.raises(cli.UsageError) as caught:
        cli.parse(["--extra-tests", str(tmp_path / "hidden")], stages, tmp_path)
    assert str(caught.value) == f"--extra-tests {tmp_path / 'hidden'}: no such directory", f"got {caught.value}"


def test_hidden_suite_points_come_from_the_table_else_a_points_constant_else_the_stage(tmp_path):
    table_file = tmp_path / "test_a.py"
    table_file.write_text("POINTS = 3\n", encoding="utf-8")
    broken = tmp_path / "test_b.py"
    broken.write_text("POINTS = (\n", encoding="utf-8")
    plain = tmp_path / "test_c.py"
    plain.write_text("POINTS = 'many'\nOTHER = 2\n", encoding="utf-8")
    got = [cli.points_of(table_file, {"test_a.py": 1.5}, 2.0), cli.points_of(table_file, {}, 2.0),
           cli.points_of(broken, {}, 2.0), cli.points_of(plain, {}, 2.0), cli.points_of(tmp_path / "gone.py", {}, 2.0)]
    assert got == [1.5, 3.0, 2.0, 2.0, 2.0], f"table, constant, syntax error, non-number, no file: got {got}"


def test_a_malformed_points_table_is_a_usage_error(tmp_path):
    (tmp_path / "points.toml").write_text('[points]\n"test_s01_add.py" = "lots"\n', encoding="utf-8")
    with pytest.raises(cli.UsageError, match=r"points.toml is not valid \(\[points\] name = number\)"):
        cli.extra_units(tmp_path, [STAGE], tmp_path / "work", tmp_path)


@pytest.mark.parametrize("choice, env, expected", [("always", {}, True), ("never", {}, False),
                                                   ("auto", {"NO_COLOR": "1"}, False),
                                                   ("auto", {"TERM": "dumb"}, False)])
def test_colour_choice(monkeypatch, choice, env, expected):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.use_colour(choice) is expected, f"--color {choice} with {env}: expected {expected}"


def test_auto_colour_follows_whether_stdout_is_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for tty in (True, False):
        monkeypatch.setattr(sys, "stdout", type("Out", (), {"isatty": staticmethod(lambda tty=tty: tty)})())
        got = cli.use_colour("auto")
        monkeypatch.undo()
        assert got is tty, f"isatty() {tty}: expected colour {tty}, got {got}"
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")


def test_results_json_round_trips(tmp_path):
    rep = _report(_stage(1, PASSED, tests=[Outcome("t", "passed", duration=0.123456)]))
    document = json.loads(render.to_json(rep))
    assert document["passed"] is True and document["stages"][0]["tests"][0]["duration"] == 0.1235, \
        f"got {document}"


# ---------------------------------------------------------------- batch grading (python -m grader batch)


def test_batch_skips_hidden_entries_and_marks_a_folder_without_stage_files(tmp_path):
    from grader import batch

    stages = curriculum.load()
    for name in ("ann", "bob", ".git", "_private"):
        (tmp_path / name).mkdir()
    (tmp_path / "ann" / "exercises").mkdir()
    (tmp_path / "ann" / "exercises" / f"{stages[0].id}.py").write_text("", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("", encoding="utf-8")
    found = batch.find_submissions(tmp_path, stages)
    got = [(s.student, s.impl.name, bool(s.problem)) for s in found]
    assert got == [("ann", "exercises", False), ("bob", "bob", True)], \
        f"expected ann (exercises/) gradable and bob flagged, hidden entries and files skipped; got {got}"


def test_batch_rejects_documents_that_are_not_grader_results():
    from grader import batch

    good = {"schema": batch.RESULT_SCHEMA, "stages": [], "score": 1, "max_score": 2}
    cases = [([], "not a grader result document"), (good | {"schema": "other"}, "not a grader result document"),
             (good | {"stages": [1]}, "no list of stages"), (good | {"score": "1"}, "no numeric score"),
             (good | {"max_score": None}, "no numeric max_score"), (good, "")]
    for doc, expected in cases:
        got = batch.valid_document(doc)
        assert (expected in got) if expected else got == "", f"{doc!r}: expected {expected!r}, got {got!r}"


def test_batch_row_flags_integrity_notes_and_keeps_every_note():
    from grader import batch

    doc = {"score": 0, "max_score": 2, "notes": ["integrity: tests/test_s01_a.py changed", "no fork"],
           "flags": {"tampered_tests": ["integrity: tests/test_s01_a.py changed"], "patching": ["s01_a: line 4"]},
           "stages": [{"id": "s01_a", "status": "timed out", "score": 0, "max_score": 2, "reason": "slow"},
                      {"id": "s02_b", "status": "error", "score": 0, "max_score": 2,
                       "reason": "no credit: looks like it", "flag": "forged_results"}]}
    row = batch.row_from_document("ann", doc)
    assert row.flags["tampered_tests"] == ["integrity: tests/test_s01_a.py changed"], f"got {row.flags}"
    assert row.flags["patching"] == ["s01_a: line 4"] and row.flags["forged_results"] == ["s02_b"], row.flags
    assert row.flags["imports_reference"] == [], "a flag is read from its field, never from the reason's text"
    assert row.flags["timed_out"] == ["s01_a"] and row.notes == doc["notes"], f"got {row.flags}, {row.notes}"


def test_batch_grader_command_passes_hidden_tests_and_no_fallback(tmp_path):
    from grader import batch

    options = batch.Options(root=tmp_path, jobs=1, stage_jobs=1, submission_timeout=10, timeout=5, stage_timeout=9,
                            memory_limit=0, extra_tests="hidden", no_fallback=True)
    command = batch.grader_command(tmp_path / "impl", options)
    assert command[-3:] == ["--extra-tests", "hidden", "--no-fallback"], f"got {command}"
    assert command[command.index("--budget") + 1] == "10", "the submission's time budget goes to its grader"


def test_batch_reports_an_ungradable_submission_without_running_the_grader(tmp_path):
    from grader import batch

    student = tmp_path / "bob"
    student.mkdir()
    options = batch.Options(root=tmp_path, jobs=1, stage_jobs=1, submission_timeout=10, timeout=5, stage_timeout=9,
                            memory_limit=0, extra_tests=None, no_fallback=False)
    row = batch.finish_one(batch.Submission("bob", student, student, "no stage files"), options, None)
    assert (row.status, row.flags["grader_problem"]) == (batch.NOT_GRADABLE, ["no stage files"]), \
        f"got {row.status}, {row.flags}"
    assert batch.tampered_copies(student, tmp_path / "no-manifest.json") == [], "no manifest: nothing to compare"


def test_batch_progress_bar_on_a_terminal_ends_with_a_newline():
    from grader import batch

    class Terminal:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    stream = Terminal()
    progress = batch.Progress(2, stream=stream, width=4)
    progress.tty = True  # whatever $TERM the suite runs under
    assert progress.eta() == "?", "no submission done yet: the ETA is unknown"
    for name in ("ann", "bob"):
        progress.update(batch.Row(name, batch.GRADED))
    assert "\r[##--] 1/2 graded, 0 to review" in stream.text and "\r[####] 2/2 graded" in stream.text, stream.text
    assert stream.text.endswith("\033[K\n"), f"the last update must end the line, got {stream.text[-12:]!r}"
    assert batch._clock(3725) == "1:02:05" and batch._clock(65) == "1:05", "h:mm:ss past an hour, else m:ss"


def test_batch_columns_put_hidden_suites_after_the_stages():
    from grader import batch

    stages = curriculum.load()[:1]
    row = batch.Row("ann", batch.GRADED, stages={stages[0].id: {}, f"{stages[0].id} + test_x.py": {}})
    assert batch.columns_of([row], stages) == [stages[0].id, f"{stages[0].id} + test_x.py"]


def test_a_suite_with_both_capstones_runs_as_three_parts_merged_into_one_result(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_s01_add.py").write_text(
        "def test_capstone_x(reverse):  # ids copy, reverse\n    pass\n", encoding="utf-8")
    unit = grading.units_for([STAGE], tmp_path)[0]
    assert unit.parts == ("not capstone", "capstone and not reverse", "capstone and reverse")
    passed = _result_of(PASSED, ["test_a"])
    failed = _result_of(FAILING, ["test_capstone[copy]"], reason="first failure: test_capstone[copy]")
    merged = grading.merge([passed, failed, _result_of(PASSED, ["test_capstone[reverse]"])])
    assert (merged.status, merged.score, merged.reason) == (FAILING, 0.0, "first failure: test_capstone[copy]")
    assert [t.name for t in merged.tests] == ["test_a", "test_capstone[copy]", "test_capstone[reverse]"]
    assert grading.merge([passed, passed]).score == STAGE.points


def _result_of(status: str, names: list[str], reason: str = "") -> StageResult:
    outcome = "passed" if status == PASSED else "failed"
    return StageResult(id=STAGE.id, number=1, title="", status=status, score=2.0 if status == PASSED else 0.0,
                       max_score=2.0, suite="tests/test_s01_add.py", reason=reason,
                       tests=[Outcome(name, outcome) for name in names])


def test_a_batch_stops_when_the_kata_changes_between_two_submissions(tmp_path):
    from grader import batch

    for folder in ("grader", "reference", "tests"):
        (tmp_path / folder).mkdir()
    (tmp_path / "grader" / "grading.py").write_text("GOOD = 1\n", encoding="utf-8")
    (tmp_path / "reference" / "s01_add.py").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    options = batch.Options(root=tmp_path, jobs=1, stage_jobs=1, submission_timeout=10, timeout=5, stage_timeout=9,
                            memory_limit=0, extra_tests=None, no_fallback=False)
    subs = [batch.Submission(name, tmp_path, tmp_path, "no stage files") for name in ("ann", "bob", "cid")]

    class Tamper:
        def update(self, row):  # what a submission that escaped would do to the next one's grader
            (tmp_path / "grader" / "grading.py").write_text("GOOD = 0\n", encoding="utf-8")

    with pytest.raises(batch.TreeChanged, match="the kata changed while bob was graded"):
        batch.grade_all(subs, options, tmp_path, Tamper())
    before = integrity.snapshot(tmp_path)
    (tmp_path / "reference" / "s01_add.py").write_text("def add(a, b):\n    return a - b\n", encoding="utf-8")
    assert integrity.changed_since(before, tmp_path), "the reference is part of what is checked"


def test_a_stage_stopped_by_its_cpu_limit_is_timed_out_whatever_the_wall_clock_said(tmp_path):
    import signal

    events = [_collected("test_a"), {"event": "start", "test": "tests/test_s01_add.py::test_a"}]
    result = _interpret(tmp_path, events, exitcode=-signal.SIGXCPU)
    _expect(result, TIMED_OUT, "300 s of CPU time", "in test_a")
    budget = grading.interpret(_unit(), events, exitcode=-9, killed_for_time="budget", substituted=[], duration=1.0,
                           settings=_settings(tmp_path, budget=30.0))
    _expect(budget, TIMED_OUT, "the run's time budget (30 s) ran out")


def test_the_grading_plan_names_why_each_stage_it_loads_comes_from_reference_and_travels_as_data(tmp_path):
    stages, reference = curriculum.load(), curriculum.REFERENCE
    plan = loader.for_grading(stages, "s07_encoder", tmp_path, reference, mine={"s05_multihead"},
                              graded={"s03_attention", "s05_multihead"})
    assert plan.substituted == {"s03_attention": "did not pass its suite", "s06_feedforward": "not graded yet"}, (
        f"only the stages s07 loads are named, each with why; got {plan.substituted}")
    assert plan.sources["s07_encoder"] == plan.sources["s05_multihead"] == tmp_path, "under test, and passed: yours"
    assert plan.sources["s01_vocab"] == reference and plan.sources["s03_attention"] == reference
    sent = json.loads(plan.to_json())
    assert {s: tmp_path if v == "impl" else reference for s, v in sent.items()} == plan.sources, sent
    whole = loader.for_grading(stages, "s07_encoder", tmp_path, reference, mine=None)
    assert set(whole.sources.values()) == {tmp_path} and whole.substituted == {}, "no fallback: every stage is yours"


def test_a_stage_suite_refuses_a_plan_that_is_not_one_in_one_line():
    from grader_kata import run_module

    done = run_module(curriculum.ROOT, "pytest", "tests/test_s01_vocab.py", "-p", "no:cacheprovider",
                      "--plan", '{"s01_vocab": "elsewhere"}', timeout=120)
    assert done.returncode == 4 and '--plan: expected a JSON object' in done.stderr, (done.returncode, done.stderr)
