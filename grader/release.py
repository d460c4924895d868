"""The student release: ``python -m grader release OUT_DIR [--with-reference]``: fresh stubs (never
this copy's exercises/), the suites, grader, docs and data, and a manifest of the files it ships.
Without --with-reference everything that quotes or runs the answer key stays behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import batch, curriculum, integrity, options, stubgen

ALWAYS = ("README.md", "LICENSE", "curriculum.toml", "requirements.txt", "pyproject.toml", ".gitignore",
          "grader", "docs", "data")
# Shipped only with the reference: each of these quotes or runs the answer key.
WITH_REFERENCE = ("CONTRIBUTING.md", "tox.ini", "reference", "tests/mutants", "tests/project", "benchmarks", ".ci")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def build(root: Path, out: Path, with_reference: bool) -> list[str]:
    """Write the release into ``out`` (absent or empty); return notes for the instructor."""
    stubgen.generate(root / "reference", out / "exercises", curriculum.load(root / "curriculum.toml"))
    tests = [path.relative_to(root) for path in integrity.hashed_files(root) if path.parent == root / "tests"]
    for name in (*ALWAYS, "exercises/__init__.py", *tests, *(WITH_REFERENCE if with_reference else ())):
        if (root / name).is_dir():
            shutil.copytree(root / name, out / name, ignore=IGNORE)
        elif (root / name).is_file():
            (out / name).parent.mkdir(exist_ok=True)
            shutil.copy2(root / name, out / name)
    before = integrity.check_hashes(root, root / integrity.MANIFEST)
    integrity.refresh(out, out / integrity.MANIFEST)
    notes = [f"the test files differ from this copy's grader/test_hashes.json ({before[0]}); "
             "the release's manifest is written from the files it ships"] if before else []
    bare = ["no reference/: the release grades without the fallback, and its scorecard says so"]
    return notes + ([] if with_reference else bare)


def build_parser():
    return options.parser("python -m grader release", "Build the learner-facing repository.", {
        "out": dict(help="the directory to create (absent or empty)"),
        "--with-reference": dict(action="store_true", help="ship reference/ (and the mutants, the project's suite and "
                                                           "the benchmarks that use it)")})


def main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    """0 written, 2 bad input (one line on stderr)."""
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    batch.check_folders(out, f"release {args.out}")
    top = root.resolve()
    if out == top or top in out.parents and out.relative_to(top).parts[0] in (
            "grader", "tests", "exercises", "reference", "docs", "data", "courses"):
        raise options.UsageError(f"release {args.out}: choose a directory outside this repository's own folders")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise options.UsageError(f"release {args.out}: exists and is not empty")
    curriculum.load(root / "curriculum.toml")  # a broken manifest stops it before anything is written
    if not options.reference_of(root):
        raise options.UsageError("this copy has no reference/: the stubs are generated from it")
    notes = build(root, out, args.with_reference)
    print(f"wrote the student release to {args.out} ({'with' if args.with_reference else 'without'} reference/)")
    for note in notes:
        print(f"  note: {note}")
    return 0
