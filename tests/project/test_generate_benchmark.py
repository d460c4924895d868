"""The generation and encoding rows (python -m benchmarks --only generate encode) run and say what they measured.

Speed is never asserted (see test_benchmarks.py). On tiny shapes and a few tokens these check that
the generation row runs python -m grader.generate and transformers' generate on one checkpoint,
both writing every token and the same greedy text, and reports speed, time to first token, peak
memory and their ratios; that the encoding row gives the ids of `tokenizers` for every family of
tokenizer.json, on the book and on a short text of each family's quirks; and that both rows are n/a,
naming the install, without the Hugging Face packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from grader_kata import require_oracle

from benchmarks.encode import FAMILIES
from grader import curriculum

ROOT = curriculum.ROOT


def run_rows(tmp_path, env=None) -> dict:
    report = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "generate", "encode",
                           "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"expected exit 0, got {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return {row["id"]: row for row in json.loads(report.read_text())["rows"]}


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict:
    return run_rows(tmp_path_factory.mktemp("rows"))


@pytest.mark.slow  # a benchmark row: times both sides
def test_generate_row_times_both_sides_on_the_same_checkpoint(rows):
    row = rows["generate"]
    assert row["status"] == "ok", f"{row['status']}: pip install -r requirements-test.txt"
    values = {m["name"]: m["value"] for m in row["measurements"]}
    for side in ("grader.generate", "transformers"):
        for figure in ("decode tokens/s", "time to first token", "peak memory (max RSS)"):
            assert values.get(f"{side}: {figure}", 0) > 0, f"no {figure} for {side}: {values}"
    for ratio in ("decode tokens/s", "time to first token", "peak memory"):
        assert values.get(f"{ratio}: grader.generate / transformers", 0) > 0, f"no {ratio} ratio: {values}"
    runs = row["details"]["runs"]
    new_tokens = row["details"]["new_tokens"]
    for side, results in runs.items():
        assert [r["n_tokens"] for r in results] == [new_tokens] * len(results), \
            f"{side} stopped early or ran on: {[r['n_tokens'] for r in results]} tokens, expected {new_tokens}"
    assert [r["text"] for r in runs["kata"]] == [r["text"] for r in runs["transformers"]], \
        f"greedy on one checkpoint must write the same text: {runs}"


@pytest.mark.slow  # the same benchmark run as the row above
def test_encode_row_gives_the_ids_of_tokenizers_for_every_family(rows):
    row = rows["encode"]
    assert row["status"] == "ok", row["status"]
    ratios = [m for m in row["measurements"] if m["name"].endswith("kata time / tokenizers time")]
    assert [m["name"].split(":")[0] for m in ratios] == [family.name for family in FAMILIES], ratios
    for family in FAMILIES:
        assert row["details"][family.name]["same_ids"], f"{family.name}: the kata's ids differ from tokenizers'"
    assert all(m["value"] and m["value"] > 0 for m in ratios), ratios


# what the families read differently: runs of spaces, NFD accents, an added token that is not special, digits,
# a contraction, a byte SmolLM2's vocabulary lacks, tabs and newlines, characters the book never has
QUIRKS = ("  In 1818,   it was Cafe\u0301 cre\u0300me <tool_call>{\"x\": 12}</tool_call> I'm told\x04 of 1,234,567"
          "\n\n\t\u4e16 ")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name.split(" (")[0])
def test_each_family_of_the_encode_row_reads_its_quirks_as_tokenizers_does(family, tmp_path):
    Tokenizer = require_oracle("tokenizers").Tokenizer
    path = family.write(tmp_path, True)
    ours = family.load_kata(path).encode(QUIRKS)
    theirs = Tokenizer.from_file(str(path)).encode(QUIRKS, add_special_tokens=False).ids
    assert ours == theirs, (f"{family.name}: Observed the kata's ids {ours}, tokenizers' {theirs} on {QUIRKS!r}. "
                            "Likely cause: the row's file for this family is not the kind the kata reads.")


def test_without_the_hugging_face_packages_both_rows_are_na_and_say_how_to_install(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    for name in ("tokenizers", "transformers"):
        (blocker / f"{name}.py").write_text(f'raise ImportError("{name} hidden by the test", name="{name}")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])))
    rows = run_rows(tmp_path, env)
    for row_id in ("generate", "encode"):
        status = rows[row_id]["status"]
        assert status.startswith("n/a: ") and "pip install -r requirements-test.txt" in status, f"{row_id}: {status}"
