"""The catalogue of wrong implementations: build each one and check that its stage's suite catches it.

A mutant is the reference with one stage file edited (``tests/mutants/<stage>.toml``, format in
CONTRIBUTING.md). It is caught when the stage's suite fails on it and the failure output contains
the mutant's ``symptom``, the words a learner who made that mistake should read.

    python -m grader.mutants                 # the whole catalogue
    python -m grader.mutants s03_attention   # one stage's mutants
"""

from __future__ import annotations

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


def check(mutant: Mutant, workdir: Path) -> Verdict:
    """Run the stage's suite on the mutant in a fresh interpreter."""
    tree = build_tree(mutant, workdir / mutant.label.replace(":", "__"))
    command = [
        sys.executable, "-m", "pytest", str(curriculum.TESTS / f"test_{mutant.stage}.py"),
        "--impl", str(tree), "-q", "--tb=short", "-p", "no:cacheprovider", "--timeout", "120",
    ]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(command, capture_output=True, text=True, cwd=curriculum.ROOT, env=env)
    output = done.stdout + done.stderr
    caught = done.returncode == 1
    return Verdict(mutant, caught, caught and mutant.symptom.lower() in output.lower(), output)


def check_all(mutants: list[Mutant], jobs: int | None = None) -> list[Verdict]:
    jobs = jobs or max(1, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="kata-mutants-") as tmp, ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda m: check(m, Path(tmp)), mutants))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = {stage.id for stage in curriculum.load()}
    unknown = [a for a in argv if a not in known]
    if unknown:
        print(f"grader.mutants: unknown stage {unknown[0]!r}", file=sys.stderr)
        return 2
    mutants = load(argv or None)
    verdicts = check_all(mutants)
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
