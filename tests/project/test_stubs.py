"""Stub and reference cannot drift: same signatures and docstrings, and the stubs are generated.

These checks stay green in a learner's clone: a stub the learner has filled in is compared on its
signatures and docstrings only; an untouched one must be exactly what the generator writes.
"""

from __future__ import annotations

import ast

import pytest

from grader import curriculum, stubgen

STAGES = curriculum.load()
IDS = [s.id for s in STAGES]


def interface(source: str) -> dict[str, object]:
    """Everything a learner relies on: module docstring, classes, signatures, docstrings, decorators."""
    tree = ast.parse(source)
    found: dict[str, object] = {"<module docstring>": ast.get_docstring(tree, clean=False)}

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found[name] = (
                    ast.dump(child.args),
                    ast.dump(child.returns) if child.returns else None,
                    [ast.dump(d) for d in child.decorator_list],
                    ast.get_docstring(child, clean=False),
                )
            elif isinstance(child, ast.ClassDef):
                name = prefix + child.name
                found[name] = (
                    [ast.dump(b) for b in child.bases],
                    [ast.dump(d) for d in child.decorator_list],
                    ast.get_docstring(child, clean=False),
                )
                visit(child, name + ".")

    visit(tree)
    return found


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_stub_and_reference_have_identical_signatures_and_docstrings(stage):
    mine = interface(stage.source(curriculum.EXERCISES).read_text(encoding="utf-8"))
    answer = interface(stage.source(curriculum.REFERENCE).read_text(encoding="utf-8"))
    missing = sorted(set(answer) - set(mine))
    extra = sorted(set(mine) - set(answer))
    differ = sorted(name for name in set(mine) & set(answer) if mine[name] != answer[name])
    assert not (missing or differ), (
        f"{stage.id}: exercises/ and reference/ drifted apart; missing in the stub: {missing}; "
        f"signature or docstring differs: {differ}. Run python -m grader.stubgen after editing a reference."
    )
    # Extra helpers a learner adds to a filled-in stub are fine; an untouched stub has none.
    if stubgen.is_untouched(stage.source(curriculum.EXERCISES).read_text(encoding="utf-8"), stage.id):
        assert not extra, f"{stage.id}: the stub defines {extra}, which the reference does not"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_untouched_stubs_are_exactly_what_the_generator_writes(stage):
    shipped = stage.source(curriculum.EXERCISES).read_text(encoding="utf-8")
    if not stubgen.is_untouched(shipped, stage.id):
        return  # the learner has written code here; the signature check above still applies
    expected = stubgen.make_stub(stage.source(curriculum.REFERENCE).read_text(encoding="utf-8"), stage.id)
    assert shipped == expected, f"exercises/{stage.id}.py is stale: run python -m grader.stubgen"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_every_function_of_a_generated_stub_raises_not_implemented_naming_the_stage(stage, stub_tree):
    source = stage.source(stub_tree).read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    message = stubgen.not_written_message(stage.id)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    stubbed = 0
    for node in functions:
        decorated_from = min([d.lineno for d in node.decorator_list] + [node.lineno])
        if decorated_from >= 2 and lines[decorated_from - 2].strip() == stubgen.GIVEN_MARKER:
            continue
        body = node.body[1:]
        assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{stage.id}.{node.name}: the stub body must only raise"
        assert message in ast.unparse(body[0]), f"{stage.id}.{node.name}: the stub must raise NotImplementedError({message!r})"
        stubbed += 1
    assert stubbed >= 1, f"{stage.id}: the stub leaves nothing to write"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_no_stage_imports_the_reference_or_forbidden_packages(stage):
    for tree_dir in (curriculum.EXERCISES, curriculum.REFERENCE):
        tree = ast.parse(stage.source(tree_dir).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"reference", "exercises", "grader", "tests"}, (
                    f"{tree_dir.name}/{stage.id}.py imports {name}: stages import earlier stages relatively (from .sNN_x import ...)"
                )


def test_generator_is_a_fixed_point_on_its_own_output():
    source = curriculum.REFERENCE.joinpath("s03_attention.py").read_text(encoding="utf-8")
    stub = stubgen.make_stub(source, "s03_attention")
    assert stub != source, "the generator changed nothing in a reference with function bodies"
    assert stubgen.make_stub(stub, "s03_attention") == stub, "stubbing a stub must change nothing"
    assert not stubgen.is_untouched(source, "s03_attention")
    assert stubgen.is_untouched(stub, "s03_attention")
