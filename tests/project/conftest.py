"""Shared fixtures of the project's own suite: run stage suites as a learner's grader would."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grader import curriculum, stubgen

ROOT = curriculum.ROOT
os.environ["KATA_CACHE"] = "off"  # every grader run here grades afresh, and writes nothing into the checkout


@dataclass
class SuiteRun:
    """Per-stage outcome of one pytest run over stage suites: {stage id: {test name: outcome}}."""

    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    output: str = ""

    def stage(self, stage_id: str) -> dict[str, str]:
        return self.outcomes.get(stage_id, {})


def run_suites(impl: Path | str, tmp: Path, extra: tuple[str, ...] = ()) -> SuiteRun:
    """Run every stage suite that exists on ``impl`` in one child pytest; read results from JUnit XML."""
    report = tmp / "junit.xml"
    suites = [str(stage.suite) for stage in curriculum.load() if stage.suite.is_file()]
    command = [sys.executable, "-m", "pytest", *suites, "--impl", str(impl), "-q", "--tb=line",
               "-p", "no:cacheprovider", "-p", "pytest_timeout", f"--junitxml={report}", "-o", "junit_family=xunit1", *extra]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    run = SuiteRun(output=done.stdout + done.stderr)
    if not report.is_file():
        return run
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        stage_id = module.removeprefix("test_")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        run.outcomes.setdefault(stage_id, {})[case.get("name")] = outcome
    return run


@pytest.fixture(scope="session")
def stub_tree(tmp_path_factory) -> Path:
    """The stubs as shipped: generated from reference/ (never the learner's edited exercises/)."""
    tree = tmp_path_factory.mktemp("stubs")
    stubgen.generate(curriculum.REFERENCE, tree)
    return tree


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> SuiteRun:
    return run_suites("reference", tmp_path_factory.mktemp("reference-run"))


@pytest.fixture(scope="session")
def stub_run(tmp_path_factory, stub_tree) -> SuiteRun:
    return run_suites(stub_tree, tmp_path_factory.mktemp("stub-run"))
