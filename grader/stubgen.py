"""Make the learner's stubs from the reference: same file, every function body replaced.

A body becomes its numbered step comments (``# 1) project, and split into heads``), each with a TODO
(or one TODO), then a NotImplementedError naming the stage and the hint command; a function right under
``# kata: given`` keeps its body. Stubs are fixed points of ``make_stub``; others are never overwritten.

    python -m grader.stubgen            # rewrite the untouched stubs in exercises/ from reference/
    python -m grader.stubgen --check    # exit 1 if an untouched stub differs from what it would write
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from . import curriculum, options

GIVEN_MARKER = "# kata: given"
STEP = re.compile(r"^\s*# \d+\) \S")  # a numbered step comment, kept in the stub as its skeleton


def not_written_message(stage_id: str) -> str:
    return f"{stage_id}: not written yet — python -m grader hint {stage_id}"


def make_stub(source: str, stage_id: str) -> str:
    lines = source.splitlines(keepends=True)
    replaced: list[tuple[int, int, list[str]]] = []  # (first line index, end index, new lines)
    functions = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda n: n.lineno):
        first = min([d.lineno for d in node.decorator_list] + [node.lineno])
        given = first >= 2 and lines[first - 2].strip() == GIVEN_MARKER
        if given or any(start <= node.lineno - 1 < end for start, end, _ in replaced):  # or inside a replaced body
            continue
        if ast.get_docstring(node) is None:
            raise ValueError(f"{stage_id}: function {node.name!r} (line {node.lineno}) has no docstring: "
                             "the docstring is the learner's contract")
        if len(node.body) == 1:
            continue
        start, end = node.body[0].end_lineno, node.end_lineno  # comments after the docstring belong to the body
        indent = re.match(r"\s*", lines[node.body[1].lineno - 1])[0]
        body = [f"{indent}{line.strip()}\n{indent}# TODO\n" for line in lines[start:end] if STEP.match(line)]
        body = body or [f"{indent}# TODO: write this (the docstring above is the contract).\n"]
        stop = f'{indent}raise NotImplementedError("{not_written_message(stage_id)}")\n'
        replaced.append((start, end, body + [stop]))
    for start, end, new in reversed(replaced):
        lines[start:end] = new
    return "".join(lines)


def is_untouched(source: str, stage_id: str) -> bool:
    """True when ``source`` is still a stub: stubbing it again changes nothing."""
    try:
        return make_stub(source, stage_id) == source
    except (SyntaxError, ValueError):
        return False


def generate(reference: Path, target: Path, stages=None) -> None:
    """Write a stub for every stage into ``target`` (a fresh directory)."""
    target.mkdir(parents=True, exist_ok=True)
    sync(reference, target, stages or curriculum.load(), write=True)


def sync(reference: Path, exercises: Path, stages, write: bool) -> tuple[list[str], list[str]]:
    """(stale stage ids, messages): untouched stubs in ``exercises`` unlike ``reference``'s, rewritten if ``write``."""
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


def _main(argv: list[str]) -> int:
    check = options.parser("python -m grader.stubgen", __doc__, {"--check": dict(action="store_true", help=(
        "exit 1 if an untouched stub differs from what it would write"))}).parse_args(argv).check
    stale, messages = sync(curriculum.REFERENCE, curriculum.EXERCISES, curriculum.load(), write=not check)
    if not check:
        print("\n".join(messages) or "every stub in exercises/ is up to date")
        return 0
    print(f"exercises/ is out of date for: {', '.join(stale)} (run python -m grader.stubgen)" if stale
          else "every untouched stub in exercises/ matches reference/")
    return 1 if stale else 0


main = functools.partial(options.run_main, "python -m grader.stubgen", _main)  # main(argv=None) -> exit status


if __name__ == "__main__":
    raise SystemExit(main())
