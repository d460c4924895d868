"""The verdict cache: a stage's verdict is reused when nothing it depends on changed (docs/grader.md).

Its key: the suite and its -k part, the tests/ helpers, every stage file the plan loads and its tree, curriculum.toml,
data/, the grader, the Python, torch and pytest versions, the CPU, the device and the limits. One JSON a key in
.kata-cache/verdicts/ (KATA_CACHE_DIR moves it, KATA_CACHE=off turns it off); passed, failing, not started only.
"""

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from .results import FAILING, NOT_STARTED, PASSED, StageResult, TestResult

SCHEMA = "transformer-kata/verdict/1"
KEPT = (PASSED, FAILING, NOT_STARTED)  # never an error, a timeout or a stop: they need not happen again
LIMIT = 400  # entries kept; the oldest go first
PACKAGES = ("torch", "pytest", "pytest-timeout", "numpy", "regex")
ENVIRONMENT = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
IMPORTED = re.compile(r"^\s*(?:from|import)\s+(test_\w+)", re.MULTILINE)  # a suite's imports of suites


def folder(root: Path) -> Path | None:
    """Where verdicts are kept; None when the cache is off (KATA_CACHE=off, or CI: a course grades fresh)."""
    ci = any(os.environ.get(name, "").lower() not in ("", "0", "false") for name in ("CI", "GITHUB_ACTIONS"))
    off = ci or os.environ.get("KATA_CACHE", "").lower() in ("off", "0", "no")
    return None if off else Path(os.environ.get("KATA_CACHE_DIR") or Path(root) / ".kata-cache") / "verdicts"


def _version(name: str) -> str:
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{name} absent"


@functools.cache
def machine() -> str:
    """Python, the packages a verdict depends on, the CPU torch would use (read, never by importing torch)."""
    try:
        cpu = [ln for ln in dict.fromkeys(Path("/proc/cpuinfo").read_text(errors="replace").splitlines())
               if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    except OSError:
        cpu = [platform.machine(), platform.processor()]
    return "\n".join([sys.version, *map(_version, PACKAGES), *cpu, *(f"{n}={os.environ.get(n)}" for n in ENVIRONMENT)])


class Digests(dict):
    """sha256 of files, each read once a run ('absent' for a file that is not there)."""

    def __missing__(self, path: Path) -> str:
        try:
            self[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            self[path] = "absent"
        return self[path]


def _suites(suites: list[Path]) -> set[Path]:
    """The suites and the suites they import (``from test_s14_rope import ...``), transitively."""
    found = set()
    while suites:
        found.add(path := suites.pop())
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        suites += [p for name in IMPORTED.findall(text) if (p := path.parent / f"{name}.py") not in found]
    return found


def key(settings, unit, part: str, sources: dict[str, Path], digests: Digests) -> str:
    """The key of one part of a unit graded with ``sources`` (stage id -> the tree it is loaded from)."""
    root = Path(settings.root)
    files = {*_suites([Path(f) for f in unit.files]), root / "curriculum.toml", root / "grader" / "test_hashes.json",
             *(p for p in (root / "tests").glob("*.py") if not p.name.startswith("test_")),
             *(root / "grader").glob("*.py"), *(p for p in (root / "data").glob("*") if p.is_file())}
    lines = [SCHEMA, machine(), str(root), str(settings.impl), settings.device, unit.label, part,
             repr((settings.timeout, settings.stage_timeout, settings.memory_mb, settings.fallback, settings.fork)),
             settings.no_credit.get(unit.stage.id, "")]
    lines += [f"{path} {digests[path]}" for path in sorted(files)]
    lines += [f"{sid} {'reference' if tree == settings.reference else 'impl'} {digests[Path(tree) / f'{sid}.py']}"
              for sid, tree in sorted(sources.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def load(where: Path, name: str) -> StageResult | None:
    """The verdict kept under ``name``, marked reused; None when absent, unreadable or not one of ours."""
    try:
        document = json.loads((where / f"{name}.json").read_text(encoding="utf-8"))
        fields = dict(document["result"])
        result = StageResult(**fields | {"tests": [TestResult(**t) for t in fields["tests"]]})
        os.utime(where / f"{name}.json")  # recently used: pruned last
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    ours = document["schema"] == SCHEMA and result.status in KEPT
    return replace(result, reused=True, duration=0.0) if ours else None


def store(where: Path, name: str, result: StageResult) -> bool:
    """Keep a verdict that follows from its key, written whole or not at all; False: nothing written."""
    if result.status not in KEPT or result.reused:
        return False
    temporary = ""
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=where, suffix=".tmp", delete=False, encoding="utf-8") as out:
            temporary = out.name
            json.dump({"schema": SCHEMA, "result": asdict(result)}, out)
        os.replace(temporary, where / f"{name}.json")
    except OSError:  # an unwritable folder: no cache, silently
        if temporary:
            Path(temporary).unlink(missing_ok=True)
        return False
    return True


def prune(where: Path, limit: int = LIMIT) -> None:
    """Keep the ``limit`` verdicts used most recently."""
    try:
        for path in sorted(where.glob("*.json"), key=lambda path: path.stat().st_mtime)[:-limit]:
            path.unlink(missing_ok=True)
    except OSError:
        pass
