"""Run stage suites in isolated child processes and turn what they report into StageResults.

Planning (pure functions): which units to run, which of a stage's dependencies come from the
learner and which from reference/ (the learner's, where that dependency passed in this run).

Running: a fork server. This process imports torch and pytest once, then forks one child per unit
(grader/child.py), each in its own process group with a memory limit, so a stage that crashes,
loops forever, exhausts memory or exits early costs that stage only. Where fork is missing (Windows)
or KATA_NO_FORK=1 is set, each unit runs in a fresh ``python -m grader.child`` instead (slower).
Units run side by side up to ``jobs`` at a time; a stage starts as soon as its dependencies are graded.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import curriculum, stubgen
from .results import (
    ERROR,
    FAILING,
    MISSING,
    NOT_STARTED,
    PASSED,
    TEST_ERROR,
    TEST_FAILED,
    TEST_NOT_RUN,
    TEST_PASSED,
    TEST_SKIPPED,
    TIMED_OUT,
    StageResult,
    TestResult,
)

MEMORY_ERRORS = ("MemoryError", "OutOfMemoryError")
MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc")


@dataclass(frozen=True)
class Unit:
    """One suite run for one stage: its own suite, or one hidden-test file from --extra-tests."""

    stage: curriculum.Stage
    files: tuple[str, ...]  # the test files pytest runs
    label: str  # what the report calls the suite
    points: float
    extra: bool = False
    rootdir: str | None = None  # for hidden tests, which live outside tests/

    @property
    def key(self) -> str:
        return f"{self.stage.id}:{self.label}"


@dataclass
class Settings:
    root: Path  # the repository root (tests/, curriculum.toml)
    impl: Path  # the tree graded
    reference: Path | None  # the fallback tree; None when absent
    fallback: bool  # take unfinished dependencies from reference/
    timeout: float = 60.0  # per test, seconds (pytest-timeout)
    stage_timeout: float = 300.0  # per unit, seconds, enforced by killing the child
    memory_mb: int = 4096  # address space a child may add to what it starts with; 0 = no limit
    device: str = "cpu"
    jobs: int = 2
    fork: bool = True
    verbose: str | None = None  # key of the one unit whose pytest output goes to the terminal
    block_reference: bool = True
    no_credit: dict[str, str] = field(default_factory=dict)  # stage id -> why (static integrity scan)


def fork_available() -> bool:
    return hasattr(os, "fork") and os.environ.get("KATA_NO_FORK", "") in ("", "0")


def memory_limit_available() -> bool:
    return sys.platform.startswith("linux")


# ---------------------------------------------------------------- planning (pure)


def closure(stages: Iterable[curriculum.Stage]) -> dict[str, tuple[str, ...]]:
    """Every stage's dependencies, direct and indirect, in learning order."""
    order = {}
    deps: dict[str, set[str]] = {}
    for index, stage in enumerate(stages):
        order[stage.id] = index
        found = set(stage.depends)
        for dep in stage.depends:
            found |= deps.get(dep, set())
        deps[stage.id] = found
    return {sid: tuple(sorted(found, key=order.__getitem__)) for sid, found in deps.items()}


def split_dependencies(deps: Iterable[str], passed: set[str], fallback: bool) -> tuple[list[str], list[str]]:
    """(taken from the learner, taken from reference/) for a stage with these dependencies."""
    deps = list(deps)
    if not fallback:
        return deps, []
    return [d for d in deps if d in passed], [d for d in deps if d not in passed]


def units_for(stages: Iterable[curriculum.Stage], root: Path, extra_dir: Path | None = None,
              extra_points: dict[str, float] | None = None) -> list[Unit]:
    """The stage suites (and hidden suites) in learning order."""
    units = []
    extra_points = extra_points or {}
    for stage in stages:
        suite = Path(root) / "tests" / f"test_{stage.id}.py"
        units.append(Unit(stage, (str(suite),), f"tests/{suite.name}", float(stage.points)))
        if extra_dir is not None:
            for path in sorted(Path(extra_dir).glob(f"test_{stage.id}*.py")):
                points = extra_points.get(path.name, float(stage.points))
                units.append(Unit(stage, (str(path),), path.name, points, extra=True))
    return units


def precheck(unit: Unit, settings: Settings) -> StageResult | None:
    """A result for a unit that cannot run at all (no suite, no stage file), else None."""
    stage = unit.stage
    if not Path(unit.files[0]).is_file():
        return _result(unit, MISSING, f"no suite {unit.label} yet", max_score=0.0)
    if not stage.source(settings.impl).is_file():
        return _result(unit, ERROR, f"no {stage.id}.py in {settings.impl.name}/ (deleted or renamed?)")
    return None


def _result(unit: Unit, status: str, reason: str = "", max_score: float | None = None, **kw) -> StageResult:
    stage = unit.stage
    return StageResult(id=stage.id, number=stage.number, title=stage.title, status=status, score=0.0,
                       max_score=unit.points if max_score is None else max_score, suite=unit.label,
                       extra=unit.extra, reason=reason, **kw)


# ---------------------------------------------------------------- reading a child's report (pure)


def parse_channel(data: bytes, nonce: str) -> list[dict]:
    """The events a child sent: lines that start with this run's nonce; anything else is ignored."""
    events = []
    prefix = nonce + " "
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.startswith(prefix):
            try:
                event = json.loads(line[len(prefix):])
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _short(nodeid: str) -> str:
    return nodeid.split("::")[-1]


def _first_line(text: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def interpret(unit: Unit, events: list[dict], *, exitcode: int | None, killed_for_time: bool,
              settings: Settings, substituted: list[str], duration: float, output_tail: str = "") -> StageResult:
    """Turn a child's events and how it ended into the unit's StageResult."""
    collected: list[str] = []
    tests: dict[str, TestResult] = {}
    started = ""
    done = None
    blocked = []
    collect_errors = []
    crash = ""
    for event in events:
        kind = event.get("event")
        if kind == "collected" and not collected:
            collected = [str(t) for t in event.get("tests", [])]
            tests = {t: TestResult(_short(t), TEST_NOT_RUN) for t in collected}
        elif kind == "start":
            started = str(event.get("test", ""))
        elif kind == "phase" and event.get("test") in tests:
            _apply_phase(tests[event["test"]], event)
        elif kind == "blocked":
            blocked.append(str(event.get("module")))
        elif kind == "collect_error":
            collect_errors.append(event)
        elif kind == "crash":
            crash = str(event.get("message", ""))
        elif kind == "done":
            done = event.get("exitstatus")
    results = list(tests.values())
    result = _result(unit, FAILING, substituted=list(substituted), tests=results, duration=duration)
    running = f" in {_short(started)}" if started else ""
    not_passed = [t for t in results if not t.passed]

    def finish(status: str, reason: str = "") -> StageResult:
        result.status, result.reason = status, reason
        result.score = result.max_score if status == PASSED else 0.0
        return result

    if unit.stage.id in settings.no_credit:
        return finish(ERROR, settings.no_credit[unit.stage.id])
    if blocked:
        return finish(ERROR, f"no credit: your code imports {blocked[0]} (the answer key) while it is graded")
    if killed_for_time:
        return finish(TIMED_OUT, f"stopped after {settings.stage_timeout:g} s{running} (an endless loop?)")
    if exitcode is not None and exitcode < 0:
        name = _signal_name(-exitcode)
        if -exitcode == getattr(signal, "SIGKILL", 9):
            return finish(ERROR, f"killed ({name}){running}: out of memory?")
        return finish(ERROR, f"crashed ({name}){running}")
    if done is None:
        if crash:
            return finish(ERROR, f"the test run failed: {_first_line(crash)}")
        if not collected:
            tail = _first_line("\n".join(reversed(output_tail.splitlines())))
            return finish(ERROR, f"the test run did not start (exit code {exitcode})" + (f": {tail}" if tail else ""))
        return finish(ERROR, f"the process exited (code {exitcode}){running} before the suite finished: "
                             "does your code call os._exit or sys.exit?")
    if collect_errors:
        return finish(ERROR, f"the suite could not be loaded: {_first_line(collect_errors[0].get('message', ''))}")
    if not results:
        return finish(ERROR, "the suite collected no tests")
    if not not_passed and done == 0:
        return finish(PASSED)
    first = not_passed[0] if not_passed else None
    timed = next((t for t in not_passed if t.exc_type == "Failed" and t.message.startswith("Timeout")), None)
    if timed:
        return finish(TIMED_OUT, f"{timed.name} took longer than {settings.timeout:g} s (an endless loop?)")
    memory = next((t for t in not_passed if t.exc_type in MEMORY_ERRORS
                   or any(w in t.message.lower() for w in MEMORY_WORDS)), None)
    if memory:
        limit = f" (limit: {settings.memory_mb} MiB more than at start)" if settings.memory_mb else ""
        return finish(ERROR, f"ran out of memory in {memory.name}{limit}")
    exiting = next((t for t in not_passed if t.exc_type == "SystemExit"), None)
    if exiting:
        return finish(ERROR, f"your code calls sys.exit() ({exiting.name}{', ' + exiting.where if exiting.where else ''})")
    stub = stubgen.not_written_message(unit.stage.id)
    if not any(t.passed for t in results) and all(t.exc_type == "NotImplementedError" or stub in t.message
                                                  for t in not_passed):
        return finish(NOT_STARTED)
    setup_errors = [t for t in not_passed if t.outcome == TEST_ERROR]
    if not any(t.passed for t in results) and len(setup_errors) == len(results):
        kinds = {(t.exc_type, t.message) for t in setup_errors}
        if len(kinds) == 1:
            return finish(ERROR, f"{unit.stage.id}.py does not load: {first.exc_type}: {_first_line(first.message)}")
    if first is not None and first.outcome in (TEST_SKIPPED, TEST_NOT_RUN) and done != 0 and not any(
            t.outcome in (TEST_FAILED, TEST_ERROR) for t in results):
        return finish(ERROR, f"{first.name} was {first.outcome}: a skipped test never counts as passed")
    return finish(FAILING, f"first failure: {first.name}" if first else f"pytest exit status {done}")


def _apply_phase(test: TestResult, event: dict) -> None:
    when, outcome = event.get("when"), event.get("outcome")
    test.duration += float(event.get("duration") or 0.0)
    if outcome == "passed":
        if when == "call" and test.outcome == TEST_NOT_RUN:
            test.outcome = TEST_PASSED
        return
    if test.outcome in (TEST_FAILED, TEST_ERROR):
        return  # keep the first problem
    if outcome == "skipped":
        test.outcome = TEST_SKIPPED
    elif when == "call":
        test.outcome = TEST_FAILED
    else:
        test.outcome = TEST_ERROR
    test.exc_type = str(event.get("exc_type", ""))
    test.message = str(event.get("message", ""))
    test.where = str(event.get("where", ""))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ---------------------------------------------------------------- running


@dataclass
class _Running:
    unit: Unit
    started: float
    substituted: list[str]
    result_path: Path
    output_path: Path
    nonce: str
    pid: int = 0
    process: subprocess.Popen | None = None


def warm_up() -> None:
    """Import what every child needs once, before forking (the point of the fork server)."""
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import torch.nn.functional  # noqa: F401

    from . import child  # noqa: F401

    gc.freeze()  # children skip the torch objects in every collection (pytest collects at exit)


def _job(unit: Unit, settings: Settings, learner: list[str], out: Path, nonce: str) -> dict:
    impl_is_reference = settings.reference is not None and settings.impl == settings.reference
    return {
        "files": list(unit.files),
        "root": str(settings.root),
        "rootdir": unit.rootdir,
        "impl": str(settings.impl),
        "no_fallback": not settings.fallback or impl_is_reference,
        "learner_stages": learner,
        "timeout": settings.timeout,
        "device": settings.device,
        "memory_mb": settings.memory_mb if memory_limit_available() else 0,
        "verbose": settings.verbose == unit.key,
        "block_reference": settings.block_reference and not impl_is_reference,
        "output": str(out),
        "nonce": nonce,
    }


def _start(unit: Unit, settings: Settings, passed: set[str], deps: tuple[str, ...], workdir: Path) -> _Running:
    learner, substituted = split_dependencies(deps, passed, settings.fallback)
    if settings.reference is not None and settings.impl == settings.reference:
        learner, substituted = list(deps), []
    index = len(list(workdir.iterdir()))
    result_path = workdir / f"{index}.results"
    output_path = workdir / f"{index}.out"
    nonce = secrets.token_hex(16)
    job = _job(unit, settings, learner, output_path, nonce)
    running = _Running(unit, time.monotonic(), substituted, result_path, output_path, nonce)
    if settings.fork:
        fd = os.open(result_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        pid = os.fork()
        if pid == 0:  # the child: never return into the parent's code
            code = 3
            try:
                os.setpgid(0, 0)
                from . import child

                code = child.run(job, fd)
            finally:
                os._exit(code)
        os.close(fd)
        running.pid = pid
    else:
        result_path.touch(mode=0o600)
        job_path = workdir / f"{index}.job.json"
        job_path.write_text(json.dumps(job | {"result_path": str(result_path)}), encoding="utf-8")
        kwargs = {"start_new_session": True} if os.name == "posix" else {}
        quiet = not job["verbose"]
        running.process = subprocess.Popen(
            [sys.executable, "-m", "grader.child", str(job_path)], cwd=settings.root,
            stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.DEVNULL if quiet else None, **kwargs)
        running.pid = running.process.pid
    return running


def _poll(running: _Running) -> int | None:
    """The child's exit code (negative: killed by that signal), or None while it runs."""
    if running.process is not None:
        return running.process.poll()
    pid, status = os.waitpid(running.pid, os.WNOHANG)
    if pid == 0:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _kill(running: _Running) -> None:
    try:
        if os.name == "posix":
            os.killpg(running.pid, signal.SIGKILL)
        elif running.process is not None:
            running.process.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _finish(running: _Running, exitcode: int | None, killed: bool, settings: Settings) -> StageResult:
    _kill(running)  # anything the stage left behind in its process group goes too
    data = running.result_path.read_bytes() if running.result_path.is_file() else b""
    tail = ""
    if running.output_path.is_file():
        tail = running.output_path.read_bytes()[-4000:].decode("utf-8", errors="replace")
    return interpret(running.unit, parse_channel(data, running.nonce), exitcode=exitcode, killed_for_time=killed,
                     settings=settings, substituted=running.substituted,
                     duration=time.monotonic() - running.started, output_tail=tail)


def grade(units: list[Unit], settings: Settings, stages: tuple[curriculum.Stage, ...],
          on_result: Callable[[StageResult], None] | None = None,
          known_passed: set[str] | None = None) -> list[StageResult]:
    """Grade every unit; return the results in the order of ``units``.

    With the fallback on, a unit starts once every dependency of its stage has a result, so that
    the dependencies that passed can be taken from the learner. ``known_passed`` seeds that set
    for stages not being graded now (watch mode).
    """
    deps_of = closure(stages)
    graded_ids = {u.stage.id for u in units if not u.extra}
    waves = settings.fallback and not (settings.reference is not None and settings.impl == settings.reference)
    passed = set(known_passed or ())
    finished: set[str] = set()  # stage ids whose main suite has a result
    results: dict[str, StageResult] = {}
    pending = list(units)
    running: list[_Running] = []
    if settings.fork and any(precheck(u, settings) is None for u in units):
        warm_up()

    def record(unit: Unit, result: StageResult) -> None:
        results[unit.key] = result
        if not unit.extra:
            finished.add(unit.stage.id)
            if result.status == PASSED:
                passed.add(unit.stage.id)
            else:
                passed.discard(unit.stage.id)
        if on_result:
            on_result(result)

    with tempfile.TemporaryDirectory(prefix="kata-grade-") as tmp:
        workdir = Path(tmp)
        while pending or running:
            progress = False
            for unit in list(pending):
                if len(running) >= max(1, settings.jobs):
                    break
                deps = deps_of.get(unit.stage.id, ())
                if waves and any(d in graded_ids and d not in finished for d in deps):
                    continue
                if unit.extra and unit.stage.id in graded_ids and unit.stage.id not in finished:
                    continue
                pending.remove(unit)
                progress = True
                early = precheck(unit, settings)
                if early is not None:
                    record(unit, early)
                    continue
                running.append(_start(unit, settings, passed, deps, workdir))
            if not running:
                if progress:
                    continue
                for unit in pending:  # cannot happen with a valid manifest; never hang on it
                    record(unit, _result(unit, ERROR, "its dependencies were never graded"))
                break
            time.sleep(0.005)
            for item in list(running):
                code = _poll(item)
                killed = False
                if code is None:
                    if time.monotonic() - item.started <= settings.stage_timeout:
                        continue
                    _kill(item)
                    code, killed = _wait(item), True
                running.remove(item)
                record(item.unit, _finish(item, code, killed, settings))
    return [results[u.key] for u in units]


def _wait(running: _Running) -> int:
    if running.process is not None:
        return running.process.wait()
    _, status = os.waitpid(running.pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
