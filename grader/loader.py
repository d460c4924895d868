"""Compose one importable package from stages taken from different trees, by the one plan.

A *plan* (``Plan``) maps every stage id to the directory its module is loaded from: the learner's exercises/
for the stage under test, reference/ for an unfinished stage it builds on, and says why each needed stage
was substituted. ``for_grading`` fills it for a stage's suite, ``for_running`` for train, pictures, generate
and chat. Stage modules import each other relatively (``from .s03_attention import ...``), so in a plan's own
package those imports resolve to the trees the plan names; several plans live in one process without sharing
module objects.

A stage file is read only if it is a regular file (never a link, which could lead out of the submission
to reference/), readable, and text; anything else raises StageFileError with one line. Modules are
compiled from that text: no bytecode (which could disagree with what the integrity scan read) is read
from, or written into, the learner's tree.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import stat
import sys
import types
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import curriculum, stubgen

_packages: dict[tuple[tuple[str, str], ...], str] = {}  # a plan -> the name of its package
MAX_STAGE_BYTES = 1 << 20  # a stage is a few hundred lines; a larger file is not one


class StageFileError(Exception):
    """A stage file the grader will not load; the message is one line that names the file."""


def read_stage(path: Path) -> str:
    """The text of a stage file, if it is a regular file (not a link), readable, and UTF-8 text."""
    shown = f"{path.parent.name}/{path.name}"
    if path.is_symlink():
        raise StageFileError(f"{shown} is a link (to {os.readlink(path)}): a stage file must be a regular file "
                             "inside the submission")
    try:  # no link, no waiting on a pipe
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            data = open(fd, "rb", closefd=False).read(MAX_STAGE_BYTES + 1) if regular else b""
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise StageFileError(f"{shown}: no such file") from None
    except OSError as error:
        raise StageFileError(f"{shown} cannot be read ({error.strerror or error})") from None
    if not regular:
        raise StageFileError(f"{shown} is not a regular file: a stage file must be a plain .py file")
    if len(data) > MAX_STAGE_BYTES:
        raise StageFileError(f"{shown} is larger than {MAX_STAGE_BYTES >> 20} MiB: that is not a stage file")
    try:
        return importlib.util.decode_source(data)
    except (UnicodeDecodeError, SyntaxError) as error:
        raise StageFileError(f"{shown} is not UTF-8 text ({error}): save it as UTF-8") from None


class _StageLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):
        return compile(read_stage(Path(self.path)), self.path, "exec", dont_inherit=True)


class _PlanFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.<stage>`` in the directory the plan names for that stage."""

    def __init__(self, package: str, sources: Mapping[str, str]):
        self.package, self.sources = package, sources

    def find_spec(self, fullname, path=None, target=None):
        parent, _, name = fullname.rpartition(".")
        if parent == self.package and name in self.sources:  # else the import fails with ModuleNotFoundError
            path = str(Path(self.sources[name]) / f"{name}.py")
            return importlib.util.spec_from_file_location(fullname, path, loader=_StageLoader(fullname, path))


def load_stage(sources: Mapping[str, Path], stage_id: str) -> types.ModuleType:
    """Import ``stage_id`` (and, through its imports, its dependencies) under this plan, in the plan's
    package: created on the plan's first use, reused after."""
    key = tuple(sorted((stage, str(Path(directory).resolve())) for stage, directory in sources.items()))
    if key not in _packages:
        name = _packages[key] = f"_kata_plan_{len(_packages)}"
        sys.modules[name] = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
        sys.meta_path.insert(0, _PlanFinder(name, dict(key)))
    return importlib.import_module(f"{_packages[key]}.{stage_id}")


def closure(stages: Iterable[curriculum.Stage]) -> dict[str, tuple[str, ...]]:
    """Every stage's dependencies, direct and indirect, in learning order."""
    deps: dict[str, set[str]] = {}
    for stage in stages:
        deps[stage.id] = set(stage.depends).union(*(deps.get(dep, ()) for dep in stage.depends))
    return {sid: tuple(s for s in deps if s in found) for sid, found in deps.items()}


@dataclass
class Plan:
    """Where every stage comes from (``sources``: stage id -> tree), and why a stage needed was taken from the
    reference instead of ``impl`` (``substituted``: stage id -> reason). Every command that loads stages uses one."""

    sources: dict[str, Path]
    impl: Path
    reference: Path = curriculum.REFERENCE
    substituted: dict[str, str] = field(default_factory=dict)

    def substitute(self, stage_id: str, reason: str) -> None:
        self.sources[stage_id] = self.reference
        self.substituted[stage_id] = reason

    def yours(self) -> list[str]:
        """The stages taken from impl, in learning order."""
        return [s for s, tree in self.sources.items() if tree == self.impl != self.reference]

    def describe(self) -> list[str]:
        """The lines that say whose code is used: yours first, then every substitution and why."""
        mine = [f"using yours: {', '.join(self.yours()) or 'none of your stages yet'}"] * (self.impl != self.reference)
        return mine + [f"using reference/{s}.py: yours is {why}" for s, why in self.substituted.items()]

    def crashed_in(self, frames: list[tuple[str, int]]) -> tuple[str, int] | None:
        """(stage id, line) of the innermost of ``frames`` (file name, line) in a stage of yours, or None."""
        own = {(self.impl / f"{s}.py").resolve(): s for s in self.yours()}
        return next(((own[Path(f).resolve()], line) for f, line in reversed(frames) if Path(f).resolve() in own), None)

    def to_json(self) -> str:
        """The plan as handed to a stage's child (tests/conftest.py --plan): {stage id: "impl" | "reference"}."""
        return json.dumps({s: "impl" if tree == self.impl else "reference" for s, tree in self.sources.items()})


def for_grading(stages: tuple[curriculum.Stage, ...], tested: str, impl: Path, reference: Path,
                mine: Collection[str] | None, graded: Collection[str] = ()) -> Plan:
    """The plan for grading ``tested`` (from ``impl``): with ``mine`` None (no fallback) every stage from ``impl``,
    else those in ``mine`` (they passed their suite), the rest from ``reference``, each it loads named with why."""
    plan = Plan({s.id: impl if mine is None or s.id in mine or s.id == tested else reference for s in stages}, impl,
                reference)
    if mine is not None:
        plan.substituted = {d: "did not pass its suite" if d in graded else "not graded yet"
                            for d in closure(stages).get(tested, ()) if d not in mine}
    return plan


def for_running(impl: Path, called: tuple[str, ...]) -> Plan:
    """The stages ``called`` and their dependencies from impl, unless missing, unreadable, a stub or not importing."""
    stages = curriculum.load()
    needed = {d for stage_id in called for d in (stage_id, *closure(stages)[stage_id])}
    plan = Plan({stage.id: curriculum.REFERENCE for stage in stages}, impl)
    for stage_id in [stage.id for stage in stages if stage.id in needed and impl != plan.reference]:
        path = impl / f"{stage_id}.py"  # in learning order, so a stage's dependencies are settled first
        try:
            reason = "not started" if stubgen.is_untouched(read_stage(path), stage_id) else None
        except StageFileError as error:
            reason = f"refused ({error})" if path.is_file() or path.is_symlink() else "missing"
        if reason is None:
            plan.sources[stage_id] = impl
            try:
                load_stage(plan.sources, stage_id)
            except Exception as error:  # noqa: BLE001 - any import failure means: use the reference
                reason = f"does not import ({type(error).__name__}: {error})"
        if reason:
            plan.substitute(stage_id, reason)
    return plan
