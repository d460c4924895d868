"""Grade stage suites in isolated child processes and turn what they report into StageResults.

Each unit (a stage's suite, or one part of it: ``SPLIT``) runs once its dependencies are graded, with the plan
they decide (grader/loader.py: a dependency that passed is the learner's), through the one scheduler and stage
runner (grader/sandbox.py): a crash, endless loop or memory flood costs that stage only. A fork server imports
torch once (without fork, a fresh ``python -m grader.suite_runner``); a verdict whose key has not changed is reused
(grader/cache.py) instead of running the unit.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import cache, curriculum, loader, options, sandbox, stubgen
from .loader import closure
from .results import (ERROR, FAILING, MISSING, NOT_STARTED, PASSED, TEST_ERROR, TEST_FAILED, TEST_NOT_RUN,
                      TEST_PASSED, TEST_SKIPPED, TIMED_OUT, StageResult, TestResult)

KILLED = 9  # SIGKILL, the same number everywhere
MEMORY_ERRORS = ("MemoryError", "OutOfMemoryError")
MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc")
SPLIT = ("capstone and not reverse", "capstone and reverse")  # pytest -k parts run side by side (copy, reverse)


@dataclass(frozen=True)
class Unit:
    """One suite run for one stage: its own suite, or one hidden-test file from --extra-tests."""

    stage: curriculum.Stage
    files: tuple[str, ...]  # the test files pytest runs
    label: str  # what the report calls the suite
    points: float
    extra: bool = False
    rootdir: str | None = None  # for hidden tests, which live outside tests/
    parts: tuple[str, ...] = ("",)  # pytest -k expressions run as separate stages ('' = everything)

    @property
    def key(self) -> str:
        return f"{self.stage.id}:{self.label}"


@dataclass
class Settings:
    root: Path  # the repository root (tests/, curriculum.toml)
    impl: Path  # the tree graded
    reference: Path | None  # the fallback tree; None when absent
    fallback: bool  # take unfinished dependencies from reference/
    timeout: float = options.TIMEOUT  # per test, CPU seconds
    stage_timeout: float = options.STAGE_TIMEOUT  # per unit, CPU seconds (RLIMIT_CPU); the wall backstop is 3x + 60 s
    memory_mb: int = options.MEMORY_MB  # address space a child may add to what it starts with; 0 = no limit
    device: str = "cpu"
    jobs: int = 2
    fork: bool = True
    verbose: str | None = None  # key of the one unit whose pytest output goes to the terminal
    no_credit: dict[str, str] = field(default_factory=dict)  # stage id -> why (static integrity scan)
    budget: float = 0.0  # seconds for the whole run (batch, Gradescope); 0 = none
    hide: tuple[Path, ...] = ()  # more paths learner code must not read (hidden tests)
    cache: Path | None = None  # where verdicts are kept (grader/cache.py); None: never read nor written
    fresh: bool = False  # --fresh: read no kept verdict (still keep the new ones)

    @property
    def limits(self) -> sandbox.Limits:  # the wall-clock backstop: 3x the CPU limit + 60 s
        return sandbox.Limits(cpu=self.stage_timeout, wall=3 * self.stage_timeout + 60, memory_mb=self.memory_mb)

    @property
    def trusted(self) -> bool:  # grading the reference itself: nothing to hide, seal or substitute
        return self.reference is not None and self.impl == self.reference


def fork_available() -> bool:
    return hasattr(os, "fork") and os.environ.get("KATA_NO_FORK", "") in ("", "0")


# ---------------------------------------------------------------- planning (pure)


def units_for(stages: Iterable[curriculum.Stage], root: Path) -> list[Unit]:
    """The stage suites in learning order (hidden suites: grader/cli.py, extra_units)."""
    units = []
    for stage in stages:
        suite = Path(root) / "tests" / f"test_{stage.id}.py"
        text = suite.read_text(encoding="utf-8", errors="replace") if suite.is_file() else ""
        parts = ("not capstone", *SPLIT) if all(w in text for w in ("test_capstone", "copy", "reverse")) else ("",)
        units.append(Unit(stage, (str(suite),), f"tests/{suite.name}", float(stage.points), parts=parts))
    return units


def precheck(unit: Unit, settings: Settings) -> StageResult | None:
    """A result for a unit that cannot run at all (no suite, no stage file), else None."""
    if not Path(unit.files[0]).is_file():
        return _result(unit, MISSING, f"no suite {unit.label} yet", max_score=0.0)
    if not unit.stage.source(settings.impl).is_file():
        return _result(unit, ERROR, f"no {unit.stage.id}.py in {settings.impl.name}/ (deleted or renamed?)")


def _result(unit: Unit, status: str, reason: str = "", **kw) -> StageResult:
    return StageResult(**{"id": unit.stage.id, "number": unit.stage.number, "title": unit.stage.title, "status": status,
                          "score": unit.points if status == PASSED else 0.0, "max_score": unit.points,
                          "suite": unit.label, "extra": unit.extra, "reason": reason, **kw})


# ---------------------------------------------------------------- reading a child's report (pure)


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= 160 else line[:159] + "…"


def interpret(unit: Unit, events: list[dict], *, exitcode: int | None, killed_for_time: str | bool,
              settings: Settings, substituted: list[str], duration: float, output_tail: str = "",
              tampered: str = "", isolation: str = "", cpu: float = 0.0) -> StageResult:
    """Turn a stage's events and how it ended (``killed_for_time``: '', "cpu", "wall" or "budget") into its result."""
    latest = {event.get("event"): event for event in events}  # the last event of each kind
    earliest = {event.get("event"): event for event in reversed(events)}  # ... and the first
    collected = [str(t) for t in earliest.get("collected", {}).get("tests", [])]
    tests = {t: TestResult(t.split("::")[-1], TEST_NOT_RUN) for t in collected}
    for event in (e for e in events if e.get("event") == "phase" and e.get("test") in tests):
        test, when, outcome = tests[event["test"]], event.get("when"), event.get("outcome")
        test.duration += float(event.get("duration") or 0.0)
        if outcome == "passed":
            if when == "call" and test.outcome == TEST_NOT_RUN:
                test.outcome = TEST_PASSED
        elif test.outcome not in (TEST_FAILED, TEST_ERROR):  # else keep the first problem
            test.outcome = TEST_SKIPPED if outcome == "skipped" else TEST_FAILED if when == "call" else TEST_ERROR
            test.exc_type, test.message, test.where = (str(event.get(k, "")) for k in ("exc_type", "message", "where"))
    done = latest.get("done", {}).get("exitstatus")
    results = list(tests.values())
    started = str(latest.get("start", {}).get("test", ""))
    running = f" in {started.split('::')[-1]}" if started else ""
    not_passed = [t for t in results if not t.passed]

    def finish(status: str, reason: str = "", flag: str = "") -> StageResult:
        return _result(unit, status, reason, substituted=list(substituted), tests=results, duration=duration,
                       isolation=str(latest.get("sealed", {}).get("level", isolation)), flag=flag)

    if tampered:
        return finish(ERROR, f"no credit: {tampered}", "forged_results")
    if unit.stage.id in settings.no_credit:
        return finish(ERROR, settings.no_credit[unit.stage.id], "imports_reference")
    if "blocked" in earliest:
        return finish(ERROR, f"no credit: your code imports {earliest['blocked'].get('module')} (the answer key) "
                             "while it is graded", "imports_reference")
    if exitcode == -getattr(signal, "SIGXCPU", 24) or exitcode == -KILLED and cpu >= settings.stage_timeout / 2:
        killed_for_time = "cpu"
    if killed_for_time == "budget":
        return finish(TIMED_OUT, f"stopped{running}: the run's time budget ({settings.budget:g} s) ran out")
    if killed_for_time:
        what = (f"{settings.stage_timeout:g} s of CPU time" if killed_for_time == "cpu"
                else f"{settings.limits.wall:g} s of wall-clock time (waiting, not computing?)")
        return finish(TIMED_OUT, f"stopped after {what}{running} (an endless loop?)")
    if exitcode is not None and exitcode < 0:
        name = next((s.name for s in signal.Signals if s == -exitcode), f"signal {-exitcode}")
        return finish(ERROR, f"killed ({name}){running}: out of memory?" if exitcode == -KILLED
                      else f"crashed ({name}){running}")
    if done is None:
        if crash := latest.get("crash", {}).get("message"):
            return finish(ERROR, f"the test run failed: {_first_line(crash)}")
        if not collected:
            tail = _first_line("\n".join(reversed(output_tail.splitlines())))
            return finish(ERROR, f"the test run did not start (exit code {exitcode})" + (f": {tail}" if tail else ""))
        return finish(ERROR, f"the process exited (code {exitcode}){running} before the suite finished: "
                             "does your code call os._exit or sys.exit?")
    if problem := earliest.get("collect_error"):
        return finish(ERROR, f"the suite could not be loaded: {_first_line(problem.get('message', ''))}")
    if not results:
        return finish(ERROR, "the suite collected no tests")
    if not not_passed and done == 0:
        return finish(PASSED)
    if timed := next((t for t in not_passed if t.exc_type == "Failed" and t.message.startswith("Timeout")), None):
        return finish(TIMED_OUT, f"{timed.name} used more than {settings.timeout:g} s of CPU time (an endless loop?)")
    if memory := next((t for t in not_passed if t.exc_type in MEMORY_ERRORS
                       or any(word in t.message.lower() for word in MEMORY_WORDS)), None):
        limit = f" (limit: {settings.memory_mb} MiB more than at start)" if settings.memory_mb else ""
        return finish(ERROR, f"ran out of memory in {memory.name}{limit}")
    if exiting := next((t for t in not_passed if t.exc_type == "SystemExit"), None):
        return finish(ERROR, f"your code calls sys.exit() ({', '.join(filter(None, (exiting.name, exiting.where)))})")
    stub = stubgen.not_written_message(unit.stage.id)
    if not_passed == results and all(t.exc_type == "NotImplementedError" or stub in t.message for t in not_passed):
        return finish(NOT_STARTED)
    first = not_passed[0] if not_passed else None
    if results[0].outcome == TEST_ERROR and len({(t.outcome, t.exc_type, t.message) for t in results}) == 1:
        return finish(ERROR, f"{unit.stage.id}.py does not load: {first.exc_type}: {_first_line(first.message)}")
    if first is not None and done != 0 and not any(t.outcome in (TEST_FAILED, TEST_ERROR) for t in results):
        return finish(ERROR, f"{first.name} was {first.outcome}: a skipped test never counts as passed")
    return finish(FAILING, f"first failure: {first.name}" if first else f"pytest exit status {done}")


# ---------------------------------------------------------------- running


def _start(unit: Unit, part: str, settings: Settings, plan: loader.Plan, workdir: Path,
           hidden: tuple[Path, ...]) -> sandbox.Stage:
    """Start one part of a unit, its stages loaded by ``plan`` (handed to the child as data: --plan)."""
    root, reference, untrusted = settings.root, settings.reference, not settings.trusted
    home = sandbox.private_home(workdir)
    verbose = settings.verbose == unit.key
    args = [*unit.files, "--impl", str(settings.impl), "-p", "no:cacheprovider", "-p", "pytest_timeout",
            "-p", "no:unraisableexception", "--timeout", "0", "--device", settings.device,
            "-o", "console_output_style=classic", "--tb=short", *(["-v"] if verbose else ["-q", "--no-header"])]
    args += (["--rootdir", unit.rootdir, "-c", os.devnull] if unit.rootdir else []) + (["-k", part] if part else [])
    args += ["--plan", plan.to_json()]
    job = {"args": args, "root": str(root), "impl": str(settings.impl), "timeout": settings.timeout,
           "memory_mb": settings.memory_mb, "block_reference": untrusted}
    answers = (unit.stage.source(reference), reference / "__pycache__") if reference else ()  # its answer
    jail = sandbox.Jail(home, (*hidden, *answers) if untrusted else (), (root, settings.impl), seal=untrusted)
    output = None if verbose else workdir / f"{home.name}.out"
    if settings.fork:
        from . import suite_runner

        return sandbox.start(lambda writer: suite_runner.run(job, writer), settings.limits, jail=jail, output=output)
    return sandbox.start([sys.executable, "-m", "grader.suite_runner"], settings.limits, jail=jail, job=job,
                         output=output, env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})  # own folder


def _finish(stage: sandbox.Stage, unit: Unit, settings: Settings, substituted: list[str]) -> StageResult:
    signed, tampered = sandbox.verified(bytes(stage.data), stage.key)
    level = next((e.get("level", "") for by, e in signed if by == "keeper" and e.get("event") == "sandbox"),
                 sandbox.GROUP)  # no keeper (Windows): a plain process
    return interpret(unit, [e for by, e in signed if by == "stage"], exitcode=stage.exitcode,
                     killed_for_time=stage.stopped, settings=settings, substituted=substituted,
                     duration=time.monotonic() - stage.started, output_tail=stage.tail(), tampered=tampered,
                     isolation="" if settings.trusted else level, cpu=stage.cpu)


def merge(parts: list[StageResult]) -> StageResult:
    """One stage's result from the results of its parts (SPLIT): it passes when every part passes."""
    first = next((r for r in parts if r.status != PASSED), parts[0])  # its status, reason and score
    return replace(first, tests=[t for r in parts for t in r.tests], duration=max(r.duration for r in parts),
                   reused=all(r.reused for r in parts))


def isolation_notes(results: list[StageResult]) -> list[str]:
    """One report line a distinct isolation level reached by the stages that ran."""
    levels = sorted({r.isolation for r in results if r.isolation})
    return [f"isolation: {sandbox.LEVELS.get(level.split(' (')[0], level)}" for level in levels]


def grade(units: list[Unit], settings: Settings, stages: tuple[curriculum.Stage, ...],
          on_result: Callable[[StageResult], None] = lambda result: None,
          known_passed: set[str] | None = None) -> list[StageResult]:
    """Grade every unit; return the results in the order of ``units``.

    With the fallback on, a unit starts once every dependency of its stage has a result, so that those that
    passed are taken from the learner (``known_passed``: passed earlier, not graded now: watch mode). Past
    ``settings.budget`` seconds, what runs is stopped, what has not started is reported as not reached."""
    deps_of = closure(stages)
    graded_ids = {u.stage.id for u in units if not u.extra}
    known = set(known_passed or ()) - graded_ids  # passed in an earlier run (watch mode)
    waves = settings.fallback and not settings.trusted
    results: dict[str, StageResult] = {}
    parts: dict[str, list] = {u.key: [None] * len(u.parts) for u in units}
    pending = sorted(((u, i) for u in units for i in range(len(u.parts))),  # the capstone trainings first: longest
                     key=lambda unit_part: unit_part[0].parts[unit_part[1]] not in SPLIT)
    started: dict[sandbox.Stage, tuple[list[str], str]] = {}  # a running stage -> its substitutions, key
    began = time.monotonic()
    hidden = (*settings.hide, *{Path(u.rootdir).parent for u in units if u.rootdir},  # what could give answers away
              *(settings.root / path for path in (".git", "tests/mutants", "tests/project", "benchmarks")),
              *filter(None, [settings.cache]))
    digests, warm, kept = cache.Digests(), not settings.fork, []

    def verdict_key(unit: Unit, part: str, plan: loader.Plan) -> str:  # '': keep nothing
        if not settings.cache or unit.extra:
            return ""
        loads = (*deps_of.get(unit.stage.id, ()), unit.stage.id)  # the stage files this unit's plan loads
        return cache.key(settings, unit, part, {s: plan.sources[s] for s in loads}, digests)

    def record(unit: Unit, index: int, result: StageResult) -> None:
        parts[unit.key][index] = result
        if all(r is not None for r in parts[unit.key]):
            results[unit.key] = merge(parts[unit.key])
            on_result(results[unit.key])

    def waiting(unit: Unit) -> bool:  # for a stage this run grades that has no result yet
        needs = (deps_of.get(unit.stage.id, ()) if waves else ()) + ((unit.stage.id,) if unit.extra else ())
        return any(d in graded_ids and d not in {r.id for r in results.values() if not r.extra} for d in needs)

    def start(item: tuple[Unit, int]) -> sandbox.Stage | None:  # None: a verdict without running anything
        nonlocal warm
        unit, index = item
        if (early := precheck(unit, settings)) is not None:
            record(unit, index, early)
            return None
        mine = known | {r.id for r in results.values() if not r.extra and r.status == PASSED}
        plan = loader.for_grading(stages, unit.stage.id, settings.impl, settings.reference or settings.impl,
                                  mine if waves else None, graded_ids)
        name = verdict_key(unit, unit.parts[index], plan)
        reuse = name and not settings.fresh and settings.verbose != unit.key  # -v: pytest's own output
        if reuse and (reused := cache.load(settings.cache, name)) is not None:
            record(unit, index, replace(reused, substituted=list(plan.substituted)))
            return None
        if not warm:  # torch imported once, here, for every stage forked after: only if one runs
            from .suite_runner import warm_up

            warm_up(optimizers=sum(r is None for rs in parts.values() for r in rs) > 4)  # not for a stage or two
            warm = True
        stage = _start(unit, unit.parts[index], settings, plan, Path(tmp), hidden)
        started[stage] = (list(plan.substituted), name)
        return stage

    def finish(item: tuple[Unit, int], stage: sandbox.Stage | None) -> None:
        if stage is not None:
            (unit, index), (substituted, name) = item, started.pop(stage)
            record(unit, index, result := _finish(stage, unit, settings, substituted))
            if name and cache.store(settings.cache, name, result):
                kept.append(name)

    def expire(item: tuple[Unit, int], why: str) -> None:
        unit, index = item
        record(unit, index, _result(unit, TIMED_OUT, f"not graded: the run's time budget ({settings.budget:g} s) "
                                                     "ran out before it", flag="not_reached") if why == "budget"
               else _result(unit, ERROR, "its dependencies were never graded"))

    with tempfile.TemporaryDirectory(prefix="kata-grade-", ignore_cleanup_errors=True) as tmp:
        sandbox.run_all(pending, start, finish, settings.jobs, waiting=lambda item: waiting(item[0]),
                        deadline=began + settings.budget if settings.budget else 0.0, expire=expire)
    if kept:
        cache.prune(settings.cache)
    return [results[u.key] for u in units]
