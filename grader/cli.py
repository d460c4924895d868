"""The command line of ``python -m grader``: parse, grade, render, exit 0 / 1 / 2.

Its commands are listed in docs/grader.md (learners) and docs/instructors.md (courses: batch,
gradescope-bundle, release); every option in ``python -m grader --help``. Exit status: 0 every graded
stage passes (or the score reaches --pass-threshold), 1 otherwise, 2 for a usage error (one line on stderr).
"""

import argparse
import functools
import importlib
import os
import re
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from . import cache, curriculum, grading, hints, integrity, options, render
from .options import UsageError  # shared by every command
from .results import PASSED, Report, StageResult

_FLAG = {"action": "store_true"}
# The options of python -m grader, in --help order: flags -> argparse keywords.
OPTIONS = {
    "target": dict(nargs="*", help="a stage to grade in detail (3, s03_attention or attention), or: hint STAGE; "
                                   "for courses: batch, gradescope-bundle, release (each has --help)"),
    "--impl": dict(default="exercises", help="what to grade: exercises (default), reference, or a directory like it"),
    "--no-fallback": _FLAG | dict(help="grade your own code all the way down: never load a stage from reference/"),
    "--format": dict(default="text", choices=render.FORMATS, help="output format (default: text)"),
    "--output": dict(help="write the report to this file instead of standard output"),
    "--watch": _FLAG | dict(help="re-grade the stage you are editing every time you save it (Ctrl-C stops)"),
    "-v --verbose": _FLAG | dict(help="in full: every failing test's message, pytest's output (default: one screen)"),
    "--all": _FLAG | dict(help="with hint: show again every hint shown so far for the stage"),
    "--reset": _FLAG | dict(help="with hint: start the stage's hints again from the first"),
    "--jobs": dict(type=int, default=os.cpu_count() or 1, help="stages graded at once (default: the CPU cores)"),
    **options.LIMITS,
    "--device": dict(default=os.environ.get("KATA_DEVICE", "cpu"), choices=("cpu", "cuda", "mps"),
                     help="torch device for the suites: cpu (default), cuda or mps"),
    "--no-fork": _FLAG | dict(help="start a fresh interpreter per stage instead of forking (also: KATA_NO_FORK=1)"),
    "--fresh": _FLAG | dict(help="grade every stage again: reuse no verdict kept from an earlier run (.kata-cache/)"),
    "--ci": _FLAG | dict(help="course mode: a tampered test file fails the run"),
    "--pass-threshold": dict(type=float, help="exit 0 when the score reaches this fraction (0 to 1) of the maximum"),
    "--extra-tests": dict(help="a directory of hidden instructor tests (test_<stage id>*.py), with their own points"),
    "--refresh-hashes": _FLAG | dict(help="rewrite grader/test_hashes.json from the test files as they are, then exit"),
    "--color --colour": dict(dest="color", default="auto", choices=("auto", "always", "never"),
                             help="colour the scorecard: auto (default: on a terminal, unless NO_COLOR is set), "
                                  "always, never"),
    "--hidden-visibility": dict(default="after_published", help="Gradescope visibility of hidden suites (default "
                                "after_published)", choices=("hidden", "after_due_date", "after_published", "visible")),
    "--max-regrades": dict(type=int, default=0, help=argparse.SUPPRESS),  # watch mode stops after N (tests)
    "--budget": dict(type=float, default=0.0, help=argparse.SUPPRESS),  # seconds for the run (batch, Gradescope)
}

# Subcommands for courses, each a module with main(argv, root) -> exit status (docs/instructors.md).
COURSE_COMMANDS = {"batch": "batch", "gradescope-bundle": "gradescope", "release": "release"}


def parse(argv: list[str], stages: tuple[curriculum.Stage, ...], root: Path = curriculum.ROOT) -> argparse.Namespace:
    """Validate the command line (else UsageError: one clear sentence). Adds to the options: action (grade, stage,
    hint, refresh, watch), stage, tree (resolved), reference (None if absent), display (the tree as named), colour."""
    args = options.parser("python -m grader", __doc__, OPTIONS).parse_args(argv)
    target, hint = args.target, args.target[:1] == ["hint"]
    not_text = args.format != "text" or args.output
    for wrong, message in [
        (hint and len(target) != 2, "usage: python -m grader hint STAGE (a number, id or topic, e.g. 3 or attention)"),
        (len(target) > 1 and not hint, f"expected at most one stage, got {' '.join(target)}"),
        (args.refresh_hashes and (target or args.watch), "--refresh-hashes cannot be combined with a stage or --watch"),
        (args.watch and hint, "--watch cannot be combined with hint"),
        (args.watch and (not_text or args.ci),
         "--watch is for learners: it cannot be combined with --format, --output or --ci"),
        (hint and not_text, "hint prints text: it cannot be combined with --format or --output"),
        ((args.all or args.reset) and (not hint or args.all and args.reset),
         "--all and --reset go with hint, one at a time: python -m grader hint 3 --all"),
        (args.extra_tests and not Path(args.extra_tests).is_dir(),
         f"--extra-tests {args.extra_tests}: no such directory"),
        (not 0 <= (args.pass_threshold or 0) <= 1,
         f"--pass-threshold must be a fraction between 0 and 1, got {args.pass_threshold or 0:g}"),
    ]:
        if wrong:
            raise UsageError(message)
    options.check_limits(args, "--jobs", args.jobs)
    stage = options.find(stages, target[-1]) if target else None
    action = "hint" if hint else "refresh" if args.refresh_hashes else "watch" if args.watch else \
        "stage" if target else "grade"
    reference, impl = options.reference_of(root), options.resolve_impl(args.impl, stages, root)
    if args.output:  # refused before any grading: a folder, a missing folder, a file inside a tree of stages
        path, out = Path(args.output), Path(args.output).expanduser().resolve()
        if out.is_dir():
            raise UsageError(f"--output {path}: is a folder; give a file name")
        if not out.parent.is_dir():
            raise UsageError(f"--output {path}: the folder {path.parent} does not exist")
        for tree in filter(None, (root / "exercises", reference, impl)):
            if tree.resolve() in out.parents:
                raise UsageError(f"--output {path}: is inside {tree.name}/, which holds stage files; "
                                 "write it elsewhere")
    if action not in ("hint", "refresh"):
        options.check_device(args.device)
    display = next((impl.relative_to(base).as_posix() or "." for base in (Path.cwd().resolve(), root)
                    if impl.is_relative_to(base)), str(impl))
    return argparse.Namespace(**vars(args), action=action, stage=stage, tree=impl, reference=reference,
                              display=display, colour=use_colour(args.color) and not args.output)


# ---------------------------------------------------------------- hidden tests


def points_of(path: Path, table: dict[str, float], default: float) -> float:
    """A hidden suite's points: points.toml in its directory, else a module-level POINTS, else the stage's."""
    if path.name in table:
        return float(table[path.name])
    try:
        found = re.search(r"^POINTS *= *(\d+(?:\.\d*)?) *(?:#.*)?$", path.read_text(encoding="utf-8"), re.MULTILINE)
    except (OSError, ValueError):
        return default
    return float(found[1]) if found else default


EXTRA_CONFTEST = '''"""Hidden tests get the kata's fixtures and options (written by the grader)."""
import sys
for _path in ({root!r}, {tests!r}):
    if _path not in sys.path:
        sys.path.insert(0, _path)
from tests.conftest import *  # noqa: F401,F403
from tests.conftest import _fixed_seed  # noqa: F401
'''


def extra_units(directory: Path, stages, workdir: Path, root: Path) -> list[grading.Unit]:
    """Each hidden suite as a unit with its own points, copied to a private folder beside the kata's fixtures."""
    table = {}
    toml = directory / "points.toml"
    if toml.is_file():
        try:
            table = tomllib.loads(toml.read_text(encoding="utf-8")).get("points", {})
            table = {str(k): float(v) for k, v in table.items()}
        except (tomllib.TOMLDecodeError, ValueError, TypeError, AttributeError) as error:
            raise UsageError(f"--extra-tests: {toml} is not valid ([points] name = number): {error}") from None
    conftest = EXTRA_CONFTEST.format(root=str(root), tests=str(root / "tests"))
    units = []
    for stage in stages:
        for index, path in enumerate(sorted(directory.glob(f"test_{stage.id}*.py"))):
            home = workdir / f"{stage.id}-{index}"
            home.mkdir(parents=True)
            (home / f"test_{stage.id}.py").write_bytes(path.read_bytes())
            (home / "conftest.py").write_text(conftest, encoding="utf-8")
            units.append(grading.Unit(stage, (str(home / f"test_{stage.id}.py"),), path.name,
                                  points_of(path, table, float(stage.points)), extra=True, rootdir=str(home)))
    return units


# ---------------------------------------------------------------- grading


def grade(args: argparse.Namespace, stages, root: Path, units: list[grading.Unit], known_passed=None) -> Report:
    """Grade ``units``; the report notes what this platform, the submission's files or the test files limit."""
    notes, no_credit, flags = [], {}, {}
    fork = grading.fork_available() and not args.no_fork
    if not fork:
        why = "--no-fork" if args.no_fork else ("KATA_NO_FORK" if hasattr(os, "fork") else "this platform has no fork")
        notes.append(f"no fork ({why}): each stage starts a fresh Python, which is slower")
    if args.memory_limit and not sys.platform.startswith("linux"):
        notes.append("no memory limit: this platform cannot set one")
    if args.tree != args.reference:
        no_credit = {stage.id: why for stage in stages if (why := integrity.scan_stage(stage, args.tree))}
        # what one process cannot prevent (patching the tests in memory) is flagged for a reviewer
        flags["patching"] = [f"{stage_id}: {why}" for stage_id, why in integrity.flag_stages(stages, args.tree)]
        notes += [f"{integrity.FLAG_NOTE} {flagged}" for flagged in flags["patching"]]
    settings = grading.Settings(root=root, impl=args.tree, reference=args.reference,
                            fallback=not args.no_fallback and args.reference is not None,
                            timeout=args.timeout, stage_timeout=args.stage_timeout, memory_mb=args.memory_limit,
                            device=args.device, jobs=args.jobs, fork=fork, no_credit=no_credit, budget=args.budget,
                            hide=(Path(args.extra_tests).resolve(),) if args.extra_tests else (),
                            cache=None if course_mode(args) else cache.folder(root), fresh=args.fresh)
    if args.action == "stage" and args.format == "text" and args.verbose:  # pytest's -v, then ours
        settings.verbose = next(u.key for u in units if u.stage.id == args.stage.id and not u.extra)
    # the test files that differ from the manifest (none to check in a working copy without one)
    problems = integrity.check_hashes(root) if integrity.HASHES.is_file() or args.ci else []
    mode = "fails the run (--ci)" if args.ci else "reported only (--ci would fail the run)"
    flags["tampered_tests"] = [f"integrity: {p}" for p in problems[:10]] + [
        f"integrity: ... and {len(problems) - 10} more"] * (len(problems) > 10) + [
        f"integrity: the test files do not match grader/test_hashes.json: {mode}"] * bool(problems)
    notes += flags["tampered_tests"]
    note = ("fallback: off (this copy has no reference/): every stage is graded with your own code"
            if args.reference is None else
            "grading the reference itself: nothing is substituted" if args.reference == args.tree else
            "fallback: off (--no-fallback): every stage is graded with your own code all the way down"
            if not settings.fallback else
            "fallback: on: a stage uses your earlier stages where they pass and reference/ where they do not "
            "(every substitution is listed)")
    results = grading.grade(units, settings, stages, known_passed=known_passed)
    return Report(impl=args.impl, fallback=settings.fallback, fallback_note=note,
                  stages=results, notes=notes + grading.isolation_notes(results),
                  integrity_failed=bool(problems) and args.ci, pass_threshold=args.pass_threshold, flags=flags)


def course_mode(args: argparse.Namespace) -> bool:
    """A course's grade (--ci, hidden tests, a time budget, a CI format) never reads nor keeps a verdict."""
    return bool(args.ci or args.extra_tests or args.budget > 0 or args.format in ("gradescope", "github", "junit"))


def units_to_run(args: argparse.Namespace, stages, root: Path, workdir: Path) -> list[grading.Unit]:
    extra = extra_units(Path(args.extra_tests).resolve(), stages, workdir, root) if args.extra_tests else []
    units = grading.units_for(stages, root)
    if args.action == "stage":
        deps = set(grading.closure(stages)[args.stage.id])
        units = [u for u in units if u.stage.id in deps or u.stage.id == args.stage.id]
        extra = [u for u in extra if u.stage.id == args.stage.id]
    return sorted(units + extra, key=lambda u: (stages.index(u.stage), u.extra))


def output(args: argparse.Namespace, rep: Report) -> str:
    if args.action == "stage":
        rep.stages = [s for s in rep.stages if s.id == args.stage.id]
    if args.format == "github":
        summary, annotations = render.to_github(rep, args.display)
        if step_summary := not args.output and os.environ.get("GITHUB_STEP_SUMMARY"):  # to the job's page
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(summary)
        return summary * (not step_summary) + "".join(line + "\n" for line in annotations)
    if args.format == "gradescope":
        return render.to_gradescope(rep, args.hidden_visibility)
    if args.format != "text":
        return render.to_json(rep) if args.format == "json" else render.to_junit(rep)
    if args.action == "stage":
        return stage_text(args, rep.stages)
    return render.scorecard(rep, colour=args.colour, impl_display=args.display)


def stage_text(args: argparse.Namespace, results: list[StageResult]) -> str:
    """A stage on one screen, or in full with -v."""
    show = render.detail if args.verbose else functools.partial(render.brief, impl_display=args.display)
    return "".join(show(r, colour=args.colour) for r in results)


def use_colour(choice: str) -> bool:
    auto = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" and sys.stdout.isatty()
    return choice == "always" or choice == "auto" and auto


def emit(args: argparse.Namespace, text: str) -> None:
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="", flush=True)


# ---------------------------------------------------------------- watch mode


def snapshot(impl: Path, stages) -> dict[str, float]:
    found = {}
    for stage in stages:
        try:
            found[stage.id] = stage.source(impl).stat().st_mtime_ns
        except OSError:
            found[stage.id] = 0
    return found


def watch(args: argparse.Namespace, stages, root: Path, units, rep: Report, seen: dict, interval: float = 0.3) -> int:
    """After the full scorecard ``rep``: re-grade each stage file that changes from ``seen``, with torch kept warm."""
    emit(args, f"Watching {args.display}/ for changes (Ctrl-C stops).\n")
    latest, regrades = {s.id: s for s in rep.stages if not s.extra}, 0
    try:
        while True:
            time.sleep(interval)
            now = snapshot(args.tree, stages)
            for stage in [s for s in stages if now[s.id] != seen[s.id]]:
                started = time.monotonic()
                passed = {sid for sid, r in latest.items() if r.status == PASSED}
                results = grade(args, stages, root, [u for u in units if u.stage.id == stage.id], passed).stages
                latest.update({r.id: r for r in results if not r.extra})
                score, top = sum(r.score for r in latest.values()), sum(r.max_score for r in latest.values())
                emit(args, f"\n[{time.strftime('%H:%M:%S')}] {stage.id}.py changed: re-graded in "
                           f"{time.monotonic() - started:.1f} s\n{stage_text(args, results)}"
                           f"Total now: {score:g}/{top:g}\n")
                regrades += 1
                if args.max_regrades and regrades >= args.max_regrades:
                    return 0
            seen = now
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------- main


def _main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    stages = curriculum.load(root / "curriculum.toml")
    if argv[:1] and argv[0] in COURSE_COMMANDS:  # python -m grader batch | gradescope-bundle | release
        return importlib.import_module(f".{COURSE_COMMANDS[argv[0]]}", __package__).main(argv[1:], root)
    args = parse(argv, stages, root)
    if args.action == "hint":
        sys.stdout.write(hints.command(args.stage, args.all, args.reset, hints.state_file(root)))
        return 0
    if args.action == "refresh":
        print(f"wrote {integrity.HASHES.relative_to(root)} ({len(integrity.refresh(root))} files)")
        return 0
    with tempfile.TemporaryDirectory(prefix="kata-extra-") as tmp:
        units = units_to_run(args, stages, root, Path(tmp))
        seen = snapshot(args.tree, stages)  # for --watch, before grading: a save while the scorecard runs is a change
        rep = grade(args, stages, root, units)
        emit(args, output(args, rep))
        if args.action == "watch":
            return watch(args, stages, root, units, rep, seen)
        if args.action == "stage":
            return 0 if all(s.status == PASSED for s in rep.stages) and not rep.integrity_failed else 1
        return 0 if rep.succeeded() else 1


main = functools.partial(options.run_main, "python -m grader", _main)  # main(argv=None, root=ROOT) -> exit status
