"""Grade a whole class: ``python -m grader batch SUBMISSIONS_DIR [--jobs N] [--out DIR]``.

Every directory inside SUBMISSIONS_DIR is one student (the directory's name): either shaped like
exercises/ (the stage files at its top) or a clone of the kata with an exercises/ folder inside.
Each is graded by its own ``python -m grader --impl SUB --format json --ci`` process, run from this
(trusted) copy of the kata with this copy's tests, through the one stage runner (grader/sandbox.py),
up to --jobs at a time, with a time budget: when it runs out, the stages already graded keep their
points and the others say they were not reached. A submission that crashes, hangs or cheats costs
its own row only. After every submission the kata's own files (tests, grader, reference, manifest)
are hashed again: a tree that changed stops the batch (exit 2) before anyone is graded with it.

The gradebook (gradebook.csv and gradebook.json in --out) has one row a student, one column a
stage (its points), the total, and the integrity flags a reviewer should look at: the student's own
copy of the test files differs from the shipped one, a stage imports the answer key, a stage timed
out, a stage crashed, the grader could not grade the submission at all.

The result of each submission is read from the grader's standard output, a socket only this batch
holds (never from a file, nor from what the submission prints). The gradebook is written whole, at
once (a temporary file renamed), after every submission is graded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import select
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import curriculum, integrity, sandbox
from .results import ERROR, MISSING, TIMED_OUT

SCHEMA = "transformer-kata/gradebook/1"
RESULT_SCHEMA = "transformer-kata/grader-result/1"

HELP = {
    "submissions": "a directory with one sub-directory a student (shaped like exercises/, or containing exercises/)",
    "jobs": "submissions graded at the same time (default: the number of CPU cores)",
    "out": "where gradebook.csv and gradebook.json are written (default: gradebook)",
    "stage_jobs": "stages of one submission graded at the same time (default 1)",
    "submission_timeout": "seconds one submission may take in all; graded stages keep their points (default 1800)",
    "timeout": "CPU seconds one test may use (default 60)",
    "stage_timeout": "CPU seconds one stage's suite may use (default 300)",
    "memory": "MiB of memory one stage may use on top of what it starts with; 0 = no limit (default 4096)",
    "extra": "a directory of hidden instructor tests (test_<stage id>*.py), graded with their own points",
    "no_fallback": "grade each student's own code all the way down: never load a stage from reference/",
}

# Row statuses: how far grading got for one submission.
GRADED = "graded"  # the grader produced a result (whatever the score)
NOT_GRADABLE = "not gradable"  # no stage files: nothing to grade
SUBMISSION_TIMED_OUT = "timed out"  # the whole submission ran past --submission-timeout
GRADER_FAILED = "grader failed"  # the grader exited without a valid result

FLAGS = ("tampered_tests", "imports_reference", "forged_results", "patching", "timed_out", "errors", "grader_problem")


@dataclass
class Submission:
    student: str  # the directory's name
    path: Path  # the directory itself
    impl: Path  # the tree graded: path, or path/exercises
    problem: str = ""  # why it cannot be graded ('' when it can)


@dataclass
class Row:
    student: str
    status: str  # GRADED, NOT_GRADABLE, SUBMISSION_TIMED_OUT or GRADER_FAILED
    score: float = 0.0
    max_score: float = 0.0
    stages: dict[str, dict] = field(default_factory=dict)  # column -> {status, score, max_score, reason}
    flags: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in FLAGS})
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0  # seconds

    @property
    def flagged(self) -> bool:
        return any(self.flags.values())


# ---------------------------------------------------------------- finding submissions (pure)


def find_submissions(directory: Path, stages: tuple[curriculum.Stage, ...]) -> list[Submission]:
    """One Submission a visible sub-directory, sorted by name."""
    found = []
    for child in sorted(Path(directory).absolute().iterdir(), key=lambda p: p.name):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        name = child.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        impl = child / "exercises" if (child / "exercises").is_dir() else child
        problem = ""
        if child.is_symlink() or impl.is_symlink():
            problem = f"{name}/ is a symbolic link: a submission must be a real folder (not followed)"
        elif not any(stage.source(impl).is_file() for stage in stages):
            problem = f"no stage files: expected {stages[0].id}.py ... at the top of {name}/ or in {name}/exercises/"
        found.append(Submission(name, child, impl, problem))
    return found


def tampered_copies(submission: Path, manifest: Path = integrity.HASHES) -> list[str]:
    """The test files in a student's own clone that differ from the shipped ones (by the hash manifest).

    The batch never uses these copies (it grades with its own tests); a difference is shown to the
    reviewer because it says the student edited the tests they were developing against.
    """
    try:
        expected = json.loads(Path(manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    changed = []
    for name, digest in sorted(expected.items()):
        copy = Path(submission) / name
        if copy.is_file() and integrity.digest(copy) != digest:
            changed.append(name)
    return changed


# ---------------------------------------------------------------- one result document -> one row (pure)


def column_of(stage: dict) -> str:
    """A gradebook column: the stage id, or 'id + hidden file' for an instructor's hidden suite."""
    return stage["id"] if not stage.get("extra") else f"{stage['id']} + {stage['suite']}"


def valid_document(doc: object) -> str:
    """'' when ``doc`` looks like the grader's JSON result, else what is wrong with it."""
    if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
        return "the result is not a grader result document"
    if not isinstance(doc.get("stages"), list) or not all(isinstance(s, dict) for s in doc["stages"]):
        return "the result has no list of stages"
    for key in ("score", "max_score"):
        if not isinstance(doc.get(key), (int, float)):
            return f"the result has no numeric {key}"
    return ""


def row_from_document(student: str, doc: dict) -> Row:
    """The gradebook row for one grader result (schema in docs/grader.md)."""
    row = Row(student, GRADED, score=float(doc["score"]), max_score=float(doc["max_score"]))
    for stage in doc["stages"]:
        column = column_of(stage)
        row.stages[column] = {key: stage.get(key) for key in ("status", "score", "max_score", "reason")}
        status, reason = stage.get("status"), str(stage.get("reason", ""))
        if status == ERROR and "result channel" in reason:
            row.flags["forged_results"].append(column)
        elif status == ERROR and reason.startswith("no credit"):
            row.flags["imports_reference"].append(column)
        elif status == ERROR:
            row.flags["errors"].append(column)
        elif status == TIMED_OUT:
            row.flags["timed_out"].append(column)
    for note in doc.get("notes", []):
        if str(note).startswith(integrity.FLAG_NOTE):
            row.flags["patching"].append(str(note).removeprefix(integrity.FLAG_NOTE).strip())  # see integrity.flags
        elif str(note).startswith("integrity:"):
            row.flags["tampered_tests"].append(str(note))  # this (trusted) copy's own test files
        row.notes.append(str(note))
    return row


def failed_row(student: str, status: str, reason: str) -> Row:
    row = Row(student, status)
    row.flags["grader_problem"].append(reason)
    return row


# ---------------------------------------------------------------- grading one submission


@dataclass
class Options:
    root: Path
    jobs: int
    stage_jobs: int
    submission_timeout: float
    timeout: float
    stage_timeout: float
    memory_limit: int
    extra_tests: str | None
    no_fallback: bool


def grader_command(impl: Path, options: Options) -> list[str]:
    command = [sys.executable, "-m", "grader", "--impl", str(impl), "--format", "json", "--ci",
               "--color", "never", "--jobs", str(options.stage_jobs), "--budget", f"{options.submission_timeout:g}",
               "--timeout", f"{options.timeout:g}", "--stage-timeout", f"{options.stage_timeout:g}",
               "--memory-limit", str(options.memory_limit)]
    if options.extra_tests:
        command += ["--extra-tests", options.extra_tests]
    if options.no_fallback:
        command.append("--no-fallback")
    return command


def start_one(submission: Submission, options: Options, log: Path) -> sandbox.Stage | None:
    """Start grading one submission (None when there is nothing to grade)."""
    if submission.problem:
        return None
    limits = sandbox.Limits(wall=options.submission_timeout + 120, file_mb=0, processes=0)
    return sandbox.start(grader_command(submission.impl, options), limits, output=log,
                         env={"NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"})


def finish_one(submission: Submission, options: Options, stage: sandbox.Stage | None) -> Row:
    """The row of a submission whose grading ended (never raises)."""
    try:
        row = _row(submission, options, stage)
    except Exception as error:  # noqa: BLE001 - one submission never stops the batch
        row = failed_row(submission.student, GRADER_FAILED, f"{type(error).__name__}: {error}")
    row.duration = round(time.monotonic() - stage.started, 3) if stage else 0.0
    tampered = tampered_copies(submission.path, options.root / "grader" / "test_hashes.json")
    row.flags["tampered_tests"] += [f"{name} (the student's copy) differs from the shipped version" for name in tampered]
    return row


def _row(submission: Submission, options: Options, stage: sandbox.Stage | None) -> Row:
    if stage is None:
        return failed_row(submission.student, NOT_GRADABLE, submission.problem)
    if stage.stopped:
        return failed_row(submission.student, SUBMISSION_TIMED_OUT,
                          f"stopped after {stage.limits.wall:g} s (--submission-timeout and a grace period)")
    if stage.exitcode not in (0, 1):
        tail = stage.tail(400).strip().splitlines()[-1:]
        return failed_row(submission.student, GRADER_FAILED,
                          f"the grader exited with code {stage.exitcode}" + (f": {tail[0][:200]}" if tail else ""))
    try:
        doc = json.loads(stage.unsigned())
    except ValueError as error:
        return failed_row(submission.student, GRADER_FAILED, f"the grader's result cannot be read ({error})")
    problem = valid_document(doc) or ("" if doc.get("impl") == str(submission.impl)
                                      else "the result names another submission")
    if problem:
        return failed_row(submission.student, GRADER_FAILED, problem)
    row = row_from_document(submission.student, doc)
    if any(str(s.get("reason", "")).startswith("not graded: the run's time budget") for s in doc["stages"]):
        row.notes.append(f"the time budget ({options.submission_timeout:g} s) ran out: the stages graded keep "
                         "their points, the others say they were not reached")
    return row


class TreeChanged(Exception):
    """The kata's own files changed during the batch."""


def grade_all(submissions: list[Submission], options: Options, private: Path, progress) -> list[Row]:
    """Grade every submission, ``options.jobs`` at a time; stop everything if the kata changes."""
    before = integrity.snapshot(options.root)  # tests, manifest, grader, reference
    queue, running, rows = list(submissions), {}, []

    def record(row: Row) -> None:
        rows.append(row)
        changed = integrity.changed_since(before, options.root)
        if changed:
            raise TreeChanged(f"the kata changed while {row.student} was graded ({changed[0]}): "
                              "batch stopped, no gradebook written")
        progress.update(row)

    try:
        while queue or running:
            while queue and len(running) < options.jobs:
                submission = queue.pop(0)
                stage = start_one(submission, options, private / f"{len(rows) + len(running)}.log")
                if stage is None:
                    record(finish_one(submission, options, None))
                else:
                    running[stage] = submission
            ready = select.select(list(running), [], [], 0.1)[0] if running else []
            for stage in list(running):
                if stage in ready:
                    stage.pump()
                if stage.poll():
                    record(finish_one(running.pop(stage), options, stage))
    finally:
        for stage in running:
            stage.stop("batch stopped")
    return rows


# ---------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """A bar with counts and an ETA on a terminal; one plain line a finished submission when piped."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.done, self.problems = total, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.width = width
        self.started = time.monotonic()

    def eta(self) -> str:
        if not self.done:
            return "?"
        elapsed = time.monotonic() - self.started
        return _clock(elapsed / self.done * (self.total - self.done))

    def update(self, row: Row) -> None:
        self.done += 1
        self.problems += row.status != GRADED or row.flagged
        elapsed = _clock(time.monotonic() - self.started)
        if self.tty:
            filled = int(self.width * self.done / max(1, self.total))
            bar = "#" * filled + "-" * (self.width - filled)
            text = (f"\r[{bar}] {self.done}/{self.total} graded, {self.problems} to review, "
                    f"elapsed {elapsed}, ETA {self.eta()}\033[K")
            if self.done == self.total:
                text += "\n"
        else:
            flag = " (flagged)" if row.flagged else ""
            text = (f"[{self.done}/{self.total}] {row.student}: {row.status} {row.score:g}/{row.max_score:g}{flag}; "
                    f"elapsed {elapsed}, ETA {self.eta()}\n")
        self.stream.write(text)
        self.stream.flush()


# ---------------------------------------------------------------- the gradebook (pure)


def columns_of(rows: list[Row], stages: tuple[curriculum.Stage, ...]) -> list[str]:
    """Every stage in learning order, then the hidden suites, in the order they were graded."""
    columns = [stage.id for stage in stages]
    for row in rows:
        for column in row.stages:
            if column not in columns:
                columns.append(column)
    return columns


def to_json(rows: list[Row], columns: list[str]) -> str:
    document = {
        "schema": SCHEMA,
        "columns": columns,
        "flags": list(FLAGS),
        "students": [asdict(row) for row in rows],
    }
    return json.dumps(document, indent=2) + "\n"


def to_csv(rows: list[Row], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "status", "score", "max_score", "percent", *columns, *FLAGS])
    for row in rows:
        cells = []
        for column in columns:
            stage = row.stages.get(column)
            cells.append("" if stage is None or stage["status"] == MISSING else f"{stage['score']:g}")
        percent = f"{100 * row.score / row.max_score:.1f}" if row.max_score else ""
        writer.writerow([row.student, row.status, f"{row.score:g}", f"{row.max_score:g}", percent, *cells,
                         *["; ".join(row.flags[name]) for name in FLAGS]])
    return buffer.getvalue()


# ---------------------------------------------------------------- command line


def build_parser():
    from .cli import _Parser

    p = _Parser(prog="python -m grader batch", description=__doc__.split("\n\n")[0])
    p.add_argument("submissions", help=HELP["submissions"])
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help=HELP["jobs"])
    p.add_argument("--out", default="gradebook", help=HELP["out"])
    p.add_argument("--stage-jobs", type=int, default=1, help=HELP["stage_jobs"])
    p.add_argument("--submission-timeout", type=float, default=1800.0, help=HELP["submission_timeout"])
    p.add_argument("--timeout", type=float, default=60.0, help=HELP["timeout"])
    p.add_argument("--stage-timeout", type=float, default=300.0, help=HELP["stage_timeout"])
    p.add_argument("--memory-limit", type=int, default=4096, help=HELP["memory"])
    p.add_argument("--extra-tests", help=HELP["extra"])
    p.add_argument("--no-fallback", action="store_true", help=HELP["no_fallback"])
    return p


def write_whole(path: Path, text: str) -> None:
    """Write ``path`` at once: a temporary file beside it, then renamed over it."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    """Exit 0: every submission graded; 1: some could not be (their rows say why); 2: bad input."""
    from .cli import UsageError

    args = build_parser().parse_args(argv)
    directory = Path(args.submissions)
    if not directory.is_dir():
        raise UsageError(f"batch {args.submissions}: no such directory")
    if min(args.jobs, args.stage_jobs) < 1 or min(args.submission_timeout, args.timeout, args.stage_timeout) <= 0:
        raise UsageError("--jobs and --stage-jobs must be at least 1, and the time limits positive")
    if args.extra_tests and not Path(args.extra_tests).is_dir():
        raise UsageError(f"--extra-tests {args.extra_tests}: no such directory")
    stages = curriculum.load(root / "curriculum.toml")
    submissions = find_submissions(directory, stages)
    if not submissions:
        raise UsageError(f"batch {args.submissions}: no submission directories inside")
    out = Path(args.out).absolute()
    if out == directory.absolute() or directory.absolute() in out.parents:
        raise UsageError("--out must not be inside the submissions directory")
    blocking = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"--out {args.out}: {blocking} is a file, not a folder")
    options = Options(root=root, jobs=args.jobs, stage_jobs=args.stage_jobs,
                      submission_timeout=args.submission_timeout, timeout=args.timeout,
                      stage_timeout=args.stage_timeout, memory_limit=args.memory_limit,
                      extra_tests=str(Path(args.extra_tests).resolve()) if args.extra_tests else None,
                      no_fallback=args.no_fallback)
    with tempfile.TemporaryDirectory(prefix="kata-batch-", ignore_cleanup_errors=True) as private:
        try:
            rows = grade_all(submissions, options, Path(private), Progress(len(submissions)))
        except TreeChanged as error:
            raise UsageError(str(error)) from None
    rows.sort(key=lambda r: r.student)
    top = max((r.max_score for r in rows if r.status == GRADED), default=0.0)
    for row in rows:
        if row.status != GRADED:
            row.max_score = top  # the same denominator for everyone; they scored nothing
    columns = columns_of(rows, stages)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_whole(out / "gradebook.csv", to_csv(rows, columns))
        write_whole(out / "gradebook.json", to_json(rows, columns))
    except OSError as error:
        raise UsageError(f"--out {args.out}: the gradebook cannot be written ({error.strerror})") from None
    ungraded = [r.student for r in rows if r.status != GRADED]
    flagged = [r.student for r in rows if r.flagged]
    print(f"Gradebook: {out / 'gradebook.csv'} and {out / 'gradebook.json'} ({len(rows)} students)")
    if flagged:
        print(f"To review ({len(flagged)}): {', '.join(flagged)}")
    if ungraded:
        print(f"Not graded ({len(ungraded)}): {', '.join(ungraded)}")
    return 1 if ungraded else 0
