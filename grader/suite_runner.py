"""The stage side of grading one unit: run pytest in this process and report each test's outcome.

Run in a fork of the grader (grader/grading.py), or as ``python -m grader.suite_runner``. The outcomes travel on
the stage's signed channel (grader/sandbox.py); what the learner's code prints goes to a file and is
never read as a result: a test the channel does not report as passed did not pass. Once pytest has
collected the tests, before any learner code runs, the stage is sealed. Each test may use ``timeout``
seconds of CPU time (not wall time: a busy machine does not fail it).
"""

from __future__ import annotations

import gc
import importlib.abc
import json
import os
import signal
import sys
import traceback
from pathlib import Path

import pytest

from . import sandbox
from .cache import machine


class Recorder(importlib.abc.MetaPathFinder):
    """A pytest plugin that sends collection, the start of each test and each test's outcome; on
    sys.meta_path (an untrusted stage), it also refuses ``import reference`` (the answer key) and says so."""

    def __init__(self, writer: sandbox.Writer, impl: str, timeout: float):
        self.send = writer.send
        self._impl = str(Path(impl).resolve()) + os.sep
        self._timeout = timeout

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == "reference":
            self.send({"event": "blocked", "module": fullname})
            raise ImportError(f"learner code may not import {fullname}: the grader gives no credit for the answer key")

    def pytest_collection_finish(self, session):
        self.send({"event": "collected", "tests": [item.nodeid for item in session.items]})
        if level := sandbox.seal():  # from here on learner code may run
            self.send({"event": "sealed", "level": level})

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        signal.signal(signal.SIGPROF, lambda *_: pytest.fail(f"Timeout: used more than {self._timeout:g} s of CPU time",
                                                             pytrace=False))
        signal.setitimer(signal.ITIMER_PROF, self._timeout)  # 0: no limit
        try:
            return (yield)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)

    def pytest_runtest_logstart(self, nodeid, location):
        self.send({"event": "start", "test": nodeid})

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        event = {"event": "phase", "test": item.nodeid, "when": call.when, "outcome": report.outcome,
                 "duration": call.duration}
        if call.excinfo is not None and report.outcome != "passed":
            files = [(frame.f_code.co_filename, line) for frame, line in traceback.walk_tb(call.excinfo.tb)]
            mine = [f"{Path(name).name}:{line}" for name, line in files if name.startswith(self._impl)]
            event.update(exc_type=call.excinfo.type.__name__, message=_message(call.excinfo.value),
                         where=mine[-1] if mine else "")
        elif report.outcome == "skipped" and report.longrepr:
            why = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
            event.update(exc_type="Skipped", message=str(why))
        self.send(event)
        return report

    def pytest_collectreport(self, report):
        if report.failed:
            self.send({"event": "collect_error", "where": report.nodeid, "message": str(report.longrepr)[-2000:]})

    def pytest_sessionfinish(self, session, exitstatus):
        self.send({"event": "done", "exitstatus": int(exitstatus)})


def _message(value: BaseException) -> str:
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a learner's exception whose __str__ fails
        text = f"<{type(value).__name__} whose message cannot be shown>"
    return text[:4000]


def run(job: dict, writer: sandbox.Writer) -> int:
    """Grade one unit (the job, with pytest's arguments: grader/grading.py, _start) in this process; the
    caller exits right after. Returns pytest's exit code."""
    recorder = Recorder(writer, job["impl"], job["timeout"])
    if job["block_reference"]:
        sys.meta_path.insert(0, recorder)
        for name in [m for m in sys.modules if m.split(".")[0] == "reference"]:
            del sys.modules[name]
    paths = (str(Path(job["root"]) / "tests"), job["root"])  # the tests' helpers, the kata's packages
    sys.path[:0] = [path for path in paths if path not in sys.path]
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins grading needs: faster, fewer surprises
    try:
        code = int(pytest.main(job["args"], plugins=[recorder]))
    except BaseException as error:  # noqa: BLE001 - report anything, then exit
        recorder.send({"event": "crash", "message": f"{type(error).__name__}: {_message(error)}"})
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def warm_up(optimizers: bool = False) -> None:
    """Import what every child needs once, before forking (the point of the fork server): torch, and pytest
    with this module; with ``optimizers`` (several stages to grade) also torch._dynamo, which a process's
    first torch.optim optimizer imports (seconds of CPU in every suite that trains). On a CPU with AVX-512:
    torch's AVX2 kernels, unless ATEN_CPU_CAPABILITY is set (docs/grader.md, "Which CPU kernels", says why)."""
    if " avx512f" in machine():  # torch reads it at its first kernel, not at import
        os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    import torch.nn.functional  # noqa: F401

    if optimizers:
        import torch._dynamo  # noqa: F401

    gc.freeze()  # children skip the torch objects in every collection (pytest collects at exit)


def main() -> int:
    """``python -m grader.suite_runner``: the job (with the channel's key) arrives on standard input, the channel
    is standard output; what the stage prints goes where its standard error goes."""
    warm_up()  # as the fork server does
    job = json.loads(sys.stdin.buffer.read())
    if job["memory_mb"]:
        sandbox.limit_memory(job["memory_mb"])
    channel = os.dup(1)
    os.dup2(2, 1)
    return run(job, sandbox.Writer(channel, bytes.fromhex(job.pop("key")), "stage"))


if __name__ == "__main__":
    os._exit(main())
