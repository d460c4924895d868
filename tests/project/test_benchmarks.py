"""`python -m benchmarks` runs from the README on a fresh machine: every row is printed and saved.

Speed is never asserted here (a shared CI machine makes any threshold flaky); the benchmark
itself reports whether the targets are met. These tests check that the command works.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import __main__ as command
from grader import curriculum

ROOT = curriculum.ROOT
ROW_IDS = ["convergence", "robustness", "builtin", "attention", "grader", "part2", "bpe", "generate", "encode"]


@pytest.mark.slow
def test_quick_run_prints_every_row_and_writes_them_as_json(tmp_path):
    report = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"expected exit 0, got {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    for number in range(1, len(ROW_IDS) + 1):
        assert f"\n{number}. " in done.stdout, f"row {number} missing from the table:\n{done.stdout}"
    assert f"wrote {report}" in done.stdout, f"expected the JSON path to be announced:\n{done.stdout}"

    data = json.loads(report.read_text())
    assert data["quick"] is True, f"expected quick: true, got {data['quick']!r}"
    assert {"cpu", "cores", "torch", "threads"} <= data["machine"].keys(), \
        f"the machine description lacks fields: {sorted(data['machine'])}"
    assert [row["id"] for row in data["rows"]] == ROW_IDS, \
        f"expected rows {ROW_IDS}, got {[row['id'] for row in data['rows']]}"
    for row in data["rows"]:
        assert row["status"] == "ok" or row["status"].startswith("n/a: "), \
            f"row {row['id']}: status must be 'ok' or 'n/a: <reason>', got {row['status']!r}"
        assert "crashed" not in row["status"], f"row {row['id']} crashed: {row['status']}\n{done.stderr[-3000:]}"
        if row["status"] == "ok":
            assert row["measurements"], f"row {row['id']} is ok but measured nothing"
        for m in row["measurements"]:
            assert {"name", "value", "unit", "target", "met", "note"} <= m.keys(), f"row {row['id']}: {m}"
            assert m["value"] is None or isinstance(m["value"], (int, float)), \
                f"row {row['id']}, {m['name']}: value must be a number or null, got {m['value']!r}"
            if m["value"] is None:
                assert m["note"], f"row {row['id']}, {m['name']}: a missing value needs a note saying why"


def test_a_crashing_row_becomes_na_with_its_error_and_exit_1(tmp_path, monkeypatch, capsys):
    from benchmarks import attention

    def broken(quick=False):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(attention, "run", broken)
    report = tmp_path / "b.json"
    code = command.main(["--quick", "--only", "attention", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 1, f"expected exit 1 when a row crashes, got {code}"
    assert "n/a: crashed: RuntimeError: simulated failure" in out, f"the table should name the error:\n{out}"
    (row,) = json.loads(report.read_text())["rows"]
    assert row["status"].startswith("n/a: crashed"), f"got {row['status']!r}"


def test_quick_run_without_json_does_not_replace_the_full_results(tmp_path, monkeypatch, capsys):
    target = tmp_path / "results.json"
    monkeypatch.setattr(command, "DEFAULT_JSON", target)
    monkeypatch.setattr(command, "run_row", lambda row_id, quick: command.Row(row_id, "stand-in"))
    assert command.main(["--quick", "--only", "grader"]) == 0
    assert not target.exists(), "--quick without --json must not overwrite benchmarks/results.json"
    assert command.main(["--only", "grader"]) == 0
    assert target.is_file(), "a full run without --json should write the default results file"
