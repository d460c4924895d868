"""Courses: a whole class graded in one batch, Gradescope's autograder, GitHub Classroom, the student release.

Everything runs on the grader's miniature three-stage kata (tests/project/grader_fixtures/; 20
points: s01_add 5, s02_scale 5, s03_combo 10), copied with this repository's grader/ and courses/,
and driven from outside as an instructor, Gradescope or a GitHub runner would drive it.

The sample class (built in a temporary directory):
    alice     complete: the reference                           20/20
    bob       partial, a clone with exercises/: s01 only        5/20   (s02, s03 not started)
    carol     s02_scale crashes (os.abort)                      15/20  flag: errors
    dave      complete, but his clone's tests/ were edited      20/20  flag: tampered_tests
    erin      s02_scale imports the answer key                  15/20  flag: imports_reference
    frank     s02_scale loops forever                           15/20  flag: timed_out
    mallory   s02_scale forges its score (forge_score.py)       15/20  (s02 failing 3 of 3)
    nobody    no stage files at all                             not gradable
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader import curriculum
from grader_kata import BROKEN, build_kata, environment, grade, run_module, submission  # noqa: I001

ROOT = curriculum.ROOT
COURSE_FIXTURES = Path(__file__).resolve().parent / "course_fixtures"
FORGE = COURSE_FIXTURES / "forge_score.py"
WORKFLOW = ROOT / "courses" / "classroom" / ".github" / "workflows" / "classroom.yml"
# Generous per-test limit on a busy machine; the endless loop is stopped by the per-stage limit.
LIMITS = ("--timeout", "60", "--stage-timeout", "12", "--memory-limit", "256")

# student -> (score, {stage: status}, flags that must be set, status of the row)
EXPECTED = {
    "alice": (20, {"s01_add": "passed", "s02_scale": "passed", "s03_combo": "passed"}, set(), "graded"),
    "bob": (5, {"s01_add": "passed", "s02_scale": "not started", "s03_combo": "not started"}, set(), "graded"),
    "carol": (15, {"s01_add": "passed", "s02_scale": "error", "s03_combo": "passed"}, {"errors"}, "graded"),
    "dave": (20, {"s01_add": "passed", "s02_scale": "passed", "s03_combo": "passed"}, {"tampered_tests"}, "graded"),
    "erin": (15, {"s01_add": "passed", "s02_scale": "error", "s03_combo": "passed"}, {"imports_reference"}, "graded"),
    "frank": (15, {"s01_add": "passed", "s02_scale": "timed out", "s03_combo": "passed"}, {"timed_out"}, "graded"),
    "mallory": (15, {"s01_add": "passed", "s02_scale": "error", "s03_combo": "passed"}, {"forged_results", "patching"}, "graded"),  # mallory: forged lines, and the tools for it flagged
    "nobody": (0, {}, {"grader_problem"}, "not gradable"),
}


@pytest.fixture(scope="module")
def kata(tmp_path_factory) -> Path:
    """The miniature kata with this repository's grader and courses/ folder, hashes refreshed."""
    kata = build_kata(tmp_path_factory.mktemp("courses") / "kata")
    shutil.copytree(ROOT / "courses", kata / "courses")
    assert grade(kata, "--refresh-hashes").code == 0
    return kata


def stub_of(kata: Path, stage_id: str) -> Path:
    return kata / "exercises" / f"{stage_id}.py"


@pytest.fixture(scope="module")
def sample_class(kata) -> Path:
    """The class of the module docstring, one directory a student."""
    root = kata.parent / "submissions"
    root.mkdir()
    submission(kata, root / "alice")
    bob = root / "bob" / "exercises"
    submission(kata, bob)
    for stage_id in ("s02_scale", "s03_combo"):
        shutil.copy(stub_of(kata, stage_id), bob / f"{stage_id}.py")
    submission(kata, root / "carol", {"s02_scale": "crash.py"})
    dave = root / "dave"
    submission(kata, dave / "exercises")
    shutil.copytree(kata / "tests", dave / "tests")
    suite = dave / "tests" / "test_s02_scale.py"
    suite.write_text(suite.read_text(encoding="utf-8").replace("torch.mul(x, 3.0)", "stage.scale(x, 3.0)"),
                     encoding="utf-8")
    submission(kata, root / "erin", {"s02_scale": "imports_reference.py"})
    submission(kata, root / "frank", {"s02_scale": "infinite_loop.py"})
    mallory = submission(kata, root / "mallory")
    shutil.copy(FORGE, mallory / "s02_scale.py")
    (root / "nobody").mkdir()
    (root / "nobody" / "README.md").write_text("I forgot to push.\n", encoding="utf-8")
    return root


def run_grader(kata: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return run_module(kata, "grader", *args, timeout=timeout, **env)


@pytest.fixture(scope="module")
def batch(kata, sample_class):
    out = kata.parent / "gradebook"
    done = run_grader(kata, "batch", str(sample_class), "--jobs", "2", "--out", str(out), *LIMITS)
    return done, out


# ---------------------------------------------------------------- batch grading


@pytest.mark.slow  # a batch of graders, one per student
def test_batch_grades_every_student_into_the_right_row(batch):
    done, out = batch
    assert done.returncode == 1, "one submission (nobody) could not be graded: exit 1\n" + done.stderr
    book = json.loads((out / "gradebook.json").read_text(encoding="utf-8"))
    assert book["schema"] == "transformer-kata/gradebook/1"
    assert book["columns"] == ["s01_add", "s02_scale", "s03_combo"]
    rows = {row["student"]: row for row in book["students"]}
    assert sorted(rows) == sorted(EXPECTED)
    for student, (score, statuses, flags, status) in EXPECTED.items():
        row = rows[student]
        got = {column: stage["status"] for column, stage in row["stages"].items()}
        raised = {name for name, values in row["flags"].items() if values}
        assert (row["status"], row["score"], got, raised) == (status, score, statuses, flags), \
            f"{student}: expected {(status, score, statuses, flags)}, got {(row['status'], row['score'], got, raised)}"
        assert row["max_score"] == 20


@pytest.mark.slow  # a batch of graders, one per student
def test_batch_flags_say_what_a_reviewer_should_look_at(batch):
    _, out = batch
    rows = {row["student"]: row for row in json.loads((out / "gradebook.json").read_text(encoding="utf-8"))["students"]}
    assert rows["dave"]["flags"]["tampered_tests"] == [
        "tests/test_s02_scale.py (the student's copy) differs from the shipped version"]
    assert rows["erin"]["flags"]["imports_reference"] == ["s02_scale"]
    assert "no credit" in rows["erin"]["stages"]["s02_scale"]["reason"]
    assert rows["frank"]["flags"]["timed_out"] == ["s02_scale"]
    assert "no stage files" in rows["nobody"]["flags"]["grader_problem"][0]


@pytest.mark.slow  # a batch of graders, one per student
def test_a_submission_that_forges_its_score_gets_only_what_it_earned(batch, kata):
    _, out = batch
    rows = {row["student"]: row for row in json.loads((out / "gradebook.json").read_text(encoding="utf-8"))["students"]}
    mallory = rows["mallory"]
    assert mallory["score"] == 15 and mallory["stages"]["s02_scale"]["score"] == 0
    assert not (kata / "results.json").exists(), "a stage cannot write into the checkout"
    reason = mallory["stages"]["s02_scale"]["reason"]
    assert "not written by the grader" in reason, f"the forging fixture did run and was caught: {reason}"


@pytest.mark.slow  # a batch of graders, one per student
def test_gradebook_csv_has_a_row_a_student_a_column_a_stage_and_the_flags(batch):
    _, out = batch
    lines = (out / "gradebook.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert header == ["student", "status", "score", "max_score", "percent", "s01_add", "s02_scale", "s03_combo",
                      "tampered_tests", "imports_reference", "forged_results", "patching", "timed_out", "errors", "grader_problem"]
    rows = {row["student"]: row for row in csv.DictReader(lines)}
    assert list(rows) == sorted(EXPECTED)
    assert (rows["alice"]["score"], rows["alice"]["percent"], rows["alice"]["s03_combo"]) == ("20", "100.0", "10")
    assert (rows["carol"]["score"], rows["carol"]["s02_scale"], rows["carol"]["errors"]) == ("15", "0", "s02_scale")
    assert rows["nobody"]["status"] == "not gradable" and rows["nobody"]["s01_add"] == ""


@pytest.mark.slow  # a batch of graders, one per student
def test_batch_progress_is_plain_lines_with_counts_and_an_eta_when_piped(batch):
    done, _ = batch
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == len(EXPECTED), done.stderr
    assert all(re.match(r"\[\d+/8\] \w+: .* elapsed \d+:\d\d, ETA \d+:\d\d$", line) for line in progress), progress
    assert progress[-1].startswith("[8/8]") and progress[-1].endswith("ETA 0:00")
    assert "\r" not in done.stderr and "\033[" not in done.stderr
    assert "To review" in done.stdout and "Not graded (1): nobody" in done.stdout


@pytest.mark.parametrize("args, words", [
    (["batch", "no/such/dir"], "no such directory"),
    (["batch", "{empty}"], "no submission directories inside"),
    (["batch", "{empty}", "--jobs", "0"], "--jobs and --stage-jobs must be at least 1"),
    (["gradescope-bundle", "--hidden-tests", "nowhere"], "no such directory"),
    (["release", "{kata}"], "outside this repository's own folders"),
])
def test_course_commands_report_bad_input_in_one_line_and_exit_two(kata, tmp_path, args, words):
    (tmp_path / "empty").mkdir()
    done = run_grader(kata, *[a.format(empty=tmp_path / "empty", kata=kata) for a in args])
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_batch_and_bundle_refuse_an_out_path_through_a_file_in_one_line(kata, tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("not a folder\n", encoding="utf-8")
    submission(kata, tmp_path / "class" / "alice")
    for args in (["batch", str(tmp_path / "class"), "--out", str(blocker)],
                 ["batch", str(tmp_path / "class"), "--out", str(blocker / "gradebook")],
                 ["gradescope-bundle", "--out", str(blocker / "x.zip")]):
        done = run_grader(kata, *args)
        assert done.returncode == 2 and "is a file" in done.stderr, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert blocker.read_text(encoding="utf-8") == "not a folder\n"


@pytest.mark.slow  # waits out a submission's time budget
def test_a_submission_past_its_budget_keeps_the_points_of_the_stages_already_graded(kata, tmp_path):
    """Also in this batch: a folder whose name is not UTF-8, and a symlink to another student's folder."""
    klass = tmp_path / "class"
    slow = submission(kata, klass / "slow")
    (slow / "s02_scale.py").write_text("def scale(x, factor):\n    while True:\n        pass\n", encoding="utf-8")
    submission(kata, Path(os.fsdecode(bytes(klass) + b"/caf\xe9")))
    (klass / "linked").symlink_to(klass / "slow", target_is_directory=True)
    out = tmp_path / "book"
    done = run_grader(kata, "batch", str(klass), "--out", str(out), "--jobs", "2", "--submission-timeout", "20",
                      "--stage-timeout", "600", timeout=1800)
    assert done.returncode == 1, done.stdout + done.stderr  # the symlink is not graded
    rows = {row["student"]: row for row in json.loads((out / "gradebook.json").read_text(encoding="utf-8"))["students"]}
    assert set(rows) == {"slow", "caf\\xe9", "linked"}, set(rows)
    row = rows["slow"]
    assert row["status"] == "graded" and row["score"] == 5, row
    assert row["stages"]["s01_add"]["status"] == "passed"
    assert row["stages"]["s02_scale"]["reason"].startswith("stopped"), row["stages"]["s02_scale"]
    assert "not graded: the run's time budget" in row["stages"]["s03_combo"]["reason"]
    assert any("time budget" in note for note in row["notes"]), row["notes"]
    assert rows["caf\\xe9"]["score"] == 20, "a folder name that is not UTF-8 is graded like any other"
    assert rows["linked"]["status"] == "not gradable" and "symbolic link" in rows["linked"]["flags"]["grader_problem"][0]
    with open(out / "gradebook.csv", encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 4, "a header and a row a student, written whole"


# ---------------------------------------------------------------- Gradescope


@pytest.fixture(scope="module")
def bundle(kata):
    hidden = kata.parent / "hidden"
    hidden.mkdir()
    (hidden / "test_s01_add_hidden.py").write_text(
        "import torch\nfrom checks import assert_close\nPOINTS = 2\n\n\n"
        "def test_add_negative(stage):\n    a, b = torch.randn(3), -torch.ones(3)\n"
        "    assert_close(stage.add(a, b), torch.add(a, b), 'add(a, -1)', atol=0.0, hint='a + b')\n",
        encoding="utf-8")
    out = kata.parent / "autograder.zip"
    done = run_grader(kata, "gradescope-bundle", "--hidden-tests", str(hidden), "--out", str(out), *LIMITS[:4])
    assert done.returncode == 0, done.stderr
    return out


def test_bundle_has_gradescopes_scripts_at_its_top_and_the_kata_inside(bundle):
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        settings = json.loads(archive.read("kata/autograder.json"))
    assert {"setup.sh", "run_autograder"} <= names
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111, "Gradescope runs them: executable"
    assert {"kata/grader/cli.py", "kata/grader/gradescope.py", "kata/grader/test_hashes.json",
            "kata/tests/test_s02_scale.py", "kata/tests/conftest.py", "kata/tests/checks.py",
            "kata/curriculum.toml", "kata/reference/s02_scale.py", "kata/hidden/test_s01_add_hidden.py"} <= names
    assert not any(name.startswith("kata/exercises/") or "__pycache__" in name for name in names)
    assert settings["hidden_visibility"] == "after_published" and settings["leaderboard"] is True


def check_gradescope_results(doc: dict) -> None:
    """Gradescope's results.json, checked by hand against its documented fields."""
    assert isinstance(doc["score"], (int, float)) and isinstance(doc["tests"], list)
    assert doc["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
    assert doc["stdout_visibility"] in ("hidden", "after_due_date", "after_published", "visible")
    for test in doc["tests"]:
        assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(test), test
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed")
        assert test["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
    assert doc["score"] == pytest.approx(sum(t["score"] for t in doc["tests"]))
    assert isinstance(doc["leaderboard"], list) and doc["leaderboard"]
    for entry in doc["leaderboard"]:
        assert set(entry) >= {"name", "value"} and isinstance(entry["name"], str)
        assert isinstance(entry["value"], (int, float))


def gradescope_layout(base: Path, bundle: Path, files: dict[str, Path]) -> Path:
    """/autograder as Gradescope lays it out: source/ (the unzipped bundle), submission/, results/."""
    autograder = base / "autograder"
    (autograder / "source").mkdir(parents=True)
    (autograder / "submission").mkdir()
    (autograder / "results").mkdir()
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(autograder / "source")
    shutil.copy(autograder / "source" / "run_autograder", autograder / "run_autograder")
    for name, source in files.items():
        target = autograder / "submission" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return autograder


# submission -> (files uploaded, relative to the kata unless absolute; expected score out of 22 = 20 + 2 hidden)
GRADESCOPE = {
    "complete": ({f"{s}.py": f"reference/{s}.py" for s in ("s01_add", "s02_scale", "s03_combo")}, 22),
    "partial_in_exercises": ({"exercises/s01_add.py": "reference/s01_add.py"}, 7),
    "broken": ({"s01_add.py": "reference/s01_add.py", "s02_scale.py": BROKEN / "crash.py",
                "s03_combo.py": "reference/s03_combo.py"}, 17),
    "forger": ({"s01_add.py": "reference/s01_add.py", "s02_scale.py": FORGE, "s03_combo.py": "reference/s03_combo.py"}, 17),
    "empty": ({"notes.txt": BROKEN / "crash.py"}, 0),
}


@pytest.fixture(scope="module")
def gradescope_runs(kata, bundle, tmp_path_factory):
    """Every Gradescope submission graded by the bundle's own run_autograder, side by side."""
    processes = {}
    for name, (files, _) in GRADESCOPE.items():
        resolved = {k: (v if isinstance(v, Path) else kata / v) for k, v in files.items()}
        autograder = gradescope_layout(tmp_path_factory.mktemp(f"gs-{name}"), bundle, resolved)
        env = environment(KATA_AUTOGRADER_ROOT=str(autograder), KATA_PYTHON=sys.executable)
        processes[name] = (autograder, subprocess.Popen(["bash", str(autograder / "run_autograder")], env=env,
                                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    runs = {}
    for name, (autograder, process) in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}: run_autograder failed\n{out}\n{err}"
        runs[name] = json.loads((autograder / "results" / "results.json").read_text(encoding="utf-8"))
    return runs


@pytest.mark.slow  # Gradescope's run_autograder on five submissions
@pytest.mark.parametrize("name", [n for n in GRADESCOPE if n != "empty"])
def test_run_autograder_writes_a_valid_results_json_with_the_earned_score(name, gradescope_runs):
    doc = gradescope_runs[name]
    check_gradescope_results(doc)
    assert doc["score"] == GRADESCOPE[name][1], doc
    assert [t["max_score"] for t in doc["tests"]] == [5, 2, 5, 10], "three stages and the hidden suite, in order"
    hidden = doc["tests"][1]
    assert "test_s01_add_hidden.py" in hidden["name"] and hidden["visibility"] == "after_published"
    assert all(t["visibility"] == "visible" for t in doc["tests"] if t is not hidden)
    assert doc["leaderboard"][0] == {"name": "Score", "value": doc["score"]}


@pytest.mark.slow  # Gradescope's run_autograder on five submissions
def test_run_autograder_grades_missing_stages_as_stubs_and_says_so(gradescope_runs):
    doc = gradescope_runs["partial_in_exercises"]
    assert "Not submitted (graded as the untouched stub): s02_scale, s03_combo" in doc["output"]
    assert [t["status"] for t in doc["tests"]] == ["passed", "passed", "failed", "failed"]


@pytest.mark.slow  # Gradescope's run_autograder on five submissions
def test_run_autograder_overwrites_whatever_the_submission_wrote_as_its_results(gradescope_runs):
    doc = gradescope_runs["forger"]
    assert doc["score"] == 17 and not any(t["name"] == "forged" for t in doc["tests"])
    scale = next(t for t in doc["tests"] if "s02_scale" in t["name"])
    assert scale["score"] == 0 and scale["status"] == "failed"


@pytest.mark.slow  # Gradescope's run_autograder on five submissions
def test_run_autograder_without_stage_files_still_writes_results_with_the_reason(gradescope_runs):
    doc = gradescope_runs["empty"]
    assert doc["score"] == 0 and doc["tests"] == []
    assert "no stage files found" in doc["output"]


# ---------------------------------------------------------------- GitHub Classroom


def workflow_steps(text: str) -> list[dict[str, str]]:
    """The steps of the workflow's one job, read with a small parser of the subset of YAML it uses:
    ``key: value`` lines and ``run: |`` block scalars (PyYAML is not a dependency)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "steps:")
    steps: list[dict[str, str]] = []
    item_indent = None
    index = start + 1
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped and item_indent is not None and indent < item_indent:
            break
        if stripped.startswith("- "):
            item_indent = indent
            steps.append({})
            line, stripped, indent = " " * (indent + 2) + stripped[2:], stripped[2:], indent + 2
        if stripped and not stripped.startswith("#") and ":" in stripped and steps and indent >= item_indent + 2:
            key, _, value = stripped.partition(":")
            value = value.strip()
            if value == "|":
                block = []
                index += 1
                while index < len(lines) and (not lines[index].strip() or
                                               len(lines[index]) - len(lines[index].lstrip()) > indent):
                    block.append(lines[index][indent + 2:])
                    index += 1
                steps[-1][key] = "\n".join(block).strip() + "\n"
                continue
            steps[-1][key] = value.strip('"')
        index += 1
    return steps


def test_workflow_is_plain_yaml_a_trusted_checkout_and_classrooms_reporter():
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "\t" not in text, "YAML forbids tabs for indentation"
    steps = workflow_steps(text)
    uses = [s.get("uses", "") for s in steps]
    assert uses[0].startswith("actions/checkout@") and steps[0]["path"] == "submission"
    kata = steps[1]
    assert kata["repository"] == "${{ env.KATA_REPOSITORY }}" and kata["ref"] == "${{ env.KATA_REF }}"
    assert kata["path"] == "kata", "the grader and tests come from a pinned checkout, not the student's files"
    assert uses[-1].startswith("classroom-resources/autograding-grading-reporter@")
    assert steps[-1]["runners"] == "kata" and steps[-1]["KATA_RESULTS"] == "${{ steps.kata.outputs.result }}"
    grading = next(s for s in steps if s.get("id") == "kata")
    assert grading["working-directory"] == "kata"
    assert '--impl "$GITHUB_WORKSPACE/submission/exercises"' in grading["run"] and "--ci" in grading["run"]


def test_workflow_parses_as_yaml_where_pyyaml_is_installed():
    yaml = pytest.importorskip("yaml")  # not a dependency: the hand-written parser above always runs
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    job = doc["jobs"]["run-autograding-tests"]
    assert doc["name"] == job["name"] == "Autograding Tests"
    assert doc["permissions"]["checks"] == "write"
    assert [s.get("id") for s in job["steps"]].count("kata") == 1
    assert workflow_steps(WORKFLOW.read_text(encoding="utf-8"))[4]["run"] == job["steps"][4]["run"]


def run_classroom_grading(kata: Path, workspace: Path, exercises: Path | None) -> tuple[dict, str, str]:
    """Run the workflow's grading step as a runner would: the pinned kata in kata/, the submission in
    submission/. Returns (the decoded result output, the step's stdout, the job summary)."""
    (workspace / "kata").exists() or shutil.copytree(kata, workspace / "kata",
                                                     ignore=shutil.ignore_patterns("__pycache__", "results.json"))
    if exercises is not None:
        shutil.copytree(exercises, workspace / "submission" / "exercises")
    step = next(s for s in workflow_steps(WORKFLOW.read_text(encoding="utf-8")) if s.get("id") == "kata")
    temp = workspace / "runner-temp"
    temp.mkdir()
    output, summary = workspace / "output.txt", workspace / "summary.md"
    python_bin = workspace / "bin"
    python_bin.mkdir()
    # a script, not a symlink: a venv's interpreter started through a link elsewhere loses the venv
    (python_bin / "python").write_text(f"#!/bin/sh\nexec '{sys.executable}' \"$@\"\n", encoding="utf-8")
    (python_bin / "python").chmod(0o755)
    env = environment(GITHUB_WORKSPACE=str(workspace), RUNNER_TEMP=str(temp), GITHUB_OUTPUT=str(output),
                      GITHUB_STEP_SUMMARY=str(summary), PATH=f"{python_bin}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=workspace / step["working-directory"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = [line.removeprefix("result=") for line in output.read_text(encoding="utf-8").splitlines()
               if line.startswith("result=")]
    assert len(results) == 1, "only the trusted step writes the result output"
    return json.loads(base64.b64decode(results[0])), done.stdout, summary.read_text(encoding="utf-8")


def test_classroom_step_reports_per_stage_points_for_the_reporter(kata, sample_class, tmp_path):
    exercises = tmp_path / "mallory"
    shutil.copytree(sample_class / "mallory", exercises)
    result, stdout, summary = run_classroom_grading(kata, tmp_path / "ws", exercises)
    assert result["version"] == 1 and result["max_score"] == 20 and result["status"] == "fail"
    assert [(t["name"][:12], t["status"], t["score"]) for t in result["tests"]] == [
        ("01 s01_add: ", "pass", 5), ("02 s02_scale", "fail", 0), ("03 s03_combo", "pass", 10)]
    assert sum(t["score"] for t in result["tests"]) == 15, "the forged score never reaches the reporter"
    assert "Points 15/20" in stdout
    assert "**15 / 20 points**" in summary


def test_classroom_step_without_exercises_reports_zero_and_why(kata, tmp_path):
    result, stdout, _ = run_classroom_grading(kata, tmp_path / "ws", None)
    assert result["status"] == "error" and result["max_score"] == 20
    assert result["tests"][0]["score"] == 0 and "exercises/" in result["tests"][0]["message"]
    assert "Points 0/20" in stdout


# ---------------------------------------------------------------- the student release


def test_release_without_reference_ships_stubs_tests_and_grader_but_no_answers(kata, tmp_path):
    out = tmp_path / "release"
    done = run_grader(kata, "release", str(out))
    assert done.returncode == 0, done.stderr
    assert not (out / "reference").exists() and not (out / "tests" / "mutants").exists()
    assert (out / "tests" / "test_s02_scale.py").read_bytes() == (kata / "tests" / "test_s02_scale.py").read_bytes()
    assert (out / "exercises" / "s02_scale.py").read_text(encoding="utf-8") == \
        stub_of(kata, "s02_scale").read_text(encoding="utf-8")
    for path in out.rglob("*.py"):
        assert "return x * factor" not in path.read_text(encoding="utf-8"), f"{path} quotes the answer"
    run = run_grader(out, "--format", "json")
    doc = json.loads(run.stdout)
    notes = [n for n in doc["notes"] if not n.startswith("isolation: ")]
    assert doc["fallback"] is False and notes == [], "no integrity finding in a fresh release"
    assert [s["status"] for s in doc["stages"]] == ["not started"] * 3
    text = run_grader(out).stdout
    assert "fallback: off (this copy has no reference/)" in text


def test_release_with_reference_keeps_the_fallback(kata, tmp_path):
    out = tmp_path / "release"
    assert run_grader(kata, "release", str(out), "--with-reference").returncode == 0
    assert (out / "reference" / "s02_scale.py").is_file()
    shutil.copy(BROKEN / "import_error.py", out / "exercises" / "s02_scale.py")
    shutil.copy(out / "reference" / "s01_add.py", out / "exercises" / "s01_add.py")
    doc = json.loads(run_grader(out, "--format", "json").stdout)
    combo = next(s for s in doc["stages"] if s["id"] == "s03_combo")
    assert doc["fallback"] is True and combo["substituted"] == ["s02_scale"]
