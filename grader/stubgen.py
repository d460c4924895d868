"""Make the learner's stubs from the reference: same file, every function body replaced.

Everything above a function's body stays as the reference has it (module docstring, imports,
classes, signatures, docstrings, constants, dataclasses); the body becomes a TODO marker and
a NotImplementedError that names the stage and the hint command. The body's numbered step
comments (``# 1) project, and split into heads``) stay as its skeleton, each followed by a TODO. A function whose ``def``
line is directly preceded by a ``# kata: given`` comment keeps its body: it is part of the
scaffolding, not the exercise.

    python -m grader.stubgen            # rewrite the untouched stubs in exercises/ from reference/
    python -m grader.stubgen --check    # exit 1 if an untouched stub differs from what it would write

A stub is a fixed point of ``make_stub``; a file that is not (a learner has written code in it)
is never overwritten.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from . import curriculum

GIVEN_MARKER = "# kata: given"
STEP = re.compile(r"^\s*# \d+\) \S")  # a numbered step comment, kept in the stub as its skeleton


def not_written_message(stage_id: str) -> str:
    return f"{stage_id}: not written yet — python -m grader hint {stage_id}"


def stub_lines(stage_id: str, indent: str, steps: list[str] = ()) -> list[str]:
    """A stub's body: the steps, each with a TODO (or one TODO), then the NotImplementedError."""
    todo = [f"{indent}# TODO: write this (the docstring above is the contract).\n"]
    if steps:
        todo = [f"{indent}{line.strip()}\n{indent}# TODO\n" for line in steps]
    return todo + [f'{indent}raise NotImplementedError("{not_written_message(stage_id)}")\n']


def make_stub(source: str, stage_id: str) -> str:
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    replaced: list[tuple[int, int, list[str]]] = []  # (first line index, end index, new lines)
    outer_spans: list[tuple[int, int]] = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda n: n.lineno):
        if any(start <= node.lineno - 1 < end for start, end in outer_spans):
            continue  # nested inside a function already being replaced
        first_decorator = min([d.lineno for d in node.decorator_list] + [node.lineno])
        if first_decorator >= 2 and lines[first_decorator - 2].strip() == GIVEN_MARKER:
            continue
        body = node.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str)
        if not has_doc:
            raise ValueError(f"{stage_id}: function {node.name!r} (line {node.lineno}) has no docstring: "
                             "the docstring is the learner's contract")
        rest = body[1:]
        if not rest:
            continue
        start = body[0].end_lineno  # comments between docstring and code belong to the body too
        end = node.end_lineno
        first = lines[rest[0].lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        steps = [line for line in lines[start:end] if STEP.match(line)]
        replaced.append((start, end, stub_lines(stage_id, indent, steps)))
        outer_spans.append((node.lineno - 1, end))
    for start, end, new in sorted(replaced, reverse=True):
        lines[start:end] = new
    return "".join(lines)


def is_untouched(source: str, stage_id: str) -> bool:
    """True when ``source`` is still a stub: stubbing it again changes nothing."""
    try:
        return make_stub(source, stage_id) == source
    except (SyntaxError, ValueError):
        return False


def generate(reference: Path, target: Path, stages=None) -> list[Path]:
    """Write a stub for every stage into ``target`` (a fresh directory); return the files written."""
    stages = stages or curriculum.load()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in stages:
        source = stage.source(reference).read_text(encoding="utf-8")
        path = stage.source(target)
        path.write_text(make_stub(source, stage.id), encoding="utf-8")
        written.append(path)
    return written


def sync(reference: Path, exercises: Path, stages, write: bool) -> tuple[list[str], list[str]]:
    """Bring the untouched stubs in ``exercises`` up to date with ``reference``.

    Returns (stale stage ids, one message per file looked at). With ``write`` off nothing is
    written: the stale list says what would change. A file with a learner's code in it is never
    touched, and never stale.
    """
    stale, messages = [], []
    for stage in stages:
        path = stage.source(exercises)
        if not stage.source(reference).is_file():
            stale.append(stage.id)
            messages.append(f"skipped {stage.id}: {reference.name}/{stage.id}.py does not exist")
            continue
        mine = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
        if mine is not None and not is_untouched(mine, stage.id):
            messages.append(f"kept {exercises.name}/{path.name}: it has code in it, so it is not a stub any more")
            continue
        stub = make_stub(stage.source(reference).read_text(encoding="utf-8"), stage.id)
        if mine != stub:
            stale.append(stage.id)
            if write:
                path.write_text(stub, encoding="utf-8")
                messages.append(f"wrote {exercises.name}/{path.name}")
    return stale, messages


def main(argv: list[str] | None = None) -> int:
    return curriculum.run_main("python -m grader.stubgen", _main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python -m grader.stubgen [--check]", file=sys.stderr)
        return 2
    check = argv == ["--check"]
    stale, messages = sync(curriculum.REFERENCE, curriculum.EXERCISES, curriculum.load(), write=not check)
    if not check:
        print("\n".join(messages) if messages else "every stub in exercises/ is up to date")
        return 0
    if stale:
        print(f"exercises/ is out of date for: {', '.join(stale)} (run python -m grader.stubgen)")
        return 1
    print("every untouched stub in exercises/ matches reference/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
