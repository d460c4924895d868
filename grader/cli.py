"""The command line of ``python -m grader``: parse, grade, render, exit 0 / 1 / 2.

    python -m grader                      the scorecard of exercises/
    python -m grader 3                    one stage in detail (number, id or topic)
    python -m grader 3 -v                 ... with every failure in full and pytest's own output
    python -m grader hint 3               the next hint for stage 3 (--all: those shown so far, --reset)
    python -m grader --watch              re-grade the stage you are editing on every save
    python -m grader --impl reference     grade the answer key (or --impl PATH, a submission)
    python -m grader --format json        json, junit, gradescope or github for CI

For courses (docs/instructors.md):
    python -m grader batch SUBMISSIONS_DIR        grade a class into a gradebook (CSV and JSON)
    python -m grader gradescope-bundle            build the Gradescope autograder zip
    python -m grader release OUT_DIR              build the learner-facing repository

Exit status: 0 every graded stage passes (or the score reaches --pass-threshold), 1 otherwise,
2 for a usage error (one line on stderr).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import curriculum, hints, integrity, report, run
from .results import PASSED, Report, StageResult

HELP = {
    "target": "a stage to grade in detail (3, s03_attention or attention), or: hint STAGE; for courses: batch, gradescope-bundle, release (each has --help)",
    "impl": "what to grade: exercises (default), reference, or a directory shaped like exercises/",
    "no_fallback": "grade your own code all the way down: never load a stage from reference/",
    "format": "output format: text (default), json, junit, gradescope or github",
    "output": "write the report to this file instead of standard output",
    "watch": "re-grade the stage you are editing every time you save it (Ctrl-C stops)",
    "jobs": "stages graded at the same time (default: the number of CPU cores)",
    "timeout": "CPU seconds one test may use (default 60)",
    "stage_timeout": "CPU seconds one stage's suite may use (default 300; the wall-clock backstop is 3x + 60 s)",
    "memory": "MiB of memory one stage may use on top of what it starts with; 0 = no limit (default 4096)",
    "device": "torch device for the suites: cpu (default), cuda or mps",
    "no_fork": "start a fresh interpreter per stage instead of forking (also: KATA_NO_FORK=1)",
    "ci": "course mode: a tampered test file fails the run",
    "threshold": "exit 0 when the score is at least this fraction of the maximum (0 to 1), for partial credit",
    "extra": "a directory of hidden instructor tests (test_<stage id>*.py), graded with their own points",
    "refresh": "rewrite grader/test_hashes.json from the test files as they are now, then exit",
    "colour": "colour the scorecard: auto (default: on a terminal, unless NO_COLOR is set), always, never",
    "visibility": "Gradescope visibility of hidden suites (default after_published)",
    "verbose": "a stage in full: every failing test's message and pytest's own output (default: one screen)",
    "all": "with hint: show again every hint shown so far for the stage",
    "reset": "with hint: start the stage's hints again from the first",
}


# Subcommands for courses, each a module with main(argv, root) -> exit status (docs/instructors.md).
COURSE_COMMANDS = {"batch": "batch", "gradescope-bundle": "gradescope", "release": "release"}


UsageError, _Parser = curriculum.UsageError, curriculum.Parser  # shared by every command


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m grader", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="*", help=HELP["target"])
    p.add_argument("--impl", default="exercises", help=HELP["impl"])
    p.add_argument("--no-fallback", action="store_true", help=HELP["no_fallback"])
    p.add_argument("--format", default="text", choices=report.FORMATS, help=HELP["format"])
    p.add_argument("--output", help=HELP["output"])
    p.add_argument("--watch", action="store_true", help=HELP["watch"])
    p.add_argument("-v", "--verbose", action="store_true", help=HELP["verbose"])
    p.add_argument("--all", action="store_true", help=HELP["all"])
    p.add_argument("--reset", action="store_true", help=HELP["reset"])
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help=HELP["jobs"])
    p.add_argument("--timeout", type=float, default=60.0, help=HELP["timeout"])
    p.add_argument("--stage-timeout", type=float, default=300.0, help=HELP["stage_timeout"])
    p.add_argument("--memory-limit", type=int, default=4096, help=HELP["memory"])
    p.add_argument("--device", default=os.environ.get("KATA_DEVICE", "cpu"), choices=("cpu", "cuda", "mps"), help=HELP["device"])
    p.add_argument("--no-fork", action="store_true", help=HELP["no_fork"])
    p.add_argument("--ci", action="store_true", help=HELP["ci"])
    p.add_argument("--pass-threshold", type=float, help=HELP["threshold"])
    p.add_argument("--extra-tests", help=HELP["extra"])
    p.add_argument("--refresh-hashes", action="store_true", help=HELP["refresh"])
    p.add_argument("--color", "--colour", dest="color", default="auto", choices=("auto", "always", "never"), help=HELP["colour"])
    p.add_argument("--hidden-visibility", default="after_published",
                   choices=("hidden", "after_due_date", "after_published", "visible"), help=HELP["visibility"])
    p.add_argument("--max-regrades", type=int, default=0, help=argparse.SUPPRESS)  # watch mode stops after N (tests)
    p.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)  # seconds for the run (batch, Gradescope)
    return p


@dataclass
class Command:
    action: str  # grade, stage, hint, refresh, watch
    stage: curriculum.Stage | None
    args: argparse.Namespace
    impl: Path
    reference: Path | None


def parse(argv: list[str], stages: tuple[curriculum.Stage, ...], root: Path = curriculum.ROOT) -> Command:
    """Validate the command line; raise UsageError with one clear sentence."""
    args = build_parser().parse_args(argv)
    target = list(args.target)
    action, stage = "grade", None
    if target[:1] == ["hint"]:
        if len(target) != 2:
            raise UsageError("usage: python -m grader hint STAGE (a number, id or topic, e.g. 3 or attention)")
        action, stage = "hint", _find(stages, target[1])
    elif len(target) == 1:
        action, stage = "stage", _find(stages, target[0])
    elif target:
        raise UsageError(f"expected at most one stage, got {' '.join(target)}")
    if args.refresh_hashes:
        if target or args.watch:
            raise UsageError("--refresh-hashes cannot be combined with a stage or --watch")
        action = "refresh"
    if args.watch:
        if action == "hint":
            raise UsageError("--watch cannot be combined with hint")
        if args.format != "text" or args.output or args.ci:
            raise UsageError("--watch is for learners: it cannot be combined with --format, --output or --ci")
        action = "watch"
    if action == "hint" and (args.format != "text" or args.output):
        raise UsageError("hint prints text: it cannot be combined with --format or --output")
    if (args.all or args.reset) and (action != "hint" or args.all and args.reset):
        raise UsageError("--all and --reset go with hint, one at a time: python -m grader hint 3 --all")
    if args.pass_threshold is not None and not 0.0 <= args.pass_threshold <= 1.0:
        raise UsageError(f"--pass-threshold must be a fraction between 0 and 1, got {args.pass_threshold:g}")
    if args.jobs < 1 or args.timeout <= 0 or args.stage_timeout <= 0 or args.memory_limit < 0:
        raise UsageError("--jobs, --timeout and --stage-timeout must be positive, --memory-limit 0 or more")
    reference = root / "reference"
    reference = reference if reference.is_dir() and any(reference.glob("s[0-9][0-9]_*.py")) else None
    impl = curriculum.resolve_impl(args.impl, stages, root)
    if args.impl == "reference" and reference is None:
        raise UsageError("--impl reference: this copy of the kata has no reference/ directory")
    if args.output:
        check_output(Path(args.output), (root / "exercises", reference, impl))
    if args.extra_tests and not Path(args.extra_tests).is_dir():
        raise UsageError(f"--extra-tests {args.extra_tests}: no such directory")
    if action not in ("hint", "refresh") and args.device != "cpu":
        import torch

        if not (torch.cuda.is_available() if args.device == "cuda" else torch.backends.mps.is_available()):
            raise UsageError(f"--device {args.device}: not available on this machine (use cpu)")
    return Command(action, stage, args, impl, reference)


def check_output(path: Path, protected) -> None:
    """Refuse, before any grading, an --output the report cannot be written to or must not overwrite."""
    target = path.expanduser().resolve()
    if target.is_dir():
        raise UsageError(f"--output {path}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise UsageError(f"--output {path}: the folder {path.parent} does not exist")
    for tree in filter(None, protected):
        if tree.resolve() in target.parents:
            raise UsageError(f"--output {path}: is inside {tree.name}/, which holds stage files; write it elsewhere")


def _find(stages, key: str) -> curriculum.Stage:
    try:
        return curriculum.find(stages, key)
    except KeyError:
        raise UsageError(f"unknown stage {key!r}: give a number (1-{len(stages)}), an id like "
                         f"{stages[2].id if len(stages) > 2 else stages[0].id} or a topic") from None


# ---------------------------------------------------------------- hidden tests


def points_of(path: Path, table: dict[str, float], default: float) -> float:
    """A hidden suite's points: points.toml in its directory, else a module-level POINTS, else the stage's."""
    if path.name in table:
        return float(table[path.name])
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return default
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "POINTS" for t in node.targets) \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, (int, float)):
            return float(node.value.value)
    return default


EXTRA_CONFTEST = '''"""Hidden tests get the kata's fixtures and options (written by the grader)."""
import sys
for _path in ({root!r}, {tests!r}):
    if _path not in sys.path:
        sys.path.insert(0, _path)
from tests.conftest import *  # noqa: F401,F403
from tests.conftest import _fixed_seed  # noqa: F401
'''


def extra_units(directory: Path, stages, workdir: Path, root: Path) -> list[run.Unit]:
    """Copy each hidden suite to a private directory as test_<stage id>.py, beside a conftest that
    gives it the kata's fixtures, and describe it as a unit with its own points."""
    table = {}
    toml = directory / "points.toml"
    if toml.is_file():
        try:
            table = {str(k): float(v) for k, v in tomllib.loads(toml.read_text(encoding="utf-8")).get("points", {}).items()}
        except (tomllib.TOMLDecodeError, ValueError, TypeError) as error:
            raise UsageError(f"--extra-tests: {toml} is not valid ([points] name = number): {error}") from None
    units = []
    for stage in stages:
        for index, path in enumerate(sorted(directory.glob(f"test_{stage.id}*.py"))):
            home = workdir / f"{stage.id}-{index}"
            home.mkdir(parents=True)
            (home / f"test_{stage.id}.py").write_bytes(path.read_bytes())
            (home / "conftest.py").write_text(
                EXTRA_CONFTEST.format(root=str(root), tests=str(root / "tests")), encoding="utf-8")
            units.append(run.Unit(stage, (str(home / f"test_{stage.id}.py"),), path.name,
                                  points_of(path, table, float(stage.points)), extra=True, rootdir=str(home)))
    return units


# ---------------------------------------------------------------- grading



def settings_for(command: Command, root: Path) -> tuple[run.Settings, list[str]]:
    args = command.args
    notes = []
    fallback = not args.no_fallback and command.reference is not None
    fork = run.fork_available() and not args.no_fork
    if not fork:
        why = "--no-fork" if args.no_fork else ("KATA_NO_FORK" if hasattr(os, "fork") else "this platform has no fork")
        notes.append(f"no fork ({why}): each stage starts a fresh Python, which is slower")
    memory = args.memory_limit
    if memory and not run.memory_limit_available():
        notes.append("no memory limit: this platform cannot set one")
    no_credit = {}
    if command.reference is None or command.impl != command.reference:
        stages = curriculum.load(root / "curriculum.toml")
        for stage in stages:
            verdict = integrity.scan_stage(stage, command.impl)
            if verdict:
                no_credit[stage.id] = verdict
        # what one process cannot prevent (patching the tests in memory) is flagged for a reviewer
        notes += [f"{integrity.FLAG_NOTE} {stage_id}: {why}" for stage_id, why in integrity.flag_stages(stages, command.impl)]
    settings = run.Settings(root=root, impl=command.impl, reference=command.reference, fallback=fallback,
                            timeout=args.timeout, stage_timeout=args.stage_timeout, memory_mb=memory,
                            device=args.device, jobs=args.jobs, fork=fork, no_credit=no_credit, budget=args.budget,
                            hide=(Path(args.extra_tests).resolve(),) if args.extra_tests else ())
    return settings, notes


def fallback_note(command: Command, settings: run.Settings) -> str:
    if command.reference is None:
        return "fallback: off (this copy has no reference/): every stage is graded with your own code"
    if command.reference == command.impl:
        return "grading the reference itself: nothing is substituted"
    if not settings.fallback:
        return "fallback: off (--no-fallback): every stage is graded with your own code all the way down"
    return ("fallback: on: a stage uses your earlier stages where they pass and reference/ where they do not "
            "(every substitution is listed)")


def integrity_notes(command: Command, root: Path) -> tuple[list[str], bool]:
    if not integrity.HASHES.is_file() and not command.args.ci:
        return [], False  # a working copy without a manifest (while stages are written): nothing to check
    problems = integrity.check_hashes(root)
    if not problems:
        return [], False
    mode = "fails the run (--ci)" if command.args.ci else "reported only (--ci would fail the run)"
    lines = [f"integrity: {p}" for p in problems[:10]]
    if len(problems) > 10:
        lines.append(f"integrity: ... and {len(problems) - 10} more")
    lines.append(f"integrity: the test files do not match grader/test_hashes.json: {mode}")
    return lines, command.args.ci


def impl_display(command: Command, root: Path) -> str:
    try:
        return command.impl.relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        try:
            return command.impl.relative_to(root).as_posix()
        except ValueError:
            return str(command.impl)


def grade(command: Command, stages, root: Path, units: list[run.Unit], on_result=None,
          known_passed=None) -> Report:
    settings, notes = settings_for(command, root)
    if command.action == "stage" and command.args.format == "text" and command.args.verbose:  # pytest's -v, then ours
        settings.verbose = next(u.key for u in units if u.stage.id == command.stage.id and not u.extra)
    more, failed = integrity_notes(command, root)
    results = run.grade(units, settings, stages, on_result=on_result, known_passed=known_passed)
    return Report(impl=command.args.impl, impl_path=str(command.impl), fallback=settings.fallback,
                  fallback_note=fallback_note(command, settings), stages=results,
                  notes=notes + more + run.isolation_notes(results),
                  integrity_failed=failed, pass_threshold=command.args.pass_threshold)


def units_to_run(command: Command, stages, root: Path, workdir: Path) -> list[run.Unit]:
    extra = extra_units(Path(command.args.extra_tests).resolve(), stages, workdir, root) if command.args.extra_tests else []
    units = run.units_for(stages, root)
    if command.action == "stage":
        deps = set(run.closure(stages)[command.stage.id])
        units = [u for u in units if u.stage.id in deps or u.stage.id == command.stage.id]
        extra = [u for u in extra if u.stage.id == command.stage.id]
    order = {s.id: i for i, s in enumerate(stages)}
    return sorted(units + extra, key=lambda u: (order[u.stage.id], u.extra))


def render(command: Command, rep: Report, root: Path) -> str:
    fmt = command.args.format
    display = impl_display(command, root)
    if command.action == "stage":
        rep.stages = [s for s in rep.stages if s.id == command.stage.id]
    if fmt == "json":
        return report.to_json(rep)
    if fmt == "junit":
        return report.to_junit(rep)
    if fmt == "gradescope":
        import json

        return json.dumps(report.to_gradescope(rep, command.args.hidden_visibility), indent=2) + "\n"
    if fmt == "github":
        summary, annotations = report.to_github(rep, display)
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if target and not command.args.output:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(summary)
            return "\n".join(annotations) + ("\n" if annotations else "")
        return summary + "\n".join(annotations) + ("\n" if annotations else "")
    colour = use_colour(command.args.color) and not command.args.output
    if command.action == "stage":
        return stage_text(command, rep.stages, display, colour)
    return report.scorecard(rep, colour=colour, impl_display=display)


def stage_text(command: Command, results: list[StageResult], display: str, colour: bool) -> str:
    """A stage on one screen, or in full with -v."""
    if command.args.verbose:
        return "".join(report.detail(r, colour=colour) for r in results)
    return "".join(report.brief(r, colour=colour, impl_display=display) for r in results)


def use_colour(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def emit(command: Command, text: str) -> None:
    if command.args.output:
        Path(command.args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


# ---------------------------------------------------------------- watch mode


def snapshot(impl: Path, stages) -> dict[str, float]:
    found = {}
    for stage in stages:
        try:
            found[stage.id] = stage.source(impl).stat().st_mtime_ns
        except OSError:
            found[stage.id] = 0
    return found


def watch(command: Command, stages, root: Path, workdir: Path, interval: float = 0.3) -> int:
    """Full scorecard once, then re-grade each stage file that changes, with torch kept warm."""
    units = units_to_run(command, stages, root, workdir)
    seen = snapshot(command.impl, stages)  # before grading: a save while the scorecard runs is a change
    rep = grade(command, stages, root, units)
    emit(command, render(command, rep, root))
    latest: dict[str, StageResult] = {s.id: s for s in rep.stages if not s.extra}
    regrades = 0
    emit(command, f"Watching {impl_display(command, root)}/ for changes (Ctrl-C stops).\n")
    try:
        while True:
            time.sleep(interval)
            now = snapshot(command.impl, stages)
            changed = [s for s in stages if now[s.id] != seen[s.id]]
            seen = now
            for stage in changed:
                started = time.monotonic()
                mine = [u for u in units if u.stage.id == stage.id]
                passed = {sid for sid, r in latest.items() if r.status == PASSED}
                settings, _ = settings_for(command, root)
                results = run.grade(mine, settings, stages, known_passed=passed)
                for result in results:
                    if not result.extra:
                        latest[result.id] = result
                score = sum(r.score for r in latest.values())
                top = sum(r.max_score for r in latest.values())
                text = stage_text(command, results, impl_display(command, root), use_colour(command.args.color))
                emit(command, f"\n[{time.strftime('%H:%M:%S')}] {stage.id}.py changed: re-graded in "
                              f"{time.monotonic() - started:.1f} s\n{text}Total now: {score:g}/{top:g}\n")
                regrades += 1
                if command.args.max_regrades and regrades >= command.args.max_regrades:
                    return 0
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None, root: Path = curriculum.ROOT) -> int:
    return curriculum.run_main("python -m grader", _main, sys.argv[1:] if argv is None else argv, root)


def _main(argv: list[str], root: Path) -> int:
    stages = curriculum.load(root / "curriculum.toml")
    if argv[:1] and argv[0] in COURSE_COMMANDS:  # python -m grader batch | gradescope-bundle | release
        import importlib

        return importlib.import_module(f".{COURSE_COMMANDS[argv[0]]}", __package__).main(argv[1:], root)
    command = parse(argv, stages, root)
    if command.action == "hint":
        sys.stdout.write(hints.command(command.stage, command.args.all, command.args.reset, hints.state_file(root)))
        return 0
    if command.action == "refresh":
        written = integrity.refresh(root)
        print(f"wrote {integrity.HASHES.relative_to(root)} ({len(written)} files)")
        return 0
    with tempfile.TemporaryDirectory(prefix="kata-extra-") as tmp:
        if command.action == "watch":
            return watch(command, stages, root, Path(tmp))
        units = units_to_run(command, stages, root, Path(tmp))
        rep = grade(command, stages, root, units)
        emit(command, render(command, rep, root))
        if command.action == "stage":
            return 0 if all(s.status == PASSED for s in rep.stages) and not rep.integrity_failed else 1
        return 0 if rep.succeeded() else 1
