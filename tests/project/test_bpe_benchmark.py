"""The BPE training benchmark row (python -m benchmarks --only bpe) runs and says what it measured.

Speed is never asserted (see test_benchmarks.py); these check that the row trains both tokenizers
to the same number of merges and reports a ratio for every size, and that it stays usable, with
its tokenizers column n/a and a note saying how to install it, where `tokenizers` is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from grader import curriculum

ROOT = curriculum.ROOT


def run_row(tmp_path, env=None):
    report = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "bpe", "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"expected exit 0, got {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    (row,) = json.loads(report.read_text())["rows"]
    assert row["id"] == "bpe" and row["status"] == "ok", row["status"]
    return row


def test_bpe_row_compares_with_tokenizers_on_the_same_job(tmp_path):
    row = run_row(tmp_path)
    ratios = [m for m in row["measurements"] if "kata time / tokenizers time" in m["name"]]
    assert [m["name"].split(":")[0] for m in ratios] == [f"{n}x the book ({kind})" for kind in ("repeated", "shifted")
                                                         for n in (1, 2)], ratios
    for m in ratios:
        assert m["value"] is not None and m["value"] > 0, f"no ratio ({m['note']}): pip install -r requirements-test.txt"
        merges = [part for part in m["note"].split("(")[1:] if "merges" in part]
        assert len(merges) == 2 and merges[0].split()[0] == merges[1].split()[0], \
            f"both trainers must make the same number of merges: {m['note']}"
    names = [m["name"] for m in row["measurements"]]
    for kind in ("repeated", "shifted"):
        assert f"kata: time at 2x the book ({kind}) / time at 1x" in names, names
        assert f"tokenizers: time at 2x the book ({kind}) / time at 1x" in names, names


def test_bpe_row_without_tokenizers_reports_na_and_how_to_install(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "tokenizers.py").write_text('raise ImportError("tokenizers hidden by the test")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])))
    row = run_row(tmp_path, env)
    ratios = [m for m in row["measurements"] if "kata time / tokenizers time" in m["name"]]
    assert ratios and all(m["value"] is None and "pip install -r requirements-test.txt" in m["note"] for m in ratios), ratios
    assert any(m["name"].startswith("kata: time at") and m["value"] for m in row["measurements"]), row["measurements"]
