"""The student release: ``python -m grader release OUT_DIR [--with-reference]``.

Builds the learner-facing repository from this one: freshly generated stubs (never this copy's
exercises/, which may hold an instructor's answers), the stage suites and their helpers, the
grader, the docs, the data, curriculum.toml, requirements and the README.

Without ``--with-reference`` the answer key stays behind, and with it everything derived from it:
the mutant catalogue (each mutant is an edit of a reference file, so it quotes the answer), the
project's own suite (it runs the reference), the benchmarks and the maintainers' CI. The grader in
such a release grades with the fallback off and its scorecard says so.

The release's grader/test_hashes.json is written from the test files it ships, so a course that
grades with this release's tests can check a student's copy against it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import curriculum, integrity, stubgen

ALWAYS_FILES = ("README.md", "LICENSE", "curriculum.toml", "requirements.txt", "pyproject.toml", ".gitignore")
ALWAYS_TREES = ("docs", "data")
# Shipped only with the reference: each of these quotes or runs the answer key.
REFERENCE_FILES = ("CONTRIBUTING.md", "tox.ini")
REFERENCE_TREES = ("reference", "tests/mutants", "tests/project", "benchmarks", ".ci")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def build(root: Path, out: Path, with_reference: bool) -> list[str]:
    """Write the release into ``out`` (absent or empty); return notes for the instructor."""
    root, out = Path(root), Path(out)
    notes = []
    out.mkdir(parents=True, exist_ok=True)
    files = list(ALWAYS_FILES) + (list(REFERENCE_FILES) if with_reference else [])
    for name in files:
        if (root / name).is_file():
            shutil.copy2(root / name, out / name)
    trees = list(ALWAYS_TREES) + (list(REFERENCE_TREES) if with_reference else [])
    for name in trees:
        if (root / name).is_dir():
            shutil.copytree(root / name, out / name, ignore=IGNORE)
    shutil.copytree(root / "grader", out / "grader", ignore=IGNORE)
    (out / "tests").mkdir(exist_ok=True)
    for path in integrity.hashed_files(root):
        relative = path.relative_to(root)
        if relative.parts[0] == "tests":
            shutil.copy2(path, out / relative)
    stages = curriculum.load(root / "curriculum.toml")
    stubgen.generate(root / "reference", out / "exercises", stages)
    init = root / "exercises" / "__init__.py"
    if init.is_file():
        shutil.copy2(init, out / "exercises" / "__init__.py")
    before = integrity.check_hashes(root, root / "grader" / "test_hashes.json")
    integrity.refresh(out, out / "grader" / "test_hashes.json")
    if before:
        notes.append(f"the test files differ from this copy's grader/test_hashes.json ({before[0]}); "
                     "the release's manifest is written from the files it ships")
    if not with_reference:
        notes.append("no reference/: the release grades without the fallback, and its scorecard says so")
    return notes


def build_parser():
    p = curriculum.Parser(prog="python -m grader release", description="Build the learner-facing repository.")
    p.add_argument("out", help="the directory to create (absent or empty)")
    p.add_argument("--with-reference", action="store_true",
                   help="ship reference/ (and the mutants, the project's suite and the benchmarks that use it)")
    return p


def main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    """0 written, 2 bad input (one line on stderr)."""
    UsageError = curriculum.UsageError
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    if any(parent.exists() and not parent.is_dir() for parent in out.parents):
        raise UsageError(f"release {args.out}: a part of that path is a file, not a folder")
    if out == root.resolve() or root.resolve() in out.parents and out.parts[len(root.resolve().parts)] in (
            "grader", "tests", "exercises", "reference", "docs", "data", "courses"):
        raise UsageError(f"release {args.out}: choose a directory outside this repository's own folders")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"release {args.out}: exists and is not empty")
    curriculum.load(root / "curriculum.toml")  # a broken manifest stops it before anything is written
    if not any((root / "reference").glob("s[0-9][0-9]_*.py")):
        raise UsageError("this copy has no reference/: the stubs are generated from it")
    notes = build(root, out, args.with_reference)
    shipped = "with" if args.with_reference else "without"
    print(f"wrote the student release to {args.out} ({shipped} reference/)")
    for note in notes:
        print(f"  note: {note}")
    return 0
