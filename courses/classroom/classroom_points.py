"""Turn the grader's JSON result into the points GitHub Classroom records.

    python courses/classroom/classroom_points.py RESULT.json

Run by .github/workflows/classroom.yml after ``python -m grader --format json --ci --output RESULT.json``.
It writes, for Classroom's grading reporter (classroom-resources/autograding-grading-reporter), the
step output ``result``: base64 of ``{"version": 1, "status", "max_score", "tests": [...]}``, one
test a stage with the points it earned (the reporter adds up ``tests[].score`` and ``max_score``
and sends "Points X/Y" to Classroom). It also appends a Markdown table to the job summary.

When the grader produced no result (the submission has no exercises/ folder, say), every stage
scores 0 and the reason is reported: the student always sees why. Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tomllib
from pathlib import Path

KATA = Path(__file__).resolve().parent.parent.parent  # courses/classroom/ -> the kata's root
SCHEMA = "transformer-kata/grader-result/1"


def max_points(kata: Path = KATA) -> float:
    """What the grader would have graded: every stage with a suite, at its points."""
    stages = tomllib.loads((kata / "curriculum.toml").read_text(encoding="utf-8")).get("stage", [])
    return float(sum(s["points"] for s in stages if (kata / "tests" / f"test_{s['id']}.py").is_file()))


def read_result(path: Path) -> tuple[dict | None, str]:
    """(the grader's document, '') or (None, why there is none)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "the grader wrote no result (does the repository still have its exercises/ folder?)"
    except (OSError, ValueError) as error:
        return None, f"the grader's result cannot be read ({error})"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("stages"), list):
        return None, "the grader's result is not a grader result document"
    return doc, ""


def classroom_result(doc: dict | None, problem: str = "", kata: Path = KATA) -> dict:
    """The grading reporter's document: one test a graded stage, with its points."""
    if doc is None:
        return {"version": 1, "status": "error", "max_score": max_points(kata),
                "tests": [{"name": "Transformer kata", "status": "error", "score": 0, "message": problem,
                           "test_code": "python -m grader", "line_no": 0, "execution_time": "0s"}]}
    tests = []
    for stage in doc["stages"]:
        if stage.get("status") == "missing":
            continue
        label = stage["id"] if not stage.get("extra") else f"{stage['id']} + {stage['suite']}"
        passed = stage.get("status") == "passed"
        message = "" if passed else f"{stage.get('status')}: {stage.get('reason') or 'see the job summary'}"
        if stage.get("substituted"):
            message += f" (used reference/ for: {', '.join(stage['substituted'])})"
        tests.append({"name": f"{stage['number']:02d} {label}: {stage.get('title', '')}",
                      "status": "pass" if passed else "fail", "score": stage.get("score", 0),
                      "message": message.strip(), "test_code": f"python -m grader {stage['number']}",
                      "line_no": 0, "execution_time": f"{stage.get('duration', 0):.1f}s"})
    integrity = [n for n in doc.get("notes", []) if str(n).startswith("integrity:")]
    status = "pass" if doc.get("passed") else ("error" if integrity else "fail")
    return {"version": 1, "status": status, "max_score": doc.get("max_score", 0), "tests": tests}


def summary(result: dict) -> str:
    score = sum(t["score"] for t in result["tests"])
    lines = ["## Transformer kata", "", f"**{score:g} / {result['max_score']:g} points**", "",
             "| stage | result | points | notes |", "| --- | --- | --- | --- |"]
    for test in result["tests"]:
        mark = "✅" if test["status"] == "pass" else "❌"
        lines.append(f"| {test['name']} | {mark} | {test['score']:g} | {test['message'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python courses/classroom/classroom_points.py RESULT.json", file=sys.stderr)
        return 2
    doc, problem = read_result(Path(argv[0]))
    result = classroom_result(doc, problem)
    encoded = base64.b64encode(json.dumps(result).encode()).decode()
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"result={encoded}\n")
    else:
        print(f"result={encoded}")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as handle:
            handle.write(summary(result))
    score = sum(t["score"] for t in result["tests"])
    print(f"Points {score:g}/{result['max_score']:g}" + (f" ({problem})" if problem else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
