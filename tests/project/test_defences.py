"""The defences that live outside the stage runner: the loader's path checks, the forbidden-call guard
of tests/conftest.py, the integrity manifest and the static flags for in-memory patching.

Attacks are built from the reference (so everything but the attack is right) and run as a learner's
grader runs them: ``python -m grader`` or the stage suite under pytest, as a process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from grader import curriculum, integrity, loader
from grader_kata import run_module

ROOT = curriculum.ROOT


def reference_tree(target: Path, **edits: tuple[str, str]) -> Path:
    """A copy of reference/ with edits {stage id: (exact old text, new text)} to single stages."""
    shutil.copytree(ROOT / "reference", target, ignore=shutil.ignore_patterns("__pycache__"))
    for stage_id, (old, new) in edits.items():
        path = target / f"{stage_id}.py"
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"the edit for {stage_id} must match once: {old!r}"
        path.write_text(text.replace(old, new), encoding="utf-8")
    return target


def grade_one(stage: str, impl: Path) -> dict:
    """``python -m grader STAGE --impl IMPL --format json``: the stage's entry in the report."""
    done = run_module(ROOT, "grader", stage, "--impl", str(impl), "--format", "json")
    assert done.returncode == 1, f"expected exit 1 (a stage failed), got {done.returncode}: {done.stderr[-2000:]}"
    return next(s for s in json.loads(done.stdout)["stages"] if s["id"] == stage and not s["extra"])


# ---------------------------------------------------------------- the loader: only regular text files


def test_a_stage_file_that_is_a_link_is_refused_in_one_line(tmp_path):
    (tmp_path / "answers.py").write_text("VALUE = 42\n", encoding="utf-8")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "s01_a.py").symlink_to(tmp_path / "answers.py")
    with pytest.raises(loader.StageFileError) as caught:
        loader.load_stage({"s01_a": tree}, "s01_a")
    message = str(caught.value)
    assert "tree/s01_a.py is a link" in message and "\n" not in message, f"got {message!r}"


def test_a_link_inside_the_submission_is_refused_too(tmp_path):
    (tmp_path / "mine.py").write_text("VALUE = 42\n", encoding="utf-8")
    (tmp_path / "s01_a.py").symlink_to("mine.py")
    with pytest.raises(loader.StageFileError, match="is a link"):
        loader.load_stage({"s01_a": tmp_path}, "s01_a")


@pytest.mark.parametrize("make, expected", [
    (lambda path: path.write_bytes(b"VALUE = '\xff\xfe'\n"), "is not UTF-8 text"),
    (lambda path: path.mkdir(), "is not a regular file"),
    (lambda path: os.mkfifo(path), "is not a regular file"),  # opened without waiting for a writer
    (lambda path: path.write_bytes(b"#" * (loader.MAX_STAGE_BYTES + 1)), "larger than 1 MiB"),
    (lambda path: None, "no such file"),
], ids=["not-utf8", "a-folder", "a-pipe", "too-large", "missing"])
def test_a_stage_file_that_is_not_a_readable_text_file_gives_one_line(tmp_path, make, expected):
    make(tmp_path / "s01_a.py")
    with pytest.raises(loader.StageFileError) as caught:
        loader.read_stage(tmp_path / "s01_a.py")
    assert expected in str(caught.value) and "\n" not in str(caught.value), f"got {caught.value!r}"


def test_an_unreadable_stage_file_gives_one_line(tmp_path, monkeypatch):
    """Root reads any file, so the permission error is simulated where the loader opens the file."""
    path = tmp_path / "s01_a.py"
    path.write_text("VALUE = 1\n", encoding="utf-8")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(loader.StageFileError, match=r"s01_a.py cannot be read \(Permission denied\)"):
        loader.read_stage(path)


def test_stages_are_compiled_from_their_text_never_from_a_planted_pyc(tmp_path):
    """A .pyc whose header matches the source would otherwise run instead of the source the scans read."""
    source = tmp_path / "s01_a.py"
    source.write_text("VALUE = 1\n", encoding="utf-8")
    forged = compile("VALUE = 2\n", str(source), "exec")
    info = source.stat()
    cache = Path(importlib.util.cache_from_source(str(source)))
    cache.parent.mkdir()
    from importlib._bootstrap_external import _code_to_timestamp_pyc  # the format the import system reads

    cache.write_bytes(_code_to_timestamp_pyc(forged, info.st_mtime, info.st_size))
    assert loader.load_stage({"s01_a": tmp_path}, "s01_a").VALUE == 1, "the planted .pyc ran instead of the source"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "s01_a.py").write_text("VALUE = 3\n", encoding="utf-8")
    assert loader.load_stage({"s01_a": fresh}, "s01_a").VALUE == 3
    assert sorted(p.name for p in fresh.iterdir()) == ["s01_a.py"], "loading wrote into the learner's tree"


def test_the_grader_refuses_a_stage_linked_to_the_reference_in_one_line(tmp_path):
    tree = reference_tree(tmp_path / "tree")
    (tree / "s03_attention.py").unlink()
    (tree / "s03_attention.py").symlink_to(ROOT / "reference" / "s03_attention.py")
    stage = grade_one("s03_attention", tree)
    assert stage["score"] == 0 and stage["status"] == "error", f"got {stage['status']}, score {stage['score']}"
    assert "s03_attention.py is a link" in stage["reason"] and "\n" not in stage["reason"], stage["reason"]


# ---------------------------------------------------------------- forbidden calls, however referenced

SDPA_AT_IMPORT = ("import torch.nn.functional as F\n",
                  "import torch.nn.functional as F\nfrom torch.nn.functional import scaled_dot_product_attention as sdpa\n")
SDPA_OUTPUT = ("else weights @ value", "else sdpa(query, key, value, attn_mask=mask).nan_to_num()")


def test_attention_taken_at_import_time_is_still_refused(tmp_path):
    """The suite's own monkeypatch replaces F.scaled_dot_product_attention, which a reference taken at
    import time never sees; the guard in tests/conftest.py refuses the function itself."""
    tree = reference_tree(tmp_path / "tree", s03_attention=SDPA_AT_IMPORT)
    text = (tree / "s03_attention.py").read_text(encoding="utf-8").replace(*SDPA_OUTPUT)
    (tree / "s03_attention.py").write_text(text, encoding="utf-8")
    stage = grade_one("s03_attention", tree)
    assert stage["score"] == 0 and stage["status"] == "failing", f"got {stage['status']}, score {stage['score']}"
    refused = {t["name"]: t["message"] for t in stage["tests"] if "s03_attention forbids" in (t.get("message") or "")}
    assert "test_does_not_call_torch_attention" in refused, f"the teaching message is missing: {stage['tests'][:3]}"
    assert "your code called torch's scaled_dot_product_attention" in refused["test_does_not_call_torch_attention"]
    assert "Likely cause: this stage is about writing it yourself" in refused["test_does_not_call_torch_attention"]


def test_rms_norm_through_torch_ops_is_refused(tmp_path):
    """Another alias, taken at import time: torch.ops.aten.rms_norm is the same computation."""
    tree = reference_tree(tmp_path / "tree", s18_rmsnorm=(
        "        return x * torch.rsqrt(mean_square + self.eps) * self.weight\n",
        "        return RMS_NORM(x, [x.shape[-1]], self.weight, self.eps)\n"))
    text = (tree / "s18_rmsnorm.py").read_text(encoding="utf-8").replace(
        "from torch import nn\n", "from torch import nn\n\nRMS_NORM = torch.ops.aten.rms_norm\n", 1)
    (tree / "s18_rmsnorm.py").write_text(text, encoding="utf-8")
    done = run_module(ROOT, "pytest", str(ROOT / "tests" / "test_s18_rmsnorm.py"), "--impl", str(tree), "-p",
                      "no:cacheprovider", "-q", "--tb=line", "-k", "equals_torch_rmsnorm", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert done.returncode == 1, f"expected the suite to fail, got {done.returncode}:\n{done.stdout[-2000:]}"
    assert "2 failed" in done.stdout and "your code called torch's rms_norm, which s18_rmsnorm forbids" in done.stdout, \
        done.stdout[-2000:]


@pytest.mark.parametrize("stage_id, cheat, expected", [
    ("s18_rmsnorm", "\nRMSNorm = nn.RMSNorm\n",
     "RMSNorm in your s18_rmsnorm.py is torch.nn.modules.normalization.RMSNorm, not a class written in that file"),
    ("s03_attention", "\ndef scaled_dot_product_attention(*args, **kwargs):\n    return 0\n"
                      "scaled_dot_product_attention = F.scaled_dot_product_attention\n",
     "scaled_dot_product_attention in your s03_attention.py is torch._C._nn.scaled_dot_product_attention"),
], ids=["torch-class-as-mine", "torch-function-as-mine"])
def test_torch_own_implementation_handed_in_as_the_learner_is_refused(tmp_path, stage_id, cheat, expected):
    """The test calls what the stage module names; were that torch's own, the guard would take the call
    for the test's oracle. A guarded stage's definitions must be written in the learner's file."""
    tree = reference_tree(tmp_path / "tree")
    with open(tree / f"{stage_id}.py", "a", encoding="utf-8") as handle:
        handle.write(cheat)
    done = run_module(ROOT, "pytest", str(ROOT / "tests" / f"test_{stage_id}.py"), "--impl", str(tree), "-p",
                      "no:cacheprovider", "-q", "--tb=short", "-x", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert done.returncode == 1 and "1 error" in done.stdout, f"expected the suite to error:\n{done.stdout[-2000:]}"
    assert expected in done.stdout, done.stdout[-2000:]


# ---------------------------------------------------------------- integrity: the tree that grades everyone


@pytest.fixture
def kata_copy(tmp_path) -> Path:
    """The graded files of this repository, copied with a manifest of their own."""
    for path in integrity.hashed_files(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    integrity.refresh(tmp_path, tmp_path / "grader" / "test_hashes.json")
    return tmp_path


def test_the_manifest_covers_the_grader_the_reference_the_suites_and_the_manifest(kata_copy):
    names = set(integrity.current_hashes(kata_copy))
    for expected in ("grader/grading.py", "grader/loader.py", "reference/s03_attention.py", "tests/conftest.py",
                     "tests/checks.py", "tests/test_s03_attention.py", "curriculum.toml", "data/frankenstein.txt"):
        assert expected in names, f"{expected} is not hashed"


@pytest.mark.parametrize("edited", ["grader/grading.py", "reference/s03_attention.py", "tests/conftest.py"])
def test_an_edited_grader_or_reference_file_is_reported(kata_copy, edited):
    manifest = kata_copy / "grader" / "test_hashes.json"
    assert integrity.check_hashes(kata_copy, manifest) == [], "a fresh copy must match its manifest"
    before = integrity.snapshot(kata_copy)
    with open(kata_copy / edited, "a", encoding="utf-8") as handle:
        handle.write("\n# edited\n")
    assert integrity.check_hashes(kata_copy, manifest) == [f"{edited} differs from the shipped version (edited?)"]
    assert integrity.changed_since(before, kata_copy) == [f"{edited} differs from the start of the batch (edited?)"]


def test_a_rewritten_manifest_does_not_hide_a_change_from_a_batch(kata_copy):
    before = integrity.snapshot(kata_copy)
    (kata_copy / "grader" / "render.py").write_text("# forged\n", encoding="utf-8")
    integrity.refresh(kata_copy, kata_copy / "grader" / "test_hashes.json")  # what a submission could do
    assert integrity.check_hashes(kata_copy, kata_copy / "grader" / "test_hashes.json") == []
    changed = integrity.changed_since(before, kata_copy)
    assert changed == ["grader/render.py differs from the start of the batch (edited?)",
                       "grader/test_hashes.json differs from the start of the batch (edited?)"], changed


# ---------------------------------------------------------------- flags: tools for patching in memory

FLAGGED = {  # what the issue lists, each as a learner would write it -> what the flag names
    "sys.modules": ("import sys\nsys.modules['checks'].assert_close = print\n", "sys.modules"),
    "gc": ("import gc\nobjects = gc.get_objects()\n", "gc"),
    "ctypes": ("import ctypes\nctypes.memmove(0, 0, 0)\n", "ctypes"),
    "/proc": ("maps = open('/proc/self/maps').read()\n", "'/proc'"),
    "exec": ("exec('VALUE = 1')\n", "exec"),
    "compile": ("code = compile('VALUE = 1', 'x.py', 'exec')\n", "compile"),
    "importlib.util": ("from importlib.util import spec_from_file_location as load\n", "importlib"),
    "inspect": ("import inspect\nframe = inspect.currentframe()\n", "inspect"),
    "sys._getframe": ("import sys\ncaller = sys._getframe(1)\n", "sys._getframe"),
    "f_back": ("def up(frame):\n    return frame.f_back\n", "f_back"),
    "f_globals": ("def names(frame):\n    return frame.f_globals\n", "f_globals"),
    "test module": ("import sys\nsuite = sys.modules.get('test_s03_attention')\n", "'test_s03_attention'"),
    "getattr(sys)": ("import sys\nmodules = getattr(sys, 'modules')\n", "sys.modules"),
    "os.fork": ("import os\nchild = os.fork()\n", "os.fork"),
    "setsid": ("from os import setsid\nsetsid()\n", "os.setsid"),
    "subprocess": ("import subprocess\nsubprocess.Popen(['sleep', '100'])\n", "subprocess"),
    "__torch_function__": ("import torch\nclass Liar(torch.Tensor):\n    @classmethod\n"
                           "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n        return True\n",
                           "__torch_function__"),
    "builtins": ("import builtins\nbuiltins.isinstance = lambda *a: True\n", "builtins"),
    "__builtins__": ("__builtins__['len'] = None\n", "__builtins__"),
    "guard off": ("import torch\nwith torch._C.DisableTorchFunction():\n    pass\n", "torch._C"),
    "thread": ("import threading\nthreading.Thread(target=print).start()\n", "threading"),
    "disguise": ("import functools\nfake = functools.partial(print)\nfake.__wrapped__ = len\n", "__wrapped__"),
    "patch torch": ("import torch.nn.functional as F\nF.softmax = lambda x, dim: x\n", "assigns into torch.nn.functional"),
}


@pytest.mark.parametrize("tool", FLAGGED)
def test_each_tool_for_patching_in_memory_is_flagged(tool):
    source, named = FLAGGED[tool]
    found = integrity.flags(source)
    assert any(f": {named} (" in line for line in found), f"{tool}: expected a flag naming {named}, got {found}"
    assert all(line.startswith("line ") and "\n" not in line for line in found), found


def test_the_reference_and_the_stubs_raise_no_flag(stub_tree):
    stages = curriculum.load()
    for tree in (ROOT / "reference", stub_tree):
        found = integrity.flag_stages(stages, tree)
        assert found == [], f"plain stage files must not be flagged, got {found}"


def test_flag_stages_names_the_stage_and_the_reason(tmp_path):
    stages = curriculum.load()
    (tmp_path / "s02_embeddings.py").write_text("import gc\n", encoding="utf-8")
    (tmp_path / "s03_attention.py").write_bytes(b"\xff")  # unreadable as text: the run reports it, not the flags
    assert integrity.flag_stages(stages, tmp_path) == [("s02_embeddings", "line 1: gc (reaches any object in memory)")]
