"""The catalogue of wrong implementations: build each one and check that its stage's suite catches it.

A mutant is the reference with one stage file edited (``tests/mutants/<stage>.toml``, format in
CONTRIBUTING.md). It is caught when the stage's suite fails on it and the failure output contains
the mutant's ``symptom``, the words a learner who made that mistake should read.

    python -m grader.mutants                 # the whole catalogue
    python -m grader.mutants s03_attention   # one stage's mutants
    python -m grader.mutants --json out.json # also write every verdict as JSON
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import curriculum, options, sandbox
from .suite_runner import warm_up
from .grading import fork_available

CATALOGUE = curriculum.TESTS / "mutants"
LIMITS = sandbox.Limits(cpu=900, wall=3600)  # generous: a mutant that loops is caught by its suite's timeout
ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


@dataclass(frozen=True)
class Mutant:
    stage: str  # the stage id whose file is edited
    name: str  # short snake_case name, unique within the stage
    description: str  # the mistake, in one line
    symptom: str  # a phrase the suite's failure output must contain
    edits: tuple[tuple[str, str], ...]  # (old, new) text replacements, each old occurring once

    @property
    def label(self) -> str:
        return f"{self.stage}:{self.name}"


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    caught: bool  # the suite failed
    symptom_shown: bool  # ... and its output contained the symptom
    output: str  # the suite's output (for the report when something is missed)

    @property
    def ok(self) -> bool:
        return self.caught and self.symptom_shown


def load(stage_ids: list[str] | None = None) -> list[Mutant]:
    """Every mutant in the catalogue, in stage order (optionally only these stages)."""
    paths = [CATALOGUE / f"{stage.id}.toml" for stage in curriculum.load() if not stage_ids or stage.id in stage_ids]
    return [Mutant(path.stem, entry["name"], entry["description"], entry["symptom"],
                   tuple((edit["old"], edit["new"]) for edit in entry["edit"]))
            for path in paths if path.is_file() for entry in tomllib.loads(path.read_text("utf-8")).get("mutant", [])]


def mutate(source: str, mutant: Mutant) -> str:
    """Apply the mutant's edits; each ``old`` must occur exactly once in the current text."""
    for old, new in mutant.edits:
        if (count := source.count(old)) != 1:
            raise ValueError(f"{mutant.label}: edit text occurs {count} times in the reference (needs exactly 1): "
                             f"{old[:60]!r}")
        source = source.replace(old, new)
    return source


def build_tree(mutant: Mutant, directory: Path) -> Path:
    """Write reference/ with the mutant's stage edited into ``directory``; return it."""
    shutil.copytree(curriculum.REFERENCE, directory, dirs_exist_ok=True,
                    ignore=lambda _, names: [name for name in names if not name.endswith(".py")])
    target = directory / f"{mutant.stage}.py"
    target.write_text(mutate(target.read_text(encoding="utf-8"), mutant), encoding="utf-8")
    return directory


def check_all(mutants: list[Mutant]) -> list[Verdict]:
    """Every mutant's suite through the one stage runner, in parallel: forked from this (torch-warm)
    process, or a fresh interpreter where fork is not available.

    Each suite first runs with -x (most mistakes are caught by an early test); only a mutant whose
    first failure does not name its symptom runs the whole suite again."""
    if fork := fork_available():
        warm_up(optimizers=len(mutants) > 2)
    verdicts: dict[Mutant, Verdict] = {}

    def start(mutant: Mutant) -> sandbox.Stage:
        tree = build_tree(mutant, Path(tmp) / f"{mutant.label.replace(':', '__')}{'-x' * stop_early}")
        args = [str(curriculum.TESTS / f"test_{mutant.stage}.py"), "--impl", str(tree), "-q", "--tb=short",
                "-p", "no:cacheprovider", "-p", "pytest_timeout", "--timeout", "600", *(["-x"] if stop_early else [])]

        def suite(_writer) -> int:
            os.chdir(curriculum.ROOT)  # paths in the output as a maintainer sees them
            return int(pytest.main(args))

        command = suite if fork else [sys.executable, "-m", "pytest", *args]
        return sandbox.start(command, LIMITS, output=tree / "pytest.out", env=ENV)

    def finish(mutant: Mutant, stage: sandbox.Stage) -> None:
        output = stage.unsigned().decode("utf-8", "replace") + stage.tail(1 << 20)
        caught = stage.exitcode == 1
        verdicts[mutant] = Verdict(mutant, caught, caught and mutant.symptom.lower() in output.lower(), output)

    with tempfile.TemporaryDirectory(prefix="kata-mutants-") as tmp:
        for stop_early in (True, False):
            again = [m for m in mutants if m not in verdicts or not verdicts[m].ok]
            sandbox.run_all(again, start, finish, os.cpu_count() or 1)
    return [verdicts[m] for m in mutants]


def _main(argv: list[str]) -> int:
    args = options.parser("python -m grader.mutants", __doc__, {
        "stages": dict(nargs="*", help="stage ids (default: the whole catalogue)"),
        "--json": dict(help="also write every verdict as JSON to this file")}).parse_intermixed_args(argv)
    if unknown := [a for a in args.stages if a not in {stage.id for stage in curriculum.load()}]:
        raise options.UsageError(f"unknown stage {unknown[0]!r}")
    verdicts = check_all(load(args.stages or None))
    if args.json:
        rows = [{"label": v.mutant.label, "caught": v.caught, "symptom_shown": v.symptom_shown,
                 "output": v.output[-6000:]} for v in verdicts]
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    for verdict in verdicts:
        status = "caught" if verdict.ok else "caught, but the output lacks the symptom" if verdict.caught else "MISSED"
        print(f"{status:>40}  {verdict.mutant.label}: {verdict.mutant.description}")
        if not verdict.ok:
            print("\n".join("    " + line for line in verdict.output.splitlines()[-25:]))
    caught = sum(v.ok for v in verdicts)
    print(f"mutation score: {caught}/{len(verdicts)} caught")
    return 0 if caught == len(verdicts) else 1


main = functools.partial(options.run_main, "python -m grader.mutants", _main)  # main(argv=None) -> exit status


if __name__ == "__main__":
    raise SystemExit(main())
