"""Compose one importable package from stages taken from different trees.

A *plan* maps every stage id to the directory its module is loaded from: the learner's exercises/
for the stage under test, reference/ for an unfinished stage it builds on. Stage modules import each
other relatively (``from .s03_attention import ...``), so in a plan's own package those imports resolve
to the trees the plan names; several plans live in one process without sharing module objects.

A stage file is read only if it is a regular file (never a link, which could lead out of the submission
to reference/), readable, and text; anything else raises StageFileError with one line. Modules are
compiled from that text: no bytecode (which could disagree with what the integrity scan read) is read
from, or written into, the learner's tree.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import stat
import sys
import types
from collections.abc import Mapping
from pathlib import Path

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


def plan(stage_ids: list[str], tested: str, impl: Path, reference: Path, learner_stages: frozenset[str] = frozenset(),
         fallback: bool = True) -> dict[str, Path]:
    """The sources for grading ``tested``: it always comes from ``impl``; another stage from ``impl`` too
    when ``fallback`` is off or it is in ``learner_stages`` (the learner finished it), else from ``reference``."""
    return {s: impl if s == tested or not fallback or s in learner_stages else reference for s in stage_ids}
