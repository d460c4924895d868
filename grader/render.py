"""Render a Report (pure functions): the learner's scorecard and the formats CI reads (JSON schema: docs/grader.md)."""

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


def _score(result: StageResult) -> str:
    return "-" if result.status == MISSING else f"{result.score:g}/{result.max_score:g}"


def stage_label(result: StageResult) -> str:
    return result.id if not result.extra else f"{result.id} + {result.suite}"


def scorecard(report: Report, *, colour: bool = False, impl_display: str = "exercises") -> str:
    """The learner's view: a line a stage, the total, substitutions, and what to do next."""
    lines = [f"Transformer kata: grading {impl_display}/", f"  {report.fallback_note}"]
    lines += [f"  note: {note}" for note in report.notes] + [""]
    width = max([len(stage_label(s)) for s in report.stages] + [5])
    lines.append(f"  {'#':>2}  {'stage':<{width}}  {'status':<16}  points")
    for s in report.stages:
        status = _paint(f"{s.status_text():<16}", _COLOURS.get(s.status, ""), colour)
        extra = s.reason if s.status in (ERROR, TIMED_OUT, MISSING) else ""
        lines.append(f"  {s.number:>2}  {stage_label(s):<{width}}  {status}  {_score(s):<7}  {extra}".rstrip())
        if s.substituted and s.status != NOT_STARTED:  # a stub's verdict does not depend on what it loads
            lines.append(_paint(f"{'':{width + 8}}↳ used reference/ for: {', '.join(s.substituted)}", "33", colour))
    graded, missing = report.graded, len(report.stages) - len(report.graded)
    total = (f"Total: {report.score:g}/{report.max_score:g} points, {sum(s.status == PASSED for s in graded)} of "
             f"{len(graded)} graded suites pass" + f" ({missing} without a suite yet, not counted)" * bool(missing))
    lines += ["", _paint(total, "1", colour)]
    if reused := sum(s.reused for s in report.stages):
        lines.append(f"Reused {reused} verdict{'s' * (reused > 1)} from an earlier run (nothing they depend on "
                     "changed); --fresh re-grades every stage")
    if substituted := ", ".join(sorted({d for s in report.stages if s.status != NOT_STARTED for d in s.substituted})):
        lines.append(_paint(f"Substituted from reference/ somewhere in this run: {substituted}", "33", colour))
    return "\n".join(lines + [""] + next_steps(report, impl_display)) + "\n"


def next_steps(report: Report, impl_display: str = "exercises") -> list[str]:
    """What to open next, and the first failing test of the current stage (as on the stage's own screen)."""
    current = report.current()
    if current is None:
        return ["Every graded stage passes. Well done." if report.graded
                else "Nothing was graded: no stage has a suite yet."]
    lines = [f"Next: stage {current.number}, {current.id} ({current.title}): {current.status_text()}"]
    if current.status == NOT_STARTED:
        lines.append(f"  Open {impl_display}/{current.id}.py and read its docstrings: they are the spec.")
    else:  # the stage's own screen, less its status and its last line
        lines += brief(current, impl_display=impl_display).splitlines()[1:-1]
        lines.append(f"  Open {impl_display}/{current.id}.py")
    return lines + [f"  Details: python -m grader {current.number}    A hint: python -m grader hint {current.number}"]


def _message(test, indent: str = "      ", limit: int | None = None) -> list[str]:
    """A test's message (with its exception's name unless an assertion), cut to ``limit`` lines."""
    head = f"{test.exc_type}: " if test.exc_type not in ("AssertionError", "") else ""
    lines = [indent + line for line in (head + test.message.strip()).splitlines()] if test.message else []
    if limit is not None and len(lines) > limit:
        lines = lines[: limit - 1] + [f"{indent}... ({len(lines) - limit + 1} more lines: add -v)"]
    return lines


def _head(result: StageResult, colour: bool, reason: bool = False) -> list[str]:
    """The status line, the reason (if asked for and there is one), then which stages came from reference/."""
    status = _paint(result.status_text(), _COLOURS.get(result.status, ""), colour)
    used = f"  used reference/ for: {', '.join(result.substituted)} (yours do not pass yet)"
    return [f"{stage_label(result)}: {status}  ({result.score:g}/{result.max_score:g} points)"
            + "  (reused: nothing it depends on changed)" * result.reused] + \
        [f"  {result.reason}"] * bool(reason and result.reason) + [used] * bool(result.substituted)


def brief(result: StageResult, *, colour: bool = False, impl_display: str = "exercises") -> str:
    """python -m grader <stage>: status, the first failing test in full, the others by name only, what to run next."""
    lines = _head(result, colour, result.status in (ERROR, TIMED_OUT))
    if result.status in (PASSED, MISSING):
        return lines[0] + (f": {result.reason}" if result.reason else "") + "\n"
    if result.status == NOT_STARTED:
        return (f"{lines[0]}: open {impl_display}/{result.id}.py, its docstrings are the spec "
                f"(a hint: python -m grader hint {result.number})\n")
    failing = [t for t in result.tests if not t.passed]
    if result.status == ERROR and len({(t.exc_type, t.message) for t in failing}) == 1 and failing[0].message \
            and _message(failing[0], "")[0] in result.reason:  # the reason already says it all
        lines.append(f"  every test ({len(failing)}) fails with this error")
        failing = []
    if failing:
        where = f" ({impl_display}/{failing[0].where})" if failing[0].where and not result.extra else ""
        lines += [f"  First failing test: {failing[0].name}{where}"] + _message(failing[0], limit=MESSAGE_LINES)
    if others := [t.name.split("[")[0] for t in failing][1:]:
        names = ", ".join(name + (f" (x{others.count(name)})" if others.count(name) > 1 else "")
                          for name in dict.fromkeys(others))
        wrapped = textwrap.wrap(f"  {len(others)} more failing, often for the same reason: {names}", 100,
                                subsequent_indent="    ")
        lines += wrapped[:NAME_LINES] + ["    ..."] * (len(wrapped) > NAME_LINES)
    lines.append(f"Next: python -m grader hint {result.number}    every failure in full: "
                 f"python -m grader {result.number} -v")
    return "\n".join(lines) + "\n"


def detail(result: StageResult, *, colour: bool = False) -> str:
    """One unit in full: every test with its outcome and message (python -m grader <stage> -v)."""
    lines = _head(result, colour, reason=True)
    for test in [t for t in result.tests if not t.passed]:
        lines += [f"  {test.outcome:<7} {test.name}" + (f" ({test.where})" if test.where else "")] + _message(test)
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def to_junit(report: Report) -> str:
    """JUnit XML: one <testsuite> a unit, one <testcase> a test; a unit that never ran is one case."""
    suites = ET.Element("testsuites", name="transformer-kata")
    for s in report.stages:
        suite = ET.SubElement(suites, "testsuite", name=stage_label(s), time=f"{s.duration:.3f}")
        for test in s.tests or [None]:
            case = ET.SubElement(suite, "testcase", classname=s.id, name=test.name if test else s.suite,
                                 time=f"{test.duration:.3f}" if test else "0")
            if s.status == MISSING:
                ET.SubElement(case, "skipped", message=s.reason)
            elif test is None:
                ET.SubElement(case, "error", message=s.reason or s.status).text = s.reason
            elif not test.passed:
                message = f"{test.exc_type}: {test.message}".strip(": ")
                ET.SubElement(case, "failure" if test.outcome == "failed" else "error",
                              message=message.splitlines()[0] if message else test.outcome,
                              type=test.exc_type or test.outcome).text = message
        if s.reason and s.tests and s.status in (ERROR, TIMED_OUT):
            ET.SubElement(suite, "system-err").text = s.reason
    for element, cases in [(suite, "testcase") for suite in suites] + [(suites, "testsuite/testcase")]:  # the counts
        for key, tag in (("tests", ""), ("failures", "/failure"), ("errors", "/error"), ("skipped", "/skipped")):
            element.set(key, str(len(element.findall(cases + tag))))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def to_gradescope(report: Report, hidden_visibility: str = "after_published") -> str:
    """Gradescope's results.json: one entry a graded unit, the hidden suites with their own visibility."""
    tests = []
    for s in report.graded:
        failures = [f"{t.name}" + f" ({t.where})" * bool(t.where) + f": {t.exc_type}: {t.message.strip()}"
                    for t in s.tests if not t.passed][:3]
        output = [s.status_text()] + ["\n".join([s.reason] * bool(s.reason) + failures)] * (s.status != PASSED)
        output += [f"used reference/ for: {', '.join(s.substituted)}"] * bool(s.substituted)
        test = {"name": f"{s.number:02d} {stage_label(s)}: {s.title}", "number": str(s.number), "score": s.score,
                "max_score": s.max_score, "status": "passed" if s.status == PASSED else "failed",
                "output": "\n".join(output), "visibility": hidden_visibility if s.extra else "visible"}
        tests.append(test | ({"output": test["status"], "extra_data": {"output": test["output"]}} if s.extra else {}))
    return json.dumps({"score": report.score, "max_score": report.max_score,
                       "output": "\n".join(report.notes) or "Transformer kata autograder",
                       "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}, indent=2) + "\n"


def to_github(report: Report, impl_display: str = "exercises") -> tuple[str, list[str]]:
    """(Markdown job summary, workflow-command annotation lines)."""
    lines = ["## Transformer kata", "", f"**{report.score:g} / {report.max_score:g} points**", "",
             f"_{report.fallback_note}_", "", *[f"> {note}" for note in report.notes], "",
             "| # | stage | status | points | notes |", "| --- | --- | --- | --- | --- |"]
    icons = {PASSED: "✅", FAILING: "❌", ERROR: "💥", TIMED_OUT: "⏱️", NOT_STARTED: "⬜", MISSING: "➖"}
    for s in report.stages:
        used = "reference/ used for " + ", ".join(s.substituted) if s.substituted else ""
        notes = "; ".join(filter(None, (s.reason if s.status != FAILING else "", used)))
        lines.append(f"| {s.number} | `{stage_label(s)}` | {icons.get(s.status, '')} {s.status_text()} | {_score(s)} | "
                     f"{notes.replace('|', '/')} |")
    annotations = []
    for s in [s for s in report.graded if s.status not in (PASSED, NOT_STARTED)]:
        first = next((t for t in s.tests if not t.passed), None)
        message = s.reason if s.status != FAILING or first is None else f"{first.name}: {first.message.strip()}"
        where = "{},line={}".format(*first.where.rsplit(":", 1)) if first and ":" in first.where else f"{s.id}.py"
        message = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        annotations.append(f"::error file={impl_display}/{where},title={s.id} {s.status_text()}::{message}")
    return "\n".join(lines) + "\n", annotations
