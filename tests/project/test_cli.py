"""Every command a person runs, driven from outside: bad input is one line and exit status 2 (checked
before any grading), hints climb a ladder, stubs keep the reference's steps, and a crash in training
names the learner's stage and file:line in one line."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from grader import curriculum, stubgen
import preloaded
from grader_kata import build_kata, environment, grade, run_module, submission  # noqa: I001

ROOT = curriculum.ROOT


@pytest.fixture(scope="module")
def kata(tmp_path_factory) -> Path:
    return build_kata(tmp_path_factory.mktemp("cli") / "kata")


def run(where: Path, *argv: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """``python -m <argv>`` in ``where``, as a person runs it."""
    return run_module(where, *argv, timeout=timeout, **env)


def one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The process ended with ``code`` and said exactly one line on stderr, containing ``words``."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, f"exit {done.returncode}, expected {code}:\n{done.stdout}\n{done.stderr}"
    assert len(lines) == 1 and "Traceback" not in done.stderr, f"expected one line on stderr, got:\n{done.stderr}"
    for word in words:
        assert word in lines[0], f"expected {word!r} in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------- a broken or missing manifest

COMMANDS = {  # every command that reads curriculum.toml, with arguments that are otherwise fine
    "grader": ("grader",),
    "grader stage": ("grader", "1"),
    "batch": ("grader", "batch", "."),
    "release": ("grader", "release", "out"),
    "gradescope-bundle": ("grader", "gradescope-bundle"),
    "train": ("grader.train", "copy"),
    "pictures": ("grader.pictures", "--out", "pictures"),
    "stubgen --check": ("grader.stubgen", "--check"),
    "mutants": ("grader.mutants",),
}


@pytest.mark.parametrize("damage", ["corrupt", "missing", "malformed"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_broken_manifest_is_one_line_and_exit_two_from_every_command(kata, tmp_path, name, damage):
    copy = tmp_path / "kata"
    shutil.copytree(kata, copy, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = copy / "curriculum.toml"
    if damage == "missing":
        manifest.unlink()
    else:
        manifest.write_text('[[stage]\nid = "s01' if damage == "corrupt" else '[[stage]]\nid = "s01_add"\n',
                            encoding="utf-8")
    done = run(copy, *COMMANDS[name])
    one_line(done, 2, "curriculum.toml")
    assert done.stdout == "", f"nothing may run before the manifest is read, got:\n{done.stdout}"
    assert not (copy / "out").exists() and not (copy / "pictures").exists(), "nothing may be written"


# ---------------------------------------------------------------- --output and release paths


def test_output_into_a_missing_folder_is_refused_before_grading(kata, tmp_path):
    done = grade(kata, "--format", "json", "--output", str(tmp_path / "nowhere" / "report.json"))
    assert done.code == 2 and done.stdout == "", done.stdout + done.stderr
    assert "does not exist" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("target", ["exercises/s01_add.py", "reference/s02_scale.py", "exercises/new.json", "SUB/s02_scale.py"])
def test_output_never_writes_into_a_stage_tree(kata, tmp_path, target):
    tree = submission(kata, tmp_path / "sub")
    target = target.replace("SUB", str(tree))
    path = Path(target) if Path(target).is_absolute() else kata / target
    before = path.read_bytes() if path.exists() else None
    done = grade(kata, "--impl", str(tree), "--output", target)
    assert done.code == 2 and "write it elsewhere" in done.stderr, done.stdout + done.stderr
    assert (path.read_bytes() if path.exists() else None) == before, f"{target} was written"


def test_release_into_a_path_under_a_file_is_one_line(kata, tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("", encoding="utf-8")
    one_line(run(kata, "grader", "release", str(blocker / "x")), 2, "is a file, not a folder")


@pytest.mark.parametrize("argv, words", [
    (("grader", "1", "--all"), "--all and --reset go with hint"),
    (("grader", "hint", "1", "--all", "--reset"), "one at a time"),
    (("grader.train", "copy", "--impl", "tests"), "not shaped like exercises/"),
    (("grader.pictures", "--out", "exercises"), "outside exercises/"),
    (("grader.pictures", "--impl", "no/such/dir"), "no such directory"),
])
def test_bad_arguments_are_one_line_and_exit_two(argv, words):
    done = run(ROOT, *argv)
    one_line(done, 2, words)
    assert done.stdout == ""


# ---------------------------------------------------------------- the hint ladder


def test_hints_climb_one_rung_at_a_time_all_repeats_them_and_reset_starts_again(kata, tmp_path):
    state = {"KATA_STATE_DIR": str(tmp_path / "state")}

    def hint(*extra: str) -> str:
        done = grade(kata, "hint", "1", *extra, **state)
        assert done.code == 0 and done.stderr == "", done.stderr
        return done.stdout

    assert "No hint shown yet for stage 1" in hint("--all"), "--all never climbs by itself"
    assert "Hint 1 of 3" in hint() and "Hint 2 of 3" in hint()
    again = hint("--all")
    assert "First hint for add." in again and "Second hint for add." in again, again
    assert "Last hint" not in again, "--all shows only the hints already given"
    assert again.count("(ask again for the next one)") == 1, "one closing line, after the last hint shown"
    assert "start again" in hint("--reset")
    assert "Hint 1 of 3" in hint(), "after --reset the ladder starts at the first hint"
    assert "Hint 2 of 3" in grade(kata, "hint", "add", **state).stdout, "a topic names the same stage"
    assert not (kata / "exercises" / "hints.json").exists()


# ---------------------------------------------------------------- stubs keep the steps


@pytest.mark.parametrize("stage", curriculum.load(), ids=lambda s: s.id)
def test_every_numbered_step_of_the_reference_is_in_the_stub_followed_by_a_todo(stage):
    reference = stage.source(curriculum.REFERENCE).read_text(encoding="utf-8")
    stub = stubgen.make_stub(reference, stage.id)
    steps = [line.strip() for line in reference.splitlines() if stubgen.STEP.match(line)]
    given = [line.strip() for line in stub.splitlines() if stubgen.STEP.match(line)]
    assert given == steps, f"{stage.id}: the stub's steps {given} differ from the reference's {steps}"
    lines = [line.strip() for line in stub.splitlines()]
    for index, line in enumerate(lines):
        if stubgen.STEP.match(line):
            assert lines[index + 1] == "# TODO", f"{stage.id}: {line!r} is not followed by '# TODO'"
    assert stubgen.make_stub(stub, stage.id) == stub, "a stub with steps is still a fixed point"


def test_a_stub_with_steps_has_no_code_between_them():
    source = ('def f(x):\n    """Doc."""\n    y = x + 1\n    # 1) add one\n    y = y + 1\n'
              '    for i in range(2):\n        # 2) double, twice\n        y = y * 2\n    return y\n')
    stub = stubgen.make_stub(source, "s01_vocab")
    assert stub.endswith('    """Doc."""\n    # 1) add one\n    # TODO\n    # 2) double, twice\n    # TODO\n'
                         '    raise NotImplementedError("s01_vocab: not written yet — python -m grader hint s01_vocab")\n'), stub


# ---------------------------------------------------------------- train and pictures: whose code, and crashes


def learner_tree(tmp_path: Path, mine: tuple[str, ...], edits: dict[str, tuple[str, str]] | None = None) -> Path:
    """Stubs for every stage, the reference's code for ``mine``, then each edit (old -> new) applied."""
    tree = tmp_path / "mine"
    stubgen.generate(curriculum.REFERENCE, tree)
    for stage_id in mine:
        shutil.copy(curriculum.REFERENCE / f"{stage_id}.py", tree / f"{stage_id}.py")
    for stage_id, (old, new) in (edits or {}).items():
        path = tree / f"{stage_id}.py"
        source = path.read_text(encoding="utf-8")
        assert source.count(old) == 1, f"{old!r} must occur once in {stage_id}"
        path.write_text(source.replace(old, new), encoding="utf-8")
    return tree


RESIDUAL = "        h = x + self.attn(self.attn_norm(x), mask, rope, cache)  # (B, S, D)"
IN_PLACE = "        x += self.attn(self.attn_norm(x), mask, rope, cache)\n        h = x"


@pytest.mark.slow  # trains a model
def test_train_names_the_learners_stage_of_an_in_place_bug_that_breaks_backward(tmp_path):
    """The issue's case: an in-place residual passes stage 18's own checks, then backward fails far
    away in the reference's training loop; the one line must still name s18 and a line of its file."""
    tree = learner_tree(tmp_path, ("s14_rope", "s15_causal_mask", "s16_gqa", "s17_swiglu_moe", "s18_rmsnorm",
                                   "s19_llama"), {"s18_rmsnorm": (RESIDUAL, IN_PLACE)})
    done = run(ROOT, "grader.train", "lm", "--impl", str(tree), "--steps", "2")
    line = one_line(done, 1, "your s18_rmsnorm crashed at mine/s18_rmsnorm.py:", "inplace", "(-v shows the traceback)")
    assert "reference" not in line, f"the learner must not be sent into the answer key: {line}"
    listed = next(ln for ln in done.stdout.splitlines() if ln.startswith("using yours: "))
    assert "s18_rmsnorm" in listed and "s19_llama" in listed, done.stdout
    assert "using reference/s20_lm_training.py: yours is not started" in done.stdout
    verbose = run(ROOT, "grader.train", "lm", "--impl", str(tree), "--steps", "2", "-v")
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("python -m grader.train: your s18_rmsnorm crashed")


def test_pictures_use_the_learners_stages_and_name_a_crashing_one(tmp_path):
    source = (curriculum.REFERENCE / "s06_feedforward.py").read_text(encoding="utf-8")
    old = next(line for line in source.splitlines() if line.strip().startswith("return ") and "linear2" in line)
    tree = learner_tree(tmp_path, ("s03_attention", "s06_feedforward"),
                        {"s06_feedforward": (old, "        raise ValueError('feed-forward went wrong')")})
    done = run(ROOT, "grader.pictures", "--impl", str(tree), "--out", str(tmp_path / "pics"), "--steps", "2",
               "--layers", "1")
    one_line(done, 1, "your s06_feedforward crashed at mine/s06_feedforward.py:", "ValueError: feed-forward went wrong")
    assert "using yours: s03_attention, s06_feedforward" in done.stdout, done.stdout
    assert "using reference/s05_multihead.py: yours is not started" in done.stdout, done.stdout


@pytest.mark.slow  # trains a model for the pictures
def test_pictures_show_progress_with_the_time_left_on_a_terminal(tmp_path):
    tree = learner_tree(tmp_path, ("s03_attention",))
    parent, child = pty.openpty()
    process = subprocess.Popen([*preloaded.python_m(environment()), "grader.pictures", "--impl", str(tree), "--out",
                                str(tmp_path / "pics"), "--steps", "10", "--layers", "1"],
                               cwd=ROOT, env=environment(), stdout=child, stderr=subprocess.PIPE)
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        output += chunk
    os.close(parent)
    assert process.wait(timeout=240) == 0, process.stderr.read()
    text = output.decode("utf-8", "replace")
    assert "using yours: s03_attention" in text, text
    assert re.search(r"step\s+10 .* at most about \d+s left", text), f"no estimate of the time left:\n{text}"
    assert "wrote " in text


def test_a_stage_file_that_is_not_utf8_is_substituted_and_named(tmp_path):
    tree = learner_tree(tmp_path, ("s03_attention",))
    (tree / "s02_embeddings.py").write_bytes(b"# \xff\xfe not UTF-8\n")
    done = run(ROOT, "grader.train", "copy", "--impl", str(tree), "--steps", "1", "--quiet")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "using reference/s02_embeddings.py: yours is refused (" in done.stdout, done.stdout
    assert "UTF-8" in done.stdout, done.stdout
    assert "using yours: s03_attention" in done.stdout, done.stdout
