"""The README stays true: its curriculum table is the manifest, and CI runs its second command."""

from __future__ import annotations

import re

from grader import curriculum

README = (curriculum.ROOT / "README.md").read_text(encoding="utf-8")


def test_curriculum_table_matches_the_manifest():
    rows = re.findall(r"^\| (\d+) \| `(s\d\d_\w+)` \| (.+?) \| (\d+) \|$", README, flags=re.M)
    expected = [(str(s.number), s.id, s.title, str(s.points)) for s in curriculum.load()]
    assert rows == expected, "README's curriculum table differs from curriculum.toml:\n" + "\n".join(
        f"  README {r}  manifest {e}" for r, e in zip(rows + [None] * len(expected), expected) if r != e
    )


def test_ci_runs_the_quick_start_test_command():
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 2, f"the quick start should be two commands, found {commands}"
    ci = (curriculum.ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for part in commands[1].split(" && "):
        assert part in ci, f".ci/run does not run {part!r}, part of the README's test command"
    setup = commands[0].split(" && ")[0]
    assert setup in ci, f".ci/run does not install the way the quick start does ({setup!r})"
