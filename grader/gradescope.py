"""Gradescope: build the autograder bundle, and grade one submission inside Gradescope's container.

    python -m grader gradescope-bundle [--hidden-tests DIR] [--out FILE.zip]

builds a zip with, at its top, Gradescope's two scripts (from courses/gradescope/): ``setup.sh``
(installs Python and requirements.txt once) and ``run_autograder`` (runs for every submission), and
``kata/``: this copy's grader, test suites, curriculum, reference (the fallback), data, the optional
hidden tests (``kata/hidden/``) and ``kata/autograder.json`` (the settings chosen at build time).

Gradescope unpacks the bundle in /autograder/source. For each submission ``run_autograder`` calls
``python -m grader.gradescope /autograder``, which

1. copies the stage files out of /autograder/submission (an exercises/ folder, the files at the top,
   or anywhere below) into a private directory; a stage not submitted is graded as the untouched stub;
2. runs ``python -m grader --impl THAT --format gradescope --ci`` from the bundled kata through the
   one stage runner (grader/sandbox.py), with a time budget (stages graded keep their points), its
   result read from a socket only this process holds;
3. writes /autograder/results/results.json: that document, with the bundle's visibility settings and
   a leaderboard (score and stages passed) added. It always writes one, even when grading fails.
   A hidden suite shows the student its name and outcome only; its messages go to the instructor
   (``extra_data`` and the autograder's log, whose visibility is --stdout-visibility).

The results file is written last, after every stage ran, so anything a submission writes there is
overwritten. KATA_AUTOGRADER_ROOT stands in for /autograder (tests).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from . import curriculum, integrity, sandbox, stubgen

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
TEMPLATES = ("setup.sh", "run_autograder")
SETTINGS = "autograder.json"

HELP = {
    "hidden": "a directory of hidden instructor tests (test_<stage id>*.py, optional points.toml) to bundle",
    "out": "the zip to write (default: autograder.zip)",
    "visibility": "when students see their results (default visible)",
    "hidden_visibility": "when students see the hidden suites' results (default after_published)",
    "stdout": "when students see the autograder's log (default hidden)",
    "timeout": "CPU seconds one test may use (default 60)",
    "stage_timeout": "CPU seconds one stage's suite may use (default 300)",
    "submission_timeout": "seconds the whole grading may take, below Gradescope's own limit; graded stages keep "
                          "their points (default 1500)",
    "jobs": "stages graded at the same time inside the container (default 2)",
    "memory": "MiB one stage may use on top of what it starts with; 0 = no limit (default 4096)",
    "no_leaderboard": "leave the leaderboard out of results.json",
}


# ---------------------------------------------------------------- building the bundle


def bundle_files(root: Path, hidden: Path | None) -> dict[str, Path]:
    """Archive name -> file on disk, for everything the bundle carries except the settings."""
    root = Path(root)
    files: dict[str, Path] = {}

    def add_tree(folder: Path, prefix: str, pattern: str = "*") -> None:
        for path in sorted(folder.rglob(pattern)):
            if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                files[f"{prefix}/{path.relative_to(folder).as_posix()}"] = path

    for name in TEMPLATES:
        files[name] = root / "courses" / "gradescope" / name
    add_tree(root / "grader", "kata/grader", "*.py")
    files["kata/grader/test_hashes.json"] = root / "grader" / "test_hashes.json"
    for path in integrity.hashed_files(root):
        files[f"kata/{path.relative_to(root).as_posix()}"] = path
    add_tree(root / "reference", "kata/reference", "*.py")
    for name in ("requirements.txt", "pyproject.toml", "LICENSE"):
        if (root / name).is_file():
            files[f"kata/{name}"] = root / name
    if (root / "data").is_dir():
        add_tree(root / "data", "kata/data")
    if hidden is not None:
        add_tree(hidden, "kata/hidden")
    return files


def write_zip(target: Path, files: dict[str, Path], settings: dict) -> None:
    """A reproducible zip: fixed timestamps, sorted names, the two scripts executable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    entries = {name: path.read_bytes() for name, path in files.items()}
    entries[f"kata/{SETTINGS}"] = (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if name in TEMPLATES else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name])


def build_parser():
    from .cli import _Parser

    p = _Parser(prog="python -m grader gradescope-bundle", description="Build the Gradescope autograder zip.")
    p.add_argument("--hidden-tests", help=HELP["hidden"])
    p.add_argument("--out", default="autograder.zip", help=HELP["out"])
    p.add_argument("--visibility", default="visible", choices=VISIBILITIES, help=HELP["visibility"])
    p.add_argument("--hidden-visibility", default="after_published", choices=VISIBILITIES, help=HELP["hidden_visibility"])
    p.add_argument("--stdout-visibility", default="hidden", choices=VISIBILITIES, help=HELP["stdout"])
    p.add_argument("--timeout", type=float, default=60.0, help=HELP["timeout"])
    p.add_argument("--stage-timeout", type=float, default=300.0, help=HELP["stage_timeout"])
    p.add_argument("--submission-timeout", type=float, default=1500.0, help=HELP["submission_timeout"])
    p.add_argument("--jobs", type=int, default=2, help=HELP["jobs"])
    p.add_argument("--memory-limit", type=int, default=4096, help=HELP["memory"])
    p.add_argument("--no-leaderboard", action="store_true", help=HELP["no_leaderboard"])
    return p


def main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    """``python -m grader gradescope-bundle``: 0 written, 2 bad input (one line on stderr)."""
    from .cli import UsageError

    args = build_parser().parse_args(argv)
    if args.jobs < 1 or min(args.timeout, args.stage_timeout, args.submission_timeout) <= 0 or args.memory_limit < 0:
        raise UsageError("--jobs must be at least 1, the time limits positive and --memory-limit 0 or more")
    missing = [name for name in TEMPLATES if not (root / "courses" / "gradescope" / name).is_file()]
    if missing:
        raise UsageError(f"courses/gradescope/ lacks {', '.join(missing)}: this copy cannot build a bundle")
    if not any((root / "reference").glob("s[0-9][0-9]_*.py")):
        raise UsageError("this copy has no reference/: the bundle needs it for the fallback")
    problems = integrity.check_hashes(root, root / "grader" / "test_hashes.json")
    if problems:
        raise UsageError(f"the test files do not match grader/test_hashes.json ({problems[0]}): "
                         "run python -m grader --refresh-hashes if the change is intended")
    stages = curriculum.load(root / "curriculum.toml")
    hidden = None
    if args.hidden_tests:
        hidden = Path(args.hidden_tests).resolve()
        if not hidden.is_dir():
            raise UsageError(f"--hidden-tests {args.hidden_tests}: no such directory")
        suites = sorted(hidden.glob("test_*.py"))
        stray = [p.name for p in suites if not any(p.name.startswith(f"test_{s.id}") for s in stages)]
        if not suites or stray:
            raise UsageError(f"--hidden-tests {args.hidden_tests}: files must be named test_<stage id>*.py"
                             + (f" ({stray[0]} names no stage)" if stray else " (none found)"))
    settings = {
        "visibility": args.visibility,
        "hidden_visibility": args.hidden_visibility,
        "stdout_visibility": args.stdout_visibility,
        "timeout": args.timeout,
        "stage_timeout": args.stage_timeout,
        "submission_timeout": args.submission_timeout,
        "jobs": args.jobs,
        "memory_limit": args.memory_limit,
        "leaderboard": not args.no_leaderboard,
    }
    files = bundle_files(root, hidden)
    out = Path(args.out)
    blocking = next((p for p in [out.absolute(), *out.absolute().parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None and blocking != out.absolute():
        raise UsageError(f"--out {args.out}: {blocking} is a file, not a folder")
    if out.is_dir():
        raise UsageError(f"--out {args.out}: a folder, not a .zip file")
    write_zip(out, files, settings)
    hidden_count = sum(name.startswith("kata/hidden/test_") for name in files)
    print(f"wrote {out} ({len(files) + 1} files, {len(stages)} stages, {hidden_count} hidden suites): "
          "upload it as the assignment's autograder (docs/instructors.md)")
    return 0


# ---------------------------------------------------------------- inside Gradescope's container


def find_stage_file(submission: Path, stage_id: str) -> Path | None:
    """Where a stage's file is in a submission: exercises/, the top, or the shallowest match below.
    Only a regular file whose real path is inside the submission counts (no symlink leads out)."""
    inside = submission.resolve()

    def real(path: Path) -> bool:
        return path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(inside)

    for candidate in (submission / "exercises" / f"{stage_id}.py", submission / f"{stage_id}.py"):
        if real(candidate):
            return candidate
    found = [p for p in submission.rglob(f"{stage_id}.py") if real(p) and "reference" not in p.relative_to(submission).parts]
    return min(found, key=lambda p: (len(p.parts), str(p))) if found else None


def collect(submission: Path, kata: Path, target: Path, stages) -> tuple[list[str], list[str]]:
    """Copy the submitted stage files to ``target``; stub the rest. Returns (found, not submitted)."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text('"""A submission, collected by the autograder."""\n', encoding="utf-8")
    found, absent = [], []
    for stage in stages:
        source = find_stage_file(submission, stage.id) if submission.is_dir() else None
        if source is not None:
            shutil.copyfile(source, stage.source(target))
            found.append(stage.id)
            continue
        reference = stage.source(kata / "reference")
        if reference.is_file():
            stage.source(target).write_text(stubgen.make_stub(reference.read_text(encoding="utf-8"), stage.id),
                                            encoding="utf-8")
        absent.append(stage.id)
    return found, absent


def failure_results(message: str, settings: dict) -> dict:
    return {"score": 0.0, "output": f"The autograder could not grade this submission: {message}",
            "visibility": settings.get("visibility", "visible"),
            "stdout_visibility": settings.get("stdout_visibility", "hidden"), "tests": []}


def finish_results(doc: dict, settings: dict, absent: list[str]) -> dict:
    """The grader's Gradescope document with the bundle's visibility settings and a leaderboard;
    a hidden suite's messages moved out of the student's sight (into extra_data and the log)."""
    for test in doc.get("tests", []):
        if " + " in str(test.get("name", "")):  # "07 s07_encoder + test_s07_hidden.py: ..."
            test["extra_data"] = {"output": test.get("output", "")}
            print(f"hidden suite {test['name']}:\n{test.get('output', '')}")
            test["output"] = test.get("status", "")
    doc["visibility"] = settings.get("visibility", "visible")
    doc["stdout_visibility"] = settings.get("stdout_visibility", "hidden")
    if absent:
        doc["output"] = (f"Not submitted (graded as the untouched stub): {', '.join(absent)}\n"
                         + str(doc.get("output", ""))).strip()
    if settings.get("leaderboard", True):
        passed = sum(1 for t in doc.get("tests", []) if t.get("status") == "passed")
        doc["leaderboard"] = [{"name": "Score", "value": doc.get("score", 0)},
                              {"name": "Stages passed", "value": passed}]
    return doc


def grade_submission(autograder: Path) -> dict:
    """Grade /autograder/submission with the bundled kata; the results document (never raises)."""
    kata = autograder / "source" / "kata"
    try:
        settings = json.loads((kata / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return failure_results(f"the bundle's {SETTINGS} cannot be read ({error})", {})
    try:
        stages = curriculum.load(kata / "curriculum.toml")
        with tempfile.TemporaryDirectory(prefix="kata-gradescope-") as private:
            os.chmod(private, 0o700)
            impl = Path(private) / "submission"
            found, absent = collect(autograder / "submission", kata, impl, stages)
            if not found:
                return failure_results(f"no stage files found (expected {stages[0].id}.py ... at the top of the "
                                       "upload or in an exercises/ folder)", settings)
            command = [sys.executable, "-m", "grader", "--impl", str(impl), "--format", "gradescope", "--ci",
                       "--color", "never", "--jobs", str(settings.get("jobs", 2)),
                       "--budget", f"{settings.get('submission_timeout', 1500):g}",
                       "--timeout", f"{settings.get('timeout', 60):g}",
                       "--stage-timeout", f"{settings.get('stage_timeout', 300):g}",
                       "--memory-limit", str(settings.get("memory_limit", 4096)),
                       "--hidden-visibility", settings.get("hidden_visibility", "after_published")]
            if (kata / "hidden").is_dir():
                os.chmod(kata / "hidden", 0o700)
                command += ["--extra-tests", str(kata / "hidden")]
            limits = sandbox.Limits(wall=float(settings.get("submission_timeout", 1500)) + 60, file_mb=0, processes=0)
            stage = sandbox.start(command, limits, output=Path(private) / "grader.log")
            stage.wait()
            if stage.stopped:
                return failure_results(f"grading took longer than {limits.wall:g} s", settings)
            if stage.exitcode not in (0, 1):
                return failure_results(f"the grader exited with code {stage.exitcode}", settings)
            doc = json.loads(stage.unsigned())
            if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
                return failure_results("the grader's result is not a results document", settings)
            return finish_results(doc, settings, absent)
    except Exception as error:  # noqa: BLE001 - Gradescope must always get a results.json
        return failure_results(f"{type(error).__name__}: {error}", settings)


def run_autograder(autograder: Path) -> int:
    results = autograder / "results"
    doc = grade_submission(autograder)
    results.mkdir(parents=True, exist_ok=True)
    (results / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"score {doc.get('score', 0):g}; results in {results / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_autograder(Path(sys.argv[1] if len(sys.argv) > 1 else
                                 os.environ.get("KATA_AUTOGRADER_ROOT", "/autograder")).resolve()))
