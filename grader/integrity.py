"""Integrity checks for courses: the test files are the ones shipped, and learner code stays honest.

- A hash manifest (grader/test_hashes.json) of the suites, tests/checks.py, tests/conftest.py and
  curriculum.toml is checked on every run; ``python -m grader --refresh-hashes`` rewrites it.
- A learner's stage file that imports the answer key (reference/) or the test machinery (pytest,
  the grader, the suites) gets no credit. This static scan is backed up at run time by an import
  hook in the child process (grader/child.py) that refuses ``import reference``.

What this cannot stop: code running in the same process as the tests can, with enough effort,
tamper with anything in that process. docs/grader.md lists the limits honestly.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from . import curriculum

HASHES = Path(__file__).resolve().parent / "test_hashes.json"
FORBIDDEN_TOPS = {
    "reference": "imports the answer key (reference/)",
    "grader": "imports the grader",
    "tests": "imports the test suites",
    "checks": "imports the test helpers",
    "conftest": "imports the test configuration",
    "pytest": "imports pytest (stage code never needs it)",
    "_pytest": "imports pytest's internals",
    "pluggy": "imports pytest's plugin machinery",
}


def hashed_files(root: Path = curriculum.ROOT) -> list[Path]:
    """The files whose content decides a grade, in a stable order."""
    tests = Path(root) / "tests"
    files = sorted(tests.glob("test_*.py")) + [tests / "checks.py", tests / "conftest.py", Path(root) / "curriculum.toml"]
    return [f for f in files if f.is_file()]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def current_hashes(root: Path = curriculum.ROOT) -> dict[str, str]:
    return {f.relative_to(root).as_posix(): digest(f) for f in hashed_files(root)}


def refresh(root: Path = curriculum.ROOT, manifest: Path = HASHES) -> dict[str, str]:
    hashes = current_hashes(root)
    manifest.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return hashes


def check_hashes(root: Path = curriculum.ROOT, manifest: Path = HASHES) -> list[str]:
    """One line per problem: a file changed, removed, or added since the manifest was written."""
    if not manifest.is_file():
        return [f"no hash manifest ({manifest.name}): run python -m grader --refresh-hashes"]
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"the hash manifest {manifest.name} cannot be read ({error})"]
    actual = current_hashes(root)
    problems = []
    for name in sorted(expected):
        if name not in actual:
            problems.append(f"{name} is missing (it is in {manifest.name})")
        elif actual[name] != expected[name]:
            problems.append(f"{name} differs from the shipped version (edited?)")
    problems += [f"{name} is not in {manifest.name} (added?)" for name in sorted(set(actual) - set(expected))]
    return problems


def forbidden_imports(source: str) -> list[str]:
    """Why this learner file gets no credit: one line per forbidden import (empty when clean)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the run itself reports the syntax error
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        for name in names:
            top = name.split(".")[0]
            if top in FORBIDDEN_TOPS:
                found.append(f"line {node.lineno} {FORBIDDEN_TOPS[top]}")
    return found


def scan_stage(stage: curriculum.Stage, impl: Path) -> str:
    """A one-line verdict for the scorecard, or '' when the file is clean (or absent)."""
    path = stage.source(impl)
    if not path.is_file():
        return ""
    problems = forbidden_imports(path.read_text(encoding="utf-8", errors="replace"))
    if not problems:
        return ""
    return f"no credit: {path.name} {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
