"""The catalogue of wrong implementations: build each one and check that its stage's suite catches it.

A mutant is the reference with one stage file edited (``tests/mutants/<stage>.toml``, format in
CONTRIBUTING.md). It is caught when the stage's suite fails on it and the failure output contains
the mutant's ``symptom``, the words a learner who made that mistake should read.

    python -m grader.mutants                 # the whole catalogue
    python -m grader.mutants s03_attention   # one stage's mutants
    python -m grader.mutants --json out.json # also write every verdict as JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import curriculum

CATALOGUE = curriculum.TESTS / "mutants"


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
    mutants = []
    for stage in curriculum.load():
        if stage_ids and stage.id not in stage_ids:
            continue
        path = CATALOGUE / f"{stage.id}.toml"
        if not path.is_file():
            continue
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        for entry in data.get("mutant", []):
            edits = tuple((edit["old"], edit["new"]) for edit in entry["edit"])
            mutants.append(Mutant(stage.id, entry["name"], entry["description"], entry["symptom"], edits))
    return mutants


def mutate(source: str, mutant: Mutant) -> str:
    """Apply the mutant's edits; each ``old`` must occur exactly once in the current text."""
    for old, new in mutant.edits:
        count = source.count(old)
        if count != 1:
            raise ValueError(f"{mutant.label}: edit text occurs {count} times in the reference (needs exactly 1): {old[:60]!r}")
        source = source.replace(old, new)
    return source


def build_tree(mutant: Mutant, directory: Path) -> Path:
    """Write reference/ with the mutant's stage edited into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in curriculum.REFERENCE.glob("*.py"):
        shutil.copy(path, directory / path.name)
    target = directory / f"{mutant.stage}.py"
    target.write_text(mutate(target.read_text(encoding="utf-8"), mutant), encoding="utf-8")
    return directory


def suite_args(mutant: Mutant, tree: Path, stop_early: bool) -> list[str]:
    """pytest's arguments for one mutant: its stage's suite on its tree, only the plugins grading needs."""
    args = [str(curriculum.TESTS / f"test_{mutant.stage}.py"), "--impl", str(tree), "-q", "--tb=short",
            "-p", "no:cacheprovider", "-p", "pytest_timeout", "--timeout", "600"]
    return args + ["-x"] if stop_early else args


def _verdict(mutant: Mutant, code: int, output: str) -> Verdict:
    caught = code == 1
    return Verdict(mutant, caught, caught and mutant.symptom.lower() in output.lower(), output)


def check(mutant: Mutant, workdir: Path, stop_early: bool = False) -> Verdict:
    """Run the stage's suite on the mutant in a fresh interpreter (the portable path)."""
    tree = build_tree(mutant, workdir / mutant.label.replace(":", "__"))
    command = [sys.executable, "-m", "pytest", *suite_args(mutant, tree, stop_early)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    done = subprocess.run(command, capture_output=True, text=True, cwd=curriculum.ROOT, env=env)
    return _verdict(mutant, done.returncode, done.stdout + done.stderr)


def _fork_suite(mutant: Mutant, tree: Path, output: Path, stop_early: bool) -> int:
    """Start the suite in a forked child of this (torch-warm) process; return the child's pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:  # the child: never return into the parent's code
        import pytest

        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(curriculum.ROOT)
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        code = int(pytest.main(suite_args(mutant, tree, stop_early)))
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _check_forked(mutants: list[Mutant], workdir: Path, jobs: int, stop_early: bool) -> list[Verdict]:
    """Every mutant in a forked child, ``jobs`` at a time: torch is imported once, not once per mutant."""
    from .run import warm_up

    warm_up()
    verdicts: dict[int, Verdict] = {}
    running: dict[int, tuple[int, Path]] = {}  # pid -> (index, output file)
    queue = list(enumerate(mutants))
    while queue or running:
        while queue and len(running) < jobs:
            index, mutant = queue.pop(0)
            tree = build_tree(mutant, workdir / mutant.label.replace(":", "__"))
            output = tree / "pytest.out"
            running[_fork_suite(mutant, tree, output, stop_early)] = (index, output)
        pid, status = os.wait()
        if pid not in running:
            continue
        index, output = running.pop(pid)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        verdicts[index] = _verdict(mutants[index], code, output.read_text(encoding="utf-8", errors="replace"))
    return [verdicts[i] for i in range(len(mutants))]


def check_all(mutants: list[Mutant], jobs: int | None = None) -> list[Verdict]:
    """Check every mutant; in parallel, forked from a warm process where the platform allows.

    Each suite first runs with -x (stop at the first failure): most mistakes are caught by an early
    test. Only a mutant whose first failure does not name its symptom runs the whole suite again.
    """
    jobs = jobs or max(1, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="kata-mutants-") as tmp:
        workdir = Path(tmp)
        if hasattr(os, "fork") and os.environ.get("KATA_NO_FORK") != "1":
            verdicts = _check_forked(mutants, workdir / "fast", jobs, stop_early=True)
            again = [i for i, v in enumerate(verdicts) if not v.ok]
            if again:
                slow = _check_forked([mutants[i] for i in again], workdir / "full", jobs, stop_early=False)
                for i, verdict in zip(again, slow):
                    verdicts[i] = verdict
            return verdicts
        with ThreadPoolExecutor(jobs) as pool:
            return list(pool.map(lambda m: check(m, workdir), mutants))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    json_path = None
    if "--json" in argv:
        at = argv.index("--json")
        if at + 1 >= len(argv):
            print("grader.mutants: --json needs a file path", file=sys.stderr)
            return 2
        json_path = Path(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    known = {stage.id for stage in curriculum.load()}
    unknown = [a for a in argv if a not in known]
    if unknown:
        print(f"grader.mutants: unknown stage {unknown[0]!r}", file=sys.stderr)
        return 2
    mutants = load(argv or None)
    verdicts = check_all(mutants)
    if json_path is not None:
        json_path.write_text(json.dumps([
            {"label": v.mutant.label, "caught": v.caught, "symptom_shown": v.symptom_shown, "output": v.output[-6000:]}
            for v in verdicts
        ], indent=1), encoding="utf-8")
    for verdict in verdicts:
        status = "caught" if verdict.ok else ("caught, but the output lacks the symptom" if verdict.caught else "MISSED")
        print(f"{status:>40}  {verdict.mutant.label}: {verdict.mutant.description}")
        if not verdict.ok:
            print("\n".join("    " + line for line in verdict.output.splitlines()[-25:]))
    caught = sum(v.ok for v in verdicts)
    print(f"mutation score: {caught}/{len(verdicts)} caught")
    return 0 if caught == len(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
