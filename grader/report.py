"""Render a Report: the learner's scorecard (text) and the formats CI systems read.

Every function here is pure: a Report in, a string out. The JSON document is Report.to_dict();
its schema is in docs/grader.md.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

from .results import ERROR, FAILING, MISSING, NOT_STARTED, PASSED, TIMED_OUT, Report, StageResult

FORMATS = ("text", "json", "junit", "gradescope", "github")
MESSAGE_LINES = 16  # a first failure's message is cut here on the learner's screen; -v and JSON keep it whole
NAME_LINES = 3  # lines of other failing tests' names on the learner's screen

_COLOURS = {PASSED: "32", FAILING: "31", ERROR: "31;1", TIMED_OUT: "33", NOT_STARTED: "2", MISSING: "2"}


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour and code else text


def _points(value: float) -> str:
    return f"{value:g}"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def stage_label(result: StageResult) -> str:
    return result.id if not result.extra else f"{result.id} + {result.suite}"


def scorecard(report: Report, *, colour: bool = False, impl_display: str = "exercises") -> str:
    """The learner's view: a line a stage, the total, substitutions, and what to do next."""
    lines = [f"Transformer kata: grading {impl_display}/", f"  {report.fallback_note}"]
    lines += [f"  note: {note}" for note in report.notes]
    lines.append("")
    width = max([len(stage_label(s)) for s in report.stages] + [5])
    lines.append(f"  {'#':>2}  {'stage':<{width}}  {'status':<16}  points")
    for s in report.stages:
        status = _paint(f"{s.status_text():<16}", _COLOURS.get(s.status, ""), colour)
        points = "-" if s.status == MISSING else f"{_points(s.score)}/{_points(s.max_score)}"
        line = f"  {s.number:>2}  {stage_label(s):<{width}}  {status}  {points:<7}"
        extra = s.reason if s.status in (ERROR, TIMED_OUT, MISSING) else ""
        if extra:
            line += f"  {extra}"
        lines.append(line.rstrip())
        if s.substituted:
            lines.append(_paint(f"  {'':>2}  {'':<{width}}  ↳ used reference/ for: {', '.join(s.substituted)}", "33", colour))
    graded = report.graded
    done = sum(s.status == PASSED for s in graded)
    lines.append("")
    total = f"Total: {_points(report.score)}/{_points(report.max_score)} points, {done} of {len(graded)} graded suites pass"
    missing = sum(s.status == MISSING for s in report.stages)
    if missing:
        total += f" ({missing} without a suite yet, not counted)"
    lines.append(_paint(total, "1", colour))
    substituted = sorted({d for s in report.stages for d in s.substituted})
    if substituted:
        lines.append(_paint(f"Substituted from reference/ somewhere in this run: {', '.join(substituted)}", "33", colour))
    lines.append("")
    lines += next_steps(report, impl_display)
    return "\n".join(lines) + "\n"


def next_steps(report: Report, impl_display: str = "exercises") -> list[str]:
    """What to open next, and the first failing test of the current stage (as on the stage's own screen)."""
    current = report.current()
    if current is None:
        if not report.graded:
            return ["Nothing was graded: no stage has a suite yet."]
        return ["Every graded stage passes. Well done."]
    number = current.number
    lines = [f"Next: stage {number}, {current.id} ({current.title}): {current.status_text()}"]
    if current.status == NOT_STARTED:
        lines.append(f"  Open {impl_display}/{current.id}.py and read its docstrings: they are the spec.")
    else:  # the stage's own screen, less its status and its last line
        lines += brief(current, impl_display=impl_display).splitlines()[1:-1] + [f"  Open {impl_display}/{current.id}.py"]
    return lines + [f"  Details: python -m grader {number}    A hint: python -m grader hint {number}"]


def _message(test, indent: str = "      ", limit: int | None = None) -> list[str]:
    """A test's message (with its exception's name unless an assertion), cut to ``limit`` lines."""
    head = f"{test.exc_type}: " if test.exc_type not in ("AssertionError", "") else ""
    lines = _indent(head + test.message.strip(), indent).splitlines() if test.message else []
    if limit is not None and len(lines) > limit:
        lines = lines[: limit - 1] + [f"{indent}... ({len(lines) - limit + 1} more lines: add -v)"]
    return lines


def first_failure(result: StageResult, impl_display: str = "exercises") -> list[str]:
    """The first failing test: its name, where in the learner's file, and its message (what was called,
    expected, got, the likely cause), cut to MESSAGE_LINES."""
    test = result.first_failure()
    if test is None:
        return []
    where = f" ({impl_display}/{test.where})" if test.where and not result.extra else ""
    return [f"  First failing test: {test.name}{where}"] + _message(test, limit=MESSAGE_LINES)


def _head(result: StageResult, colour: bool) -> list[str]:
    """The status line, then which stages came from reference/."""
    status = _paint(result.status_text(), _COLOURS.get(result.status, ""), colour)
    used = f"  used reference/ for: {', '.join(result.substituted)} (yours do not pass yet)"
    return [f"{stage_label(result)}: {status}  ({_points(result.score)}/{_points(result.max_score)} points)"] + \
        [used] * bool(result.substituted)


def brief(result: StageResult, *, colour: bool = False, impl_display: str = "exercises") -> str:
    """One stage on one screen (python -m grader <stage>): its status, the first failure in full, the
    other failures by name only (most follow from the first), and the commands to run next."""
    head = _head(result, colour)
    if result.status in (PASSED, MISSING):
        return head[0] + (f": {result.reason}" if result.reason else "") + "\n"
    if result.status == NOT_STARTED:
        return (f"{head[0]}: open {impl_display}/{result.id}.py, its docstrings are the spec "
                f"(a hint: python -m grader hint {result.number})\n")
    lines = head[:1] + [f"  {result.reason}"] * bool(result.reason and result.status in (ERROR, TIMED_OUT)) + head[1:]
    failing = [t for t in result.tests if not t.passed]
    if result.status == ERROR and failing and len({(t.exc_type, t.message) for t in failing}) == 1 \
            and _message(failing[0], "")[0] in result.reason:  # the reason already says it all
        lines.append(f"  every test ({len(failing)}) fails with this error")
        failing = []
    lines += first_failure(result, impl_display) if failing else []
    others = [t.name.split("[")[0] for t in failing][1:]
    if others:
        names = ", ".join(name + (f" (x{others.count(name)})" if others.count(name) > 1 else "") for name in dict.fromkeys(others))
        wrapped = textwrap.wrap(f"  {len(others)} more failing, often for the same reason: {names}", 100,
                                subsequent_indent="    ")
        lines += wrapped[:NAME_LINES] + ["    ..."] * (len(wrapped) > NAME_LINES)
    lines.append(f"Next: python -m grader hint {result.number}    every failure in full: "
                 f"python -m grader {result.number} -v")
    return "\n".join(lines) + "\n"


def detail(result: StageResult, *, colour: bool = False) -> str:
    """One unit in full: every test with its outcome and message (python -m grader <stage> -v)."""
    lines = _head(result, colour)
    lines[1:1] = [f"  {result.reason}"] * bool(result.reason)
    for test in [t for t in result.tests if not t.passed]:
        lines += [f"  {test.outcome:<7} {test.name}" + (f" ({test.where})" if test.where else "")] + _message(test)
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def _failure_text(s: StageResult, limit: int = 3) -> str:
    parts = [s.reason] if s.reason else []
    for test in [t for t in s.tests if not t.passed][:limit]:
        where = f" ({test.where})" if test.where else ""
        parts.append(f"{test.name}{where}: {test.exc_type}: {test.message.strip()}")
    return "\n".join(parts)


def to_junit(report: Report) -> str:
    """JUnit XML: one <testsuite> a unit, one <testcase> a test; a unit that never ran is one case."""
    suites = ET.Element("testsuites", name="transformer-kata", tests="0", failures="0", errors="0", skipped="0")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in report.stages:
        suite = ET.SubElement(suites, "testsuite", name=stage_label(s), time=f"{s.duration:.3f}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        cases = s.tests or [None]
        for test in cases:
            counts["tests"] += 1
            name = test.name if test else s.suite
            case = ET.SubElement(suite, "testcase", classname=s.id, name=name,
                                 time=f"{test.duration:.3f}" if test else "0")
            if s.status == MISSING:
                ET.SubElement(case, "skipped", message=s.reason)
                counts["skipped"] += 1
            elif test is None:
                ET.SubElement(case, "error", message=s.reason or s.status).text = s.reason
                counts["errors"] += 1
            elif not test.passed:
                kind = "failure" if test.outcome == "failed" else "error"
                message = f"{test.exc_type}: {test.message}".strip(": ")
                ET.SubElement(case, kind, message=message.splitlines()[0] if message else test.outcome,
                              type=test.exc_type or test.outcome).text = message
                counts["failures" if kind == "failure" else "errors"] += 1
        if s.reason and s.tests and s.status in (ERROR, TIMED_OUT):
            ET.SubElement(suite, "system-err").text = s.reason
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        suites.set(key, str(value))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def to_gradescope(report: Report, hidden_visibility: str = "after_published") -> dict:
    """Gradescope's results.json: one entry a graded unit, the hidden suites with their own visibility."""
    tests = []
    for s in report.graded:
        tests.append({
            "name": f"{s.number:02d} {stage_label(s)}: {s.title}",
            "number": str(s.number),
            "score": s.score,
            "max_score": s.max_score,
            "status": "passed" if s.status == PASSED else "failed",
            "output": f"{s.status_text()}" + (f"\n{_failure_text(s)}" if s.status != PASSED else "")
                      + (f"\nused reference/ for: {', '.join(s.substituted)}" if s.substituted else ""),
            "visibility": hidden_visibility if s.extra else "visible",
        })
    return {
        "score": report.score,
        "max_score": report.max_score,
        "output": "\n".join(report.notes) or "Transformer kata autograder",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def to_github(report: Report, impl_display: str = "exercises") -> tuple[str, list[str]]:
    """(Markdown job summary, workflow-command annotation lines)."""
    lines = ["## Transformer kata", "", f"**{_points(report.score)} / {_points(report.max_score)} points**", "",
             f"_{report.fallback_note}_", ""]
    lines += [f"> {note}" for note in report.notes]
    lines += ["", "| # | stage | status | points | notes |", "| --- | --- | --- | --- | --- |"]
    icons = {PASSED: "✅", FAILING: "❌", ERROR: "💥", TIMED_OUT: "⏱️", NOT_STARTED: "⬜", MISSING: "➖"}
    for s in report.stages:
        notes = s.reason if s.status != FAILING else ""
        if s.substituted:
            notes = (notes + "; " if notes else "") + "reference/ used for " + ", ".join(s.substituted)
        points = "-" if s.status == MISSING else f"{_points(s.score)}/{_points(s.max_score)}"
        lines.append(f"| {s.number} | `{stage_label(s)}` | {icons.get(s.status, '')} {s.status_text()} | {points} | "
                     f"{notes.replace('|', '/')} |")
    annotations = []
    for s in report.graded:
        if s.status in (PASSED, NOT_STARTED):
            continue
        first = s.first_failure()
        message = s.reason if s.status != FAILING or first is None else f"{first.name}: {first.message.strip()}"
        properties = f"file={impl_display}/{s.id}.py,title={s.id} {s.status_text()}"
        if first is not None and first.where and ":" in first.where:
            name, line = first.where.rsplit(":", 1)
            properties = f"file={impl_display}/{name},line={line},title={s.id} {s.status_text()}"
        annotations.append(f"::error {properties}::{_escape(message)}")
    return "\n".join(lines) + "\n", annotations


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
