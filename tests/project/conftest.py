"""Shared fixtures of the project's own suite: run stage suites as a learner's grader would.

`python -m pytest` (the whole suite or a -m/-k subset of it, not a file named on the command line) runs on
every core with pytest-xdist where it is installed (requirements-test.txt): one worker per core; the tests
that share a module's fixture on one worker (it is built once), the two modules that read the mutant
catalogue's verdicts on the same one (the catalogue runs once), every other test wherever a worker is free.
`-n 0` runs in this process; `-n N` picks N workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import preloaded
from grader import curriculum, stubgen

ROOT = curriculum.ROOT
os.environ["KATA_CACHE"] = "off"  # every grader run here grades afresh, and writes nothing into the checkout


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Spread the suite (its testpaths, not a file or folder named on the command line) over the cores."""
    if (hasattr(config, "workerinput") or getattr(config.option, "numprocesses", 0) is not None
            or config.args_source != pytest.Config.ArgsSource.TESTPATHS or config.getoption("collectonly") or cores() < 2):
        return
    config.option.numprocesses, config.option.dist = min(cores(), 8), "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(xdist, in the controller) A worker parses the command line again: tell it the suite is grouped."""
    node.workerinput["kata_loadgroup"] = node.config.getoption("dist") == "loadgroup"


def pytest_configure(config):
    if getattr(config, "workerinput", {}).get("kata_loadgroup"):
        config.option.loadgroup = True  # what xdist's worker reads to send a group's tests to one worker


def shared_work(item) -> str | None:
    """The costly fixture ``item`` shares with other tests (built once per worker), or None."""
    if "mutant_rows" in item.fixturenames:  # test_mutants.py and test_messages.py: the catalogue's run
        return "mutants"
    if {"reference_run", "stub_run"} & set(item.fixturenames):
        return "suite-runs"
    defs = item._fixtureinfo.name2fixturedefs
    mine = any(d.scope == "module" and d.baseid == item.parent.nodeid for name in item.fixturenames for d in defs.get(name, ()))
    return item.path.name if mine else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under --dist loadgroup: the tests that share a module's (or the catalogue's) fixture go to one worker,
    every other test wherever a worker is free."""
    if not getattr(config.option, "loadgroup", False) and getattr(config.option, "dist", "no") != "loadgroup":
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None and (group := shared_work(item)):
            item.add_marker(pytest.mark.xdist_group(group))


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
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    command = [*preloaded.python_m(env), "pytest", *suites, "--impl", str(impl), "-q", "--tb=line",
               "-p", "no:cacheprovider", "-p", "pytest_timeout", f"--junitxml={report}", "-o", "junit_family=xunit1", *extra]
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


@pytest.fixture(scope="session")
def mutant_rows(tmp_path_factory) -> list[dict]:
    """Run the whole mutant catalogue once, as a maintainer would (python -m grader.mutants --json), for every
    test that reads its verdicts (test_mutants.py, test_messages.py): one row per mutant, as the JSON has it."""
    report = tmp_path_factory.mktemp("mutants") / "verdicts.json"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([*preloaded.python_m(env), "grader.mutants", "--json", str(report)], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert report.is_file(), f"python -m grader.mutants wrote no verdicts (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(report.read_text(encoding="utf-8"))
