"""The child side of grading one stage: run pytest in this process and report each test's outcome.

The outcomes travel to the grader on a private channel: a file descriptor the parent opened before
any learner code ran, one line an event, each line prefixed with a random per-run nonce. What the
learner's code prints goes to stdout/stderr and is never read as a result. A test the channel does
not report as passed did not pass.

Forked by the grader (grader/run.py) with torch and pytest already imported, or, where fork is not
available, started as ``python -m grader.child JOB.json``.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import traceback
from pathlib import Path

import pytest

BLOCKED_PACKAGES = ("reference",)  # a learner's stage may not import the answer key


def _write(fd: int, nonce: str, event: dict) -> None:
    data = (nonce + " " + json.dumps(event) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]


class ReferenceBlocker(importlib.abc.MetaPathFinder):
    """Refuses ``import reference`` while learner code runs, and remembers who tried."""

    def __init__(self, report):
        self.report = report

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top in BLOCKED_PACKAGES:
            self.report({"event": "blocked", "module": fullname})
            raise ImportError(f"learner code may not import {fullname}: the grader gives no credit for the answer key")
        return None


class Recorder:
    """A pytest plugin that sends collection, the start of each test and each test's outcome."""

    def __init__(self, fd: int, nonce: str, impl: str):
        self._fd = fd
        self._nonce = nonce
        self._impl = str(Path(impl).resolve())

    def send(self, event: dict) -> None:
        _write(self._fd, self._nonce, event)

    def pytest_collection_finish(self, session):
        self.send({"event": "collected", "tests": [item.nodeid for item in session.items]})

    def pytest_runtest_logstart(self, nodeid, location):
        self.send({"event": "start", "test": nodeid})

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        event = {"event": "phase", "test": item.nodeid, "when": call.when, "outcome": report.outcome,
                 "duration": call.duration}
        if call.excinfo is not None and report.outcome != "passed":
            event["exc_type"] = call.excinfo.type.__name__
            event["message"] = _message(call.excinfo.value)
            event["where"] = self._learner_line(call.excinfo.tb)
        elif report.outcome == "skipped" and report.longrepr:
            event["exc_type"], event["message"] = "Skipped", str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        self.send(event)
        return report

    def pytest_collectreport(self, report):
        if report.failed:
            self.send({"event": "collect_error", "where": report.nodeid, "message": str(report.longrepr)[-2000:]})

    def pytest_sessionfinish(self, session, exitstatus):
        self.send({"event": "done", "exitstatus": int(exitstatus)})

    def _learner_line(self, tb) -> str:
        where = ""
        for frame, lineno in traceback.walk_tb(tb):
            filename = frame.f_code.co_filename
            if filename.startswith(self._impl + os.sep):
                where = f"{Path(filename).name}:{lineno}"
        return where


def _message(value: BaseException) -> str:
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a learner's exception whose __str__ fails
        text = f"<{type(value).__name__} whose message cannot be shown>"
    if isinstance(value, SyntaxError) and value.lineno:
        text = f"{value.msg} ({Path(value.filename or '?').name}, line {value.lineno})"
    return text[:4000]


def _limit_memory(megabytes: int) -> None:
    """Cap this process's address space at what it uses now plus ``megabytes`` (Linux only)."""
    import resource

    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[0])
    now = pages * os.sysconf("SC_PAGE_SIZE")
    limit = now + megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def pytest_args(job: dict) -> list[str]:
    """The pytest command line for one unit (see grader/run.py: Job.to_dict)."""
    args = [*job["files"], "--impl", job["impl"], "-p", "no:cacheprovider", "-p", "pytest_timeout", "-p", "no:unraisableexception",
            "--timeout", str(job["timeout"]),
            "--device", job["device"], "-o", "console_output_style=classic"]
    if job.get("rootdir"):
        args += ["--rootdir", job["rootdir"], "-c", os.devnull]
    if job["no_fallback"]:
        args.append("--no-fallback")
    elif job["learner_stages"]:
        args += ["--learner-stages", ",".join(job["learner_stages"])]
    args += ["-v", "--tb=short"] if job["verbose"] else ["-q", "--tb=short", "--no-header"]
    return args


def run(job: dict, result_fd: int) -> int:
    """Grade one unit in this process; the caller exits right after. Returns pytest's exit code."""
    os.chdir(job["root"])
    if job["memory_mb"] and sys.platform.startswith("linux"):
        _limit_memory(job["memory_mb"])
    if not job["verbose"]:
        out = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
    nonce = job.pop("nonce")
    recorder = Recorder(result_fd, nonce, job["impl"])
    if job["block_reference"]:
        sys.meta_path.insert(0, ReferenceBlocker(recorder.send))
        for name in [m for m in sys.modules if m.split(".")[0] in BLOCKED_PACKAGES]:
            del sys.modules[name]
    for path in (job["root"], str(Path(job["root"]) / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins grading needs: faster, fewer surprises
    try:
        code = int(pytest.main(pytest_args(job), plugins=[recorder]))
    except BaseException as error:  # noqa: BLE001 - report anything, then exit
        recorder.send({"event": "crash", "message": f"{type(error).__name__}: {_message(error)}"})
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.child JOB.json``: the no-fork path (a fresh interpreter per stage)."""
    argv = sys.argv[1:] if argv is None else argv
    import gc

    import torch  # noqa: F401 - imported before the freeze, as the fork server does

    gc.freeze()
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    fd = os.open(job.pop("result_path"), os.O_WRONLY | os.O_APPEND)
    Path(argv[0]).unlink()  # the nonce is not left lying around for learner code to read
    return run(job, fd)


if __name__ == "__main__":
    os._exit(main())
