"""The grader, driven from outside as a learner or a course runs it, on a miniature three-stage kata.

Each broken submission replaces one stage (s02_scale) with a file from grader_fixtures/broken/;
the grader must report that stage alone, with a one-line reason, while s01_add and s03_combo keep
their points (s03_combo then runs on reference/'s s02_scale, and the report must say so).
"""

from __future__ import annotations

import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader_kata import BROKEN, build_kata, finish, grade, start, submission  # noqa: I001

# (fixture file, status of s02_scale, words its one-line reason must contain)
FAILURE_KINDS = {
    "syntax_error": ("syntax_error.py.txt", "error", "SyntaxError"),
    "import_error": ("import_error.py", "error", "No module named 'a_module_that_does_not_exist'"),
    "infinite_loop": ("infinite_loop.py", "timed out", "used more than 2 s of CPU time"),
    "crash": ("crash.py", "error", "crashed (SIGABRT)"),
    "memory_blowup": ("memory_blowup.py", "error", "ran out of memory"),
    "sys_exit": ("sys_exit.py", "error", "sys.exit()"),
    "os_exit": ("os_exit.py", "error", "os._exit"),
    "imports_reference": ("imports_reference.py", "error", "no credit"),
    "imports_reference_at_run_time": ("imports_reference_hidden.py", "error", "no credit"),
    "forged_output": ("forged_output.py", "error", "not written by the grader"),
    "always_equal": ("always_equal.py", "failing", ""),
}
# Generous per-test time (a busy 2-core machine is slow), except where a timeout is the point.
LIMITS = ("--timeout", "60", "--memory-limit", "256", "--jobs", "2")
SHORT = {"infinite_loop": ("--timeout", "2")}


@pytest.fixture(scope="module")
def kata(tmp_path_factory) -> Path:
    kata = build_kata(tmp_path_factory.mktemp("grader") / "kata")
    assert grade(kata, "--refresh-hashes").code == 0
    return kata


@pytest.fixture(scope="module")
def broken_runs(kata):
    """Every broken submission graded at once (each in its own grader process), as JSON."""
    processes = {}
    for kind, (fixture, _, _) in FAILURE_KINDS.items():
        tree = submission(kata, kata.parent / kind, {"s02_scale": fixture})
        processes[kind] = start(kata, "--impl", str(tree), "--format", "json", *LIMITS, *SHORT.get(kind, ()))
    return {kind: finish(process) for kind, process in processes.items()}


def check_result_document(doc: dict) -> None:
    """The JSON schema of docs/grader.md, checked by hand (no jsonschema dependency)."""
    assert {"schema", "score", "max_score", "passed", "impl", "fallback", "notes", "stages"} <= set(doc)
    assert isinstance(doc["score"], (int, float)) and isinstance(doc["max_score"], (int, float))
    assert 0 <= doc["score"] <= doc["max_score"]
    assert isinstance(doc["passed"], bool) and isinstance(doc["notes"], list)
    assert set(doc["flags"]) <= {"patching", "tampered_tests"}, doc["flags"]
    assert all(isinstance(v, list) for v in doc["flags"].values()), doc["flags"]
    for stage in doc["stages"]:
        assert isinstance(stage["id"], str) and isinstance(stage["number"], int)
        assert stage["status"] in ("passed", "failing", "not started", "error", "timed out", "missing"), stage
        assert isinstance(stage["substituted"], list) and all(isinstance(s, str) for s in stage["substituted"])
        assert 0 <= stage["score"] <= stage["max_score"]
        assert stage["score"] == (stage["max_score"] if stage["status"] == "passed" else 0)
        assert "\n" not in stage["reason"], f"a reason must be one line: {stage['reason']!r}"
        assert stage["flag"] in ("", "imports_reference", "forged_results", "not_reached"), stage["flag"]
        assert stage["tests_total"] == len(stage["tests"])
        assert stage["tests_passed"] == sum(t["outcome"] == "passed" for t in stage["tests"])
        for test in stage["tests"]:
            assert {"name", "outcome", "exc_type", "message", "where", "duration"} <= set(test)
            assert test["outcome"] in ("passed", "failed", "error", "skipped", "not run")
    assert doc["score"] == pytest.approx(sum(s["score"] for s in doc["stages"]))
    assert doc["max_score"] == pytest.approx(sum(s["max_score"] for s in doc["stages"]))


def test_reference_gets_full_marks_and_exit_zero(kata):
    run = grade(kata, "--impl", "reference", "--format", "json")
    assert run.code == 0, run.stderr
    doc = run.json()
    check_result_document(doc)
    assert (doc["score"], doc["max_score"]) == (20, 20)
    assert [s["status"] for s in doc["stages"]] == ["passed"] * 3
    assert all(s["substituted"] == [] for s in doc["stages"])


def test_untouched_stubs_score_zero_every_stage_not_started_and_point_at_stage_one(kata):
    run = grade(kata)
    assert run.code == 1
    lines = run.stdout.splitlines()
    assert sum("not started" in line for line in lines if line.strip().startswith(("1 ", "2 ", "3 "))) == 3, run.stdout
    assert "Total: 0/20 points" in run.stdout
    assert "Open exercises/s01_add.py" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr and "NotImplementedError" not in run.stdout
    assert "\033[" not in run.stdout, "no colour when piped"


@pytest.mark.slow  # grades every broken submission
@pytest.mark.parametrize("kind", list(FAILURE_KINDS))
def test_each_failure_kind_costs_that_stage_only_with_a_one_line_reason(kind, broken_runs):
    run = broken_runs[kind]
    _, status, words = FAILURE_KINDS[kind]
    assert run.code == 1, run.stderr
    doc = run.json()
    check_result_document(doc)
    scale = run.stage("s02_scale")
    assert scale["status"] == status, scale
    assert words in scale["reason"], scale["reason"]
    assert scale["score"] == 0 and scale["tests_passed"] == 0
    assert run.stage("s01_add")["status"] == "passed"
    combo = run.stage("s03_combo")
    assert combo["status"] == "passed" and combo["substituted"] == ["s02_scale"], combo
    assert doc["score"] == 15


@pytest.mark.slow  # grades every broken submission
def test_forged_output_is_never_read_as_a_result_and_a_forged_line_costs_the_stage(broken_runs):
    scale = broken_runs["forged_output"].stage("s02_scale")
    assert scale["score"] == 0 and not any(t["outcome"] == "passed" for t in scale["tests"]), scale
    assert scale["reason"].startswith("no credit: a line on the result channel was not written by the grader")


def test_no_fallback_grades_the_learners_code_all_the_way_down(kata):
    tree = submission(kata, kata.parent / "no-fallback", {"s02_scale": "import_error.py"})
    doc = grade(kata, "--impl", str(tree), "--format", "json", "--no-fallback").json()
    combo = next(s for s in doc["stages"] if s["id"] == "s03_combo")
    assert combo["status"] == "error" and combo["substituted"] == []
    assert "a_module_that_does_not_exist" in combo["tests"][0]["message"]


@pytest.mark.slow  # a fresh interpreter per stage, by design
def test_without_fork_the_same_grades_and_a_note_saying_so(kata):
    tree = submission(kata, kata.parent / "no-fork", {"s02_scale": "crash.py"})
    run = grade(kata, "--impl", str(tree), "--format", "json", *LIMITS, KATA_NO_FORK="1")
    doc = run.json()
    check_result_document(doc)
    assert any("no fork" in note for note in doc["notes"])
    statuses = {s["id"]: (s["status"], s["reason"]) for s in doc["stages"]}
    assert statuses["s02_scale"][0] == "error" and "crashed (SIGABRT)" in statuses["s02_scale"][1]
    assert statuses["s01_add"][0] == statuses["s03_combo"][0] == "passed"
    sealed = {s["isolation"] for s in doc["stages"] if s["id"] == "s01_add"}
    assert all(" (but" not in level for level in sealed), f"a fresh interpreter is sealed as fully as a fork: {sealed}"


def test_junit_output_is_valid_xml_with_a_case_per_test(kata, tmp_path):
    tree = submission(kata, tmp_path / "sub", {"s02_scale": "always_equal.py"})
    out = tmp_path / "report.xml"
    assert grade(kata, "--impl", str(tree), "--format", "junit", "--output", str(out)).code == 1
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["s01_add", "s02_scale", "s03_combo"]
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) > 0
        failed = sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("failures")) == failed
        assert all(c.get("name") and c.get("classname") == suite.get("name") for c in cases)
    scale = suites[1]
    assert int(scale.get("failures")) == 3
    assert "expected a torch.Tensor, got Anything" in scale.find("testcase/failure").text
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)


def test_gradescope_results_json_has_the_documented_fields(kata, tmp_path):
    extra = tmp_path / "hidden"
    extra.mkdir()
    (extra / "test_s02_scale_hidden.py").write_text(
        "import torch\nfrom checks import assert_close\nPOINTS = 3\n\n\n"
        "def test_scale_negative(stage):\n    x = torch.randn(3)\n"
        "    assert_close(stage.scale(x, -2.0), torch.mul(x, -2.0), 'scale(x, -2)', atol=0.0, hint='x * factor')\n",
        encoding="utf-8")
    run = grade(kata, "--impl", "reference", "--format", "gradescope", "--extra-tests", str(extra))
    assert run.code == 0, run.stderr
    doc = run.json()
    assert doc["score"] == doc["max_score"] == 23
    assert isinstance(doc["tests"], list) and len(doc["tests"]) == 4
    for test in doc["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed")
        assert test["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
    hidden = [t for t in doc["tests"] if "hidden" in t["name"]]
    assert len(hidden) == 1 and hidden[0]["max_score"] == 3 and hidden[0]["visibility"] == "after_published"


def test_github_format_writes_the_job_summary_and_error_annotations(kata, tmp_path):
    tree = submission(kata, tmp_path / "sub", {"s02_scale": "forged_output.py"})
    summary = tmp_path / "summary.md"
    run = grade(kata, "--impl", str(tree), "--format", "github", GITHUB_STEP_SUMMARY=str(summary))
    assert run.code == 1
    text = summary.read_text(encoding="utf-8")
    assert "**15 / 20 points**" in text and "| 2 | `s02_scale` |" in text
    errors = [line for line in run.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == 1 and "s02_scale" in errors[0] and "file=" in errors[0]


def test_pass_threshold_gives_partial_credit(kata, tmp_path):
    tree = submission(kata, tmp_path / "sub", {"s02_scale": "always_equal.py"})
    assert grade(kata, "--impl", str(tree), "--format", "json", "--pass-threshold", "0.7").code == 0
    assert grade(kata, "--impl", str(tree), "--format", "json", "--pass-threshold", "0.8").code == 1


def test_one_stage_in_detail_by_number_or_topic(kata, tmp_path):
    tree = submission(kata, tmp_path / "sub")
    (tree / "s02_scale.py").write_text("def scale(x, factor):\n    return x + factor\n", encoding="utf-8")
    run = grade(kata, "scale", "--impl", str(tree))
    assert run.code == 1
    assert "s02_scale: failing 3 of 3" in run.stdout
    assert "Likely cause: Is it x * factor?" in run.stdout
    assert grade(kata, "1", "--impl", str(tree)).code == 0


def test_hints_advance_each_time_and_are_stored_outside_exercises(kata, tmp_path):
    before = {p.name: p.read_bytes() for p in (kata / "exercises").iterdir()}
    state = tmp_path / "state"
    shown = [grade(kata, "hint", "1", KATA_STATE_DIR=str(state)).stdout for _ in range(4)]
    assert "Hint 1 of 3" in shown[0] and "First hint for add." in shown[0]
    assert "Hint 2 of 3" in shown[1] and "Hint 3 of 3" in shown[2] and "Hint 3 of 3" in shown[3]
    assert list(state.iterdir()), "the counter lives in KATA_STATE_DIR"
    assert before == {p.name: p.read_bytes() for p in (kata / "exercises").iterdir()}


def test_tampered_test_file_is_reported_and_fails_under_ci(kata, tmp_path):
    copy = tmp_path / "kata"
    shutil.copytree(kata, copy, ignore=shutil.ignore_patterns("__pycache__"))
    suite = copy / "tests" / "test_s02_scale.py"
    suite.write_text(suite.read_text(encoding="utf-8").replace("torch.mul(x, 3.0)", "stage.scale(x, 3.0)"), encoding="utf-8")
    relaxed = grade(copy, "--impl", "reference", "--format", "json")
    assert relaxed.code == 0
    assert any("tests/test_s02_scale.py differs" in note for note in relaxed.json()["notes"])
    strict = grade(copy, "--impl", "reference", "--format", "json", "--ci")
    assert strict.code == 1 and strict.json()["passed"] is False


def test_without_reference_the_fallback_is_off_and_the_scorecard_says_so(kata, tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(kata, copy, ignore=shutil.ignore_patterns("__pycache__", "reference"))
    shutil.copy(BROKEN / "import_error.py", copy / "exercises" / "s02_scale.py")
    run = grade(copy)
    assert "fallback: off (this copy has no reference/)" in run.stdout
    assert "used reference/" not in run.stdout


@pytest.mark.parametrize("args, words", [
    (["99"], "unknown stage '99'"),
    (["hint"], "usage: python -m grader hint STAGE"),
    (["--impl", "no/such/dir"], "no such directory"),
    (["--impl", "tests"], "not shaped like exercises/"),
    (["--watch", "--format", "json"], "--watch is for learners"),
    (["--pass-threshold", "1.5"], "between 0 and 1"),
    (["--format", "yaml"], "invalid choice"),
    (["--extra-tests", "nowhere"], "no such directory"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_two(kata, args, words):
    run = grade(kata, *args)
    assert run.code == 2, (run.stdout, run.stderr)
    assert words in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_watch_regrades_the_edited_stage_on_save(kata, tmp_path):
    tree = submission(kata, tmp_path / "sub", {"s02_scale": "always_equal.py"})
    process = start(kata, "--watch", "--impl", str(tree), "--max-regrades", "1")
    deadline = time.monotonic() + 60
    line = ""
    while "Watching" not in line and time.monotonic() < deadline:
        line = process.stdout.readline()
    time.sleep(0.5)
    target = tree / "s02_scale.py"
    shutil.copy(kata / "reference" / "s02_scale.py", target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    run = finish(process, timeout=60)
    assert "s02_scale.py changed: re-graded in" in run.stdout, run.stdout + run.stderr
    assert "s02_scale: passed" in run.stdout and "Total now: 20/20" in run.stdout
