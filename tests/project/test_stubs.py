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


def test_sync_rewrites_stale_stubs_and_never_touches_a_learners_work(tmp_path):
    stages = [s for s in STAGES if s.id in ("s03_attention", "s04_masks", "s06_feedforward")]
    exercises = tmp_path / "exercises"
    stubgen.generate(curriculum.REFERENCE, exercises, stages)
    mine = "def scaled_dot_product_attention(q, k, v, mask=None, dropout=0.0):\n    return q, k\n"
    (exercises / "s03_attention.py").write_text(mine, encoding="utf-8")  # a learner's work
    (exercises / "s04_masks.py").write_text(stubgen.make_stub("def f():\n    '''old.'''\n    return 1\n", "s04_masks"))
    (exercises / "s06_feedforward.py").unlink()

    stale, _ = stubgen.sync(curriculum.REFERENCE, exercises, stages, write=False)
    assert stale == ["s04_masks", "s06_feedforward"], f"a dry run should report the stale stubs only, got {stale}"
    assert not (exercises / "s06_feedforward.py").exists(), "a dry run must write nothing"

    stale, messages = stubgen.sync(curriculum.REFERENCE, exercises, stages, write=True)
    assert (exercises / "s03_attention.py").read_text(encoding="utf-8") == mine, "the learner's code was overwritten"
    assert any("kept" in m and "s03_attention" in m for m in messages), f"no message says the learner's file was kept: {messages}"
    for stage in stages[1:]:
        written = stage.source(exercises).read_text(encoding="utf-8")
        expected = stubgen.make_stub(stage.source(curriculum.REFERENCE).read_text(encoding="utf-8"), stage.id)
        assert written == expected, f"{stage.id}: the stale stub was not regenerated"
    assert stubgen.sync(curriculum.REFERENCE, exercises, stages, write=False)[0] == [], "after a sync nothing is stale"


def test_stubgen_command_checks_the_repository_and_refuses_bad_usage():
    import subprocess
    import sys

    check = subprocess.run([sys.executable, "-m", "grader.stubgen", "--check"], cwd=curriculum.ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, f"python -m grader.stubgen --check failed: {check.stdout}{check.stderr}"
    bad = subprocess.run([sys.executable, "-m", "grader.stubgen", "--bogus"], cwd=curriculum.ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("python -m grader.stubgen:") and bad.stderr.count("\n") == 1, (
        f"bad usage: one line, exit 2; got exit {bad.returncode}, {bad.stderr!r}")
    assert "Traceback" not in bad.stderr


def test_a_function_without_a_docstring_is_refused_with_its_name():
    with pytest.raises(ValueError, match="'helper'.*no docstring"):
        stubgen.make_stub("def helper(x):\n    return x\n", "s01_vocab")
