"""Gradescope: ``python -m grader gradescope-bundle`` builds the autograder zip (Gradescope's scripts
from courses/gradescope/ and the kata, with the settings chosen in ``kata/autograder.json``); inside
the container, ``python -m grader.gradescope /autograder`` collects the submitted stage files, grades
them as a batch grades one submission, and always writes results/results.json (docs/instructors.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from . import batch, curriculum, integrity, options, stubgen

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
TEMPLATES = ("setup.sh", "run_autograder")
SETTINGS = "autograder.json"


def bundle_files(root: Path, hidden: Path | None) -> dict[str, Path]:
    """Archive name -> file on disk, for everything the bundle carries except the settings."""
    files = {name: root / "courses" / "gradescope" / name for name in TEMPLATES}
    tops = ("grader/test_hashes.json", "requirements.txt", "pyproject.toml", "LICENSE")
    for path in integrity.hashed_files(root) + [root / name for name in tops if (root / name).is_file()]:
        files[f"kata/{path.relative_to(root).as_posix()}"] = path
    for folder, prefix in ((root / "data", "kata/data"), (hidden, "kata/hidden")):
        for path in sorted(folder.rglob("*")) if folder else ():
            if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                files[f"{prefix}/{path.relative_to(folder).as_posix()}"] = path
    return files


def write_zip(target: Path, files: dict[str, Path], settings: dict) -> None:
    """A reproducible zip: fixed timestamps, sorted names, the two scripts executable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    entries = {name: path.read_bytes() for name, path in files.items()}
    entries[f"kata/{SETTINGS}"] = (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if name in TEMPLATES else 0o100644) << 16
            archive.writestr(info, entries[name], compress_type=zipfile.ZIP_DEFLATED)


def build_parser():
    return options.parser("python -m grader gradescope-bundle", "Build the Gradescope autograder zip.", {
        "--hidden-tests": dict(help="hidden instructor tests to bundle (test_<stage id>*.py, points.toml)"),
        "--out": dict(default="autograder.zip", help="the zip to write (default: autograder.zip)"),
        **{option: dict(default=default, choices=VISIBILITIES, help=f"when students see {what} (default {default})")
           for option, default, what in (("--visibility", "visible", "their results"),
                                         ("--hidden-visibility", "after_published", "the hidden suites' results"),
                                         ("--stdout-visibility", "hidden", "the autograder's log"))},
        **batch.limits(1500.0),  # keep it below Gradescope's own limit
        "--jobs": dict(type=int, default=2, help="stages graded at once inside the container (default 2)"),
        "--no-leaderboard": dict(action="store_true", help="leave the leaderboard out of results.json")})


def main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    """``python -m grader gradescope-bundle``: 0 written, 2 bad input (one line on stderr)."""
    args = build_parser().parse_args(argv)
    options.check_limits(args, "--jobs", args.jobs)
    missing = [name for name in TEMPLATES if not (root / "courses" / "gradescope" / name).is_file()]
    if missing:
        raise options.UsageError(f"courses/gradescope/ lacks {', '.join(missing)}: this copy cannot build a bundle")
    if not options.reference_of(root):
        raise options.UsageError("this copy has no reference/: the bundle needs it for the fallback")
    problems = integrity.check_hashes(root, root / integrity.MANIFEST)
    if problems:
        raise options.UsageError(f"the test files do not match grader/test_hashes.json ({problems[0]}): "
                                    "run python -m grader --refresh-hashes if the change is intended")
    stages = curriculum.load(root / "curriculum.toml")
    hidden = Path(args.hidden_tests).resolve() if args.hidden_tests else None
    if hidden and not hidden.is_dir():
        raise options.UsageError(f"--hidden-tests {args.hidden_tests}: no such directory")
    suites = sorted(hidden.glob("test_*.py")) if hidden else []
    stray = [p.name for p in suites if not any(p.name.startswith(f"test_{s.id}") for s in stages)]
    if hidden and (not suites or stray):
        raise options.UsageError(f"--hidden-tests {args.hidden_tests}: files must be named test_<stage id>*.py"
                                    + (f" ({stray[0]} names no stage)" if stray else " (none found)"))
    out = Path(args.out)
    batch.check_folders(out, f"--out {args.out}")
    if out.is_dir():
        raise options.UsageError(f"--out {args.out}: a folder, not a .zip file")
    settings = {k: v for k, v in vars(args).items() if k not in ("hidden_tests", "out", "no_leaderboard")}
    files = bundle_files(root, hidden)
    write_zip(out, files, settings | {"leaderboard": not args.no_leaderboard})
    print(f"wrote {out} ({len(files) + 1} files, {len(stages)} stages, {len(suites)} hidden suites): "
          "upload it as the assignment's autograder (docs/instructors.md)")
    return 0


def find_stage_file(submission: Path, stage_id: str) -> Path | None:
    """Where a stage's file is in a submission: exercises/, else the shallowest match (not in a reference/).
    Only a regular file whose real path is inside the submission counts (no symlink leads out)."""
    inside, first = submission.resolve(), submission / "exercises" / f"{stage_id}.py"
    found = [p for p in submission.rglob(f"{stage_id}.py") if p.is_file() and not p.is_symlink()
             and p.resolve().is_relative_to(inside) and "reference" not in p.relative_to(submission).parts]
    return min(found, key=lambda p: (p != first, len(p.parts), str(p)), default=None)


def collect(submission: Path, kata: Path, target: Path, stages) -> tuple[list[str], list[str]]:
    """Copy the submitted stage files over fresh stubs in ``target``. Returns (found, not submitted)."""
    stubgen.generate(kata / "reference", target, stages)
    (target / "__init__.py").write_text('"""A submission, collected by the autograder."""\n', encoding="utf-8")
    found = {stage: source for stage in stages if (source := find_stage_file(submission, stage.id))}
    for stage, source in found.items():
        shutil.copyfile(source, stage.source(target))
    return [stage.id for stage in found], [stage.id for stage in stages if stage not in found]


def failure_results(message: str, settings: dict) -> dict:
    doc = {"score": 0.0, "output": f"The autograder could not grade this submission: {message}", "tests": []}
    return finish_results(doc, settings | {"leaderboard": False}, [])


def finish_results(doc: dict, settings: dict, absent: list[str]) -> dict:
    """The grader's document, its visibility and leaderboard set; hidden suites' messages (extra_data) to the log."""
    for test in doc["tests"]:
        if "extra_data" in test:  # a hidden suite (report.to_gradescope)
            print(f"hidden suite {test['name']}:\n{test['extra_data'].get('output', '')}")
    doc |= {"visibility": settings.get("visibility", "visible"),
            "stdout_visibility": settings.get("stdout_visibility", "hidden")}
    if absent:
        doc["output"] = (f"Not submitted (graded as the untouched stub): {', '.join(absent)}\n"
                         + str(doc.get("output", ""))).strip()
    if settings.get("leaderboard", True):
        passed = sum(test["status"] == "passed" for test in doc["tests"])
        doc["leaderboard"] = [{"name": "Score", "value": doc["score"]}, {"name": "Stages passed", "value": passed}]
    return doc


def grade_submission(autograder: Path) -> dict:
    """Grade /autograder/submission with the bundled kata; the results document (never raises)."""
    kata, settings = autograder / "source" / "kata", {}
    try:
        settings = json.loads((kata / SETTINGS).read_text(encoding="utf-8"))
        stages = curriculum.load(kata / "curriculum.toml")
        with tempfile.TemporaryDirectory(prefix="kata-gradescope-") as private:  # mode 0o700
            impl = Path(private) / "submission"
            found, absent = collect(autograder / "submission", kata, impl, stages)
            if not found:
                return failure_results(f"no stage files found (expected {stages[0].id}.py ... at the top of the "
                                       "upload or in an exercises/ folder)", settings)
            hidden = kata / "hidden" if (kata / "hidden").is_dir() else None
            if hidden:
                os.chmod(hidden, 0o700)
            options = batch.Options(kata, 1, settings["jobs"], settings["submission_timeout"], settings["timeout"],
                                    settings["stage_timeout"], settings["memory_limit"], hidden and str(hidden),
                                    no_fallback=False, grace=60)
            stage = batch.start_grader(impl, options, Path(private) / "grader.log", "gradescope",
                                       "--hidden-visibility", settings["hidden_visibility"])
            stage.wait()
            doc, problem = batch.result_of(stage)
            if not problem and not (isinstance(doc, dict) and isinstance(doc.get("tests"), list)):
                problem = "the grader's result is not a results document"
            return failure_results(problem, settings) if problem else finish_results(doc, settings, absent)
    except Exception as error:  # noqa: BLE001 - Gradescope must always get a results.json
        return failure_results(f"{type(error).__name__}: {error}", settings)


def run_autograder(autograder: Path) -> int:
    doc, results = grade_submission(autograder), autograder / "results" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")  # last: it overwrites any forgery
    print(f"score {doc['score']:g}; results in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(run_autograder(Path(sys.argv[1] if len(sys.argv) > 1 else "/autograder").resolve()))
