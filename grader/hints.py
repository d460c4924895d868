"""A ladder of hints: ``python -m grader hint STAGE`` shows the next one, from a nudge to the
near-solution; ``--all`` repeats those shown so far (never one further), ``--reset`` starts again.
The count is kept outside the repository: in $KATA_STATE_DIR, else the user's cache, a file a clone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

from . import curriculum


def state_file(root: Path = curriculum.ROOT) -> Path:
    caches = {"win32": os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"),
              "darwin": Path.home() / "Library" / "Caches"}
    cache = caches.get(sys.platform) or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    base = Path(os.environ.get("KATA_STATE_DIR") or Path(cache) / "transformer-kata")
    return base / f"hints-{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]}.json"  # one a clone


def _load(path: Path) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _save(path: Path, shown: dict[str, int]) -> None:
    with contextlib.suppress(OSError):  # a read-only home: the hint is still shown, the counter stays
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(shown, indent=1, sort_keys=True), encoding="utf-8")


def next_hint(stage: curriculum.Stage, path: Path) -> tuple[int, str]:
    """(1-based number of the hint shown, its text); advances the stored counter, stopping at the last."""
    if not stage.hints:
        return 0, "This stage has no hints yet."
    shown = _load(path)
    index = min(shown.get(stage.id, 0), len(stage.hints) - 1)
    _save(path, shown | {stage.id: index + 1})
    return index + 1, stage.hints[index]


def command(stage: curriculum.Stage, show_all: bool, reset: bool, path: Path) -> str:
    """What ``python -m grader hint STAGE [--all | --reset]`` prints."""
    if reset:
        _save(path, {k: v for k, v in _load(path).items() if k != stage.id})
        return f"Hints for stage {stage.number}, {stage.id}, start again: python -m grader hint {stage.number}\n"
    if not show_all:
        return format_hint(stage, *next_hint(stage, path))
    given = min(_load(path).get(stage.id, 0), len(stage.hints))
    if not given:
        return f"No hint shown yet for stage {stage.number}: python -m grader hint {stage.number} shows the first.\n"
    return "".join(format_hint(stage, n, stage.hints[n - 1], last=n == given) for n in range(1, given + 1))


def format_hint(stage: curriculum.Stage, number: int, text: str, last: bool = True) -> str:
    total = len(stage.hints)
    more = "ask again for the next one" if number < total else "that is the last one; the docstring is the spec"
    return f"Hint {number} of {total} for stage {stage.number}, {stage.id}:\n  {text}\n" + f"({more})\n" * last
