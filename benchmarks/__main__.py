"""python -m benchmarks [--quick] [--json PATH] [--only ROW ...] [--markdown]

Runs every benchmark row, prints a table, and writes the numbers as JSON (by default to
benchmarks/results.json; a --quick run writes JSON only where --json says, so that it never
replaces the full results). Rows whose code is not written yet are reported as "n/a: <reason>".
Exit 0 when every row ran or was n/a for a missing piece, 1 when a row crashed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from .common import ROOT, Row, machine

DEFAULT_JSON = ROOT / "benchmarks" / "results.json"
ROWS = ("convergence", "robustness", "builtin", "attention", "grader", "part2", "bpe", "generate", "encode")
TITLES = {
    "convergence": "Capstone convergence",
    "builtin": "Reference vs torch.nn.Transformer",
    "attention": "Attention vs torch's fused attention",
    "grader": "Grader wall time",
    "part2": "Part II decoding and training",
    "robustness": "Capstone robustness",
    "bpe": "BPE training vs tokenizers",
    "generate": "grader.generate vs transformers",
    "encode": "Encoding vs tokenizers",
}
HELP_QUICK = "a tiny version of every row (one seed, a few steps): checks that the command works, measures nothing useful"
HELP_JSON = f"where to write the JSON (default: {DEFAULT_JSON.relative_to(ROOT)} for a full run, none for --quick)"
HELP_THREADS = "torch threads (default 1: single-threaded numbers are steadier on a shared machine)"


def run_row(row_id: str, quick: bool) -> Row:
    """Import and run one row's module; a crash becomes an n/a row that names the error."""
    from importlib import import_module

    try:
        module = import_module(f"benchmarks.{'grader_time' if row_id == 'grader' else row_id}")
        return module.run(quick=quick)
    except Exception as error:  # a broken row must not hide the others
        traceback.print_exc(file=sys.stderr)
        row = Row(row_id, TITLES[row_id], status=f"n/a: crashed: {type(error).__name__}: {error}"[:300])
        row.details["crashed"] = True
        return row


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{text} {unit}".strip()


def format_table(rows: list[Row]) -> str:
    lines = []
    for number, row in enumerate(rows, start=1):
        lines.append(f"{number}. {row.title}")
        if row.status != "ok":
            lines.append(f"   {row.status}")
        for m in row.measurements:
            verdict = {True: "met", False: "MISSED", None: ""}[m.met]
            target = f"target {m.target}" if m.target else ""
            lines.append(f"   {m.name:<62} {format_value(m.value, m.unit):>14}  {target:<16} {verdict}")
            if m.note:
                lines.append(f"      {m.note}")
        lines.append("")
    return "\n".join(lines)


def format_markdown(rows: list[Row], where: dict) -> str:
    lines = [f"Measured on {where['cpu']}, {where['cores']} cores, torch {where['torch']}, "
             f"{where['threads']} thread(s).", "", "| benchmark | value | target | |", "| --- | --- | --- | --- |"]
    for row in rows:
        if row.status != "ok":
            lines.append(f"| {TITLES[row.id]} | {row.status} | | |")
        for m in row.measurements:
            verdict = {True: "met", False: "missed", None: ""}[m.met]
            lines.append(f"| {m.name} | {format_value(m.value, m.unit)} | {m.target} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help=HELP_QUICK)
    parser.add_argument("--json", type=Path, default=None, help=HELP_JSON)
    parser.add_argument("--only", nargs="+", choices=ROWS, default=list(ROWS), help="run only these rows")
    parser.add_argument("--threads", type=int, default=1, help=HELP_THREADS)
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown, for the README")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")

    import torch

    torch.set_num_threads(args.threads)
    where = machine() | {"threads": args.threads}
    print(f"benchmarks{' (--quick: tiny sizes, numbers mean nothing)' if args.quick else ''} on {where['cpu']}, "
          f"{where['cores']} cores, torch {where['torch']}, {args.threads} thread(s), "
          f"load average {where['load_average_at_start']}\n", flush=True)
    started = time.perf_counter()
    rows = []
    for row_id in args.only:
        row = run_row(row_id, args.quick)
        rows.append(row)
        print(format_table([row]).replace("1. ", f"{ROWS.index(row_id) + 1}. ", 1), flush=True)
    total = time.perf_counter() - started
    print(f"total {total:.1f} s")
    if args.markdown:
        print("\n" + format_markdown(rows, where))

    destination = args.json if args.json is not None else (None if args.quick else DEFAULT_JSON)
    if destination is not None:
        measured = [r.to_json() | {"measured_on": where} for r in rows]
        report = {"quick": args.quick, "machine": where, "seconds": round(total, 1), "rows": measured}
        if set(args.only) != set(ROWS) and destination.is_file():
            # --only re-measures some rows: keep the others from the last full run
            kept = {row["id"]: row for row in json.loads(destination.read_text()).get("rows", [])}
            kept.update({row["id"]: row for row in measured})
            report["rows"] = [kept[row_id] for row_id in ROWS if row_id in kept]
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {destination}")
    return 1 if any(r.details.get("crashed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
