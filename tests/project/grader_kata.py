"""Helpers for the grader's tests: build a miniature kata in a temporary directory and run the grader.

The miniature kata (tests/project/grader_fixtures/) has three tiny stages; it is copied beside the
real grader/, tests/conftest.py and tests/checks.py, so the grader under test is this repository's
grader, run as a process, exactly as a learner runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import preloaded
from grader import curriculum, stubgen

ROOT = curriculum.ROOT
FIXTURES = Path(__file__).resolve().parent / "grader_fixtures"
BROKEN = FIXTURES / "broken"
STAGE_IDS = ("s01_add", "s02_scale", "s03_combo")


def build_kata(target: Path) -> Path:
    """A runnable miniature kata at ``target``: grader, conftest, checks, fixtures, generated stubs."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "grader", target / "grader", ignore=shutil.ignore_patterns("__pycache__", "test_hashes.json"))
    (target / "tests").mkdir()
    for name in ("conftest.py", "checks.py"):
        shutil.copy(ROOT / "tests" / name, target / "tests" / name)
    for suite in (FIXTURES / "kata" / "suites").glob("stage_*.py"):
        shutil.copy(suite, target / "tests" / suite.name.replace("stage_", "test_", 1))
    shutil.copy(FIXTURES / "kata" / "curriculum.toml", target / "curriculum.toml")
    shutil.copytree(FIXTURES / "kata" / "reference", target / "reference")
    stages = curriculum.load(target / "curriculum.toml")
    stubgen.generate(target / "reference", target / "exercises", stages)
    (target / "exercises" / "__init__.py").write_text('"""Stubs."""\n', encoding="utf-8")
    return target


def submission(kata: Path, target: Path, broken: dict[str, str] | None = None) -> Path:
    """A copy of the reference with some stage files replaced by files from broken/."""
    shutil.copytree(kata / "reference", target)
    for stage_id, fixture in (broken or {}).items():
        shutil.copy(BROKEN / fixture, target / f"{stage_id}.py")
    return target


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)

    def stage(self, stage_id: str) -> dict:
        return next(s for s in self.json()["stages"] if s["id"] == stage_id and not s["extra"])


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KATA_", "GITHUB_", "COV_CORE"))}
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1", "KATA_CACHE": "off", **extra})  # cache: opt in
    return env


def start(kata: Path, *args: str, fresh: bool = False, **env: str) -> subprocess.Popen:
    """``python -m grader ARGS`` in ``kata``; ``fresh``: in an interpreter of its own, for a test that
    watches the grader's own children (else forked from tests/project/preloaded.py's server)."""
    environ = environment(**env)
    return subprocess.Popen([*preloaded.python_m(environ, fresh), "grader", *args], cwd=kata, env=environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 120) -> Run:
    out, err = process.communicate(timeout=timeout)
    return Run(process.returncode, out, err)


def grade(kata: Path, *args: str, timeout: float = 120, **env: str) -> Run:
    return finish(start(kata, *args, **env), timeout)


def run_module(where: Path, module: str, *args: str, timeout: float = 600, stdin: str | None = None,
               fresh: bool = False, **env: str) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in ``where``, as a person runs it (``fresh``: as in ``start``)."""
    environ = environment(**env)
    return subprocess.run([*preloaded.python_m(environ, fresh), module, *args], cwd=where, env=environ, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def require_oracle(*names: str):
    """Import the test-only oracle packages (requirements-test.txt), returning the last; a missing one
    fails the test in one line, never skips it."""
    import importlib

    import pytest

    try:
        return [importlib.import_module(name) for name in names][-1]
    except ImportError as error:
        pytest.fail(f"{error.name} (an oracle of this test) is not installed: pip install -r requirements-test.txt",
                    pytrace=False)


def stage_suite(stage_id: str):
    """tests/test_<stage_id>.py as a module, for its hand-written files and slow oracles (the oracle tests check them)."""
    import importlib.util

    tests = curriculum.ROOT / "tests"
    spec = importlib.util.spec_from_file_location(f"_{stage_id}_suite", tests / f"test_{stage_id}.py")
    suite = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(tests))  # the suite imports checks.py from there
    try:
        spec.loader.exec_module(suite)
    finally:
        sys.path.remove(str(tests))
    return suite
