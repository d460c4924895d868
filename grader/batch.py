"""Grade a whole class: ``python -m grader batch SUBMISSIONS_DIR [--jobs N] [--out DIR]``.

Each student (a folder) is graded by its own ``python -m grader --impl SUB --format json --ci`` run
from this trusted copy through the one stage runner; the kata is re-hashed after each one, and the
gradebook is written whole at the end (docs/instructors.md). Gradescope grades one the same way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import curriculum, integrity, sandbox
from .options import LIMITS, UsageError, check_limits, parser
from .results import ERROR, MISSING, SCHEMA as RESULT_SCHEMA, TIMED_OUT

SCHEMA = "transformer-kata/gradebook/1"

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


def find_submissions(directory: Path, stages: tuple[curriculum.Stage, ...]) -> list[Submission]:
    """One Submission a visible sub-directory, sorted by name."""
    found = []
    for child in sorted(Path(directory).absolute().iterdir(), key=lambda p: p.name):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        name = child.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        impl = child / "exercises" if (child / "exercises").is_dir() else child
        staged = any(stage.source(impl).is_file() for stage in stages)
        problem = f"{name}/ is a symbolic link: a submission must be a real folder (not followed)" \
            if child.is_symlink() or impl.is_symlink() else "" if staged else \
            f"no stage files: expected {stages[0].id}.py ... at the top of {name}/ or in {name}/exercises/"
        found.append(Submission(name, child, impl, problem))
    return found


def tampered_copies(submission: Path, manifest: Path = integrity.HASHES) -> list[str]:
    """The test files in a student's own clone that differ from the manifest: never used, shown as a sign."""
    edited = " differs from the shipped version (edited?)"  # a file missing or added is no sign
    return [line.removesuffix(edited) for line in integrity.check_hashes(submission, manifest) if line.endswith(edited)]


def valid_document(doc: object) -> str:
    """'' when ``doc`` looks like the grader's JSON result, else what is wrong with it."""
    if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
        return "the result is not a grader result document"
    if not isinstance(doc.get("stages"), list) or not all(isinstance(s, dict) for s in doc["stages"]):
        return "the result has no list of stages"
    wrong = [key for key in ("score", "max_score") if not isinstance(doc.get(key), (int, float))]
    return f"the result has no numeric {wrong[0]}" if wrong else ""


def row_from_document(student: str, doc: dict) -> Row:
    """The gradebook row for one grader result (schema in docs/grader.md)."""
    row = Row(student, GRADED, score=float(doc["score"]), max_score=float(doc["max_score"]))
    for stage in doc["stages"]:
        column = f"{stage['id']} + {stage['suite']}" if stage.get("extra") else stage["id"]  # a hidden suite: its own
        row.stages[column] = {key: stage.get(key) for key in ("status", "score", "max_score", "reason")}
        if stage.get("status") in (ERROR, TIMED_OUT):
            flag = stage.get("flag") if stage.get("flag") in row.flags else "timed_out" \
                if stage.get("status") == TIMED_OUT else "errors"
            row.flags[flag].append(column)
    for name in ("patching", "tampered_tests"):  # see integrity.flags; this (trusted) copy's own test files
        row.flags[name] += [str(flagged) for flagged in (doc.get("flags") or {}).get(name, [])]
    row.notes = [str(note) for note in doc.get("notes", [])]
    return row


def failed_row(student: str, status: str, reason: str) -> Row:
    return Row(student, status, flags={name: [reason] if name == "grader_problem" else [] for name in FLAGS})


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
    grace: float = 120.0  # seconds past submission_timeout before the grader itself is stopped


def grader_command(impl: Path, options: Options, fmt: str = "json") -> list[str]:
    command = [sys.executable, "-m", "grader", "--impl", str(impl), "--format", fmt, "--ci", "--color", "never",
               "--jobs", str(options.stage_jobs), "--budget", f"{options.submission_timeout:g}",
               *[word for name in LIMITS for word in (name, f"{getattr(options, name[2:].replace('-', '_')):g}")]]
    command += ["--extra-tests", options.extra_tests] if options.extra_tests else []
    return command + (["--no-fallback"] if options.no_fallback else [])


def start_grader(impl: Path, options: Options, log: Path, fmt: str = "json", *more: str) -> sandbox.Stage:
    limits = sandbox.Limits(wall=options.submission_timeout + options.grace, file_mb=0, processes=0)
    return sandbox.start([*grader_command(impl, options, fmt), *more], limits, output=log,
                         env={"NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"})


def result_of(stage: sandbox.Stage, detail: bool = False) -> tuple[object, str]:
    """(the grader's result, '') from a finished run, else (None, why; ``detail``: with its last line)."""
    if stage.stopped:
        return None, f"stopped after {stage.limits.wall:g} s (--submission-timeout and a grace period)"
    if stage.exitcode not in (0, 1):
        last = stage.tail(400).strip().splitlines()[-1:] if detail else []
        return None, f"the grader exited with code {stage.exitcode}" + "".join(f": {line[:200]}" for line in last)
    try:
        return json.loads(stage.unsigned()), ""
    except ValueError as error:
        return None, f"the grader's result cannot be read ({error})"


def finish_one(submission: Submission, options: Options, stage: sandbox.Stage | None) -> Row:
    """The row of a submission whose grading ended (never raises)."""
    try:
        doc, problem = result_of(stage, detail=True) if stage else (None, submission.problem)
        problem = problem or valid_document(doc) or \
            ("" if doc.get("impl") == str(submission.impl) else "the result names another submission")
        status = NOT_GRADABLE if stage is None else SUBMISSION_TIMED_OUT if stage.stopped else GRADER_FAILED
        row = failed_row(submission.student, status, problem) if problem else row_from_document(submission.student, doc)
        if not problem and any(s.get("flag") == "not_reached" for s in doc["stages"]):
            row.notes.append(f"the time budget ({options.submission_timeout:g} s) ran out: the stages graded keep "
                             "their points, the others say they were not reached")
    except Exception as error:  # noqa: BLE001 - one submission never stops the batch
        row = failed_row(submission.student, GRADER_FAILED, f"{type(error).__name__}: {error}")
    row.duration = round(time.monotonic() - stage.started, 3) if stage else 0.0
    for name in tampered_copies(submission.path, options.root / integrity.MANIFEST):
        row.flags["tampered_tests"].append(f"{name} (the student's copy) differs from the shipped version")
    return row


class TreeChanged(UsageError):
    """The kata's own files changed during the batch: exit 2, no gradebook."""


def grade_all(submissions: list[Submission], options: Options, private: Path, progress) -> list[Row]:
    """Grade every submission, ``options.jobs`` at a time; stop everything if the kata changes."""
    before = integrity.snapshot(options.root)  # tests, manifest, grader, reference
    rows = []

    def start(submission: Submission) -> sandbox.Stage | None:
        return None if submission.problem else start_grader(submission.impl, options, private / submission.student)

    def finish(submission: Submission, stage: sandbox.Stage | None) -> None:
        rows.append(finish_one(submission, options, stage))
        changed = integrity.changed_since(before, options.root)
        if changed:
            raise TreeChanged(f"the kata changed while {submission.student} was graded ({changed[0]}): "
                              "batch stopped, no gradebook written")
        progress.update(rows[-1])

    sandbox.run_all(submissions, start, finish, options.jobs)
    return rows


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(max(0, seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class Progress:
    """A bar with counts and an ETA on a terminal; one plain line a finished submission when piped."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.done, self.problems = total, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.width, self.started = width, time.monotonic()

    def eta(self) -> str:
        return _clock((time.monotonic() - self.started) / self.done * (self.total - self.done)) if self.done else "?"

    def update(self, row: Row) -> None:
        self.done += 1
        self.problems += row.status != GRADED or row.flagged
        times = f"elapsed {_clock(time.monotonic() - self.started)}, ETA {self.eta()}"
        if self.tty:
            filled = int(self.width * self.done / max(1, self.total))
            text = (f"\r[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total} graded, "
                    f"{self.problems} to review, {times}\033[K" + "\n" * (self.done == self.total))
        else:
            text = (f"[{self.done}/{self.total}] {row.student}: {row.status} {row.score:g}/{row.max_score:g}"
                    f"{' (flagged)' if row.flagged else ''}; {times}\n")
        print(text, end="", file=self.stream, flush=True)


def columns_of(rows: list[Row], stages: tuple[curriculum.Stage, ...]) -> list[str]:
    """Every stage in learning order, then the hidden suites, in the order they were graded."""
    return list(dict.fromkeys([*(stage.id for stage in stages), *(column for row in rows for column in row.stages)]))


def gradebook(rows: list[Row], stages: tuple[curriculum.Stage, ...]) -> dict[str, str]:
    """gradebook.csv and gradebook.json: file name -> text."""
    columns = columns_of(rows, stages)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "status", "score", "max_score", "percent", *columns, *FLAGS])
    for row in rows:
        graded = [row.stages.get(column) or {"status": MISSING} for column in columns]
        cells = ["" if stage["status"] == MISSING else f"{stage['score']:g}" for stage in graded]
        percent = f"{100 * row.score / row.max_score:.1f}" if row.max_score else ""
        writer.writerow([row.student, row.status, f"{row.score:g}", f"{row.max_score:g}", percent, *cells,
                         *["; ".join(row.flags[name]) for name in FLAGS]])
    document = {"schema": SCHEMA, "columns": columns, "flags": list(FLAGS), "students": [asdict(r) for r in rows]}
    return {"gradebook.csv": buffer.getvalue(), "gradebook.json": json.dumps(document, indent=2) + "\n"}


def limits(submission_timeout: float) -> dict[str, dict]:
    """The options of batch and gradescope-bundle that limit a submission's grading."""
    return {"--submission-timeout": dict(type=float, default=submission_timeout, help="seconds one submission may take "
                                         f"in all; graded stages keep their points (default {submission_timeout:g})"),
            **LIMITS}


def check_folders(path: Path, option: str) -> None:
    """One line when a file stands where a folder above ``path`` must be."""
    blocking = next((p for p in Path(path).absolute().parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"{option}: {blocking} is a file, not a folder")


def build_parser():
    return parser("python -m grader batch", __doc__, {
        "submissions": dict(help="one sub-directory a student (shaped like exercises/, or containing it)"),
        "--jobs": dict(type=int, default=os.cpu_count() or 1, help="submissions at once (default: CPU cores)"),
        "--out": dict(default="gradebook", help="where gradebook.csv and gradebook.json go (default: gradebook)"),
        "--stage-jobs": dict(type=int, default=1, help="stages of one submission graded at once (default 1)"),
        **limits(1800.0),
        "--extra-tests": dict(help="hidden instructor tests (test_<stage id>*.py), graded with their own points"),
        "--no-fallback": dict(action="store_true", help="grade the student's own code only: never reference/")})


def main(argv: list[str], root: Path = curriculum.ROOT) -> int:
    """Exit 0: every submission graded; 1: some could not be (their rows say why); 2: bad input."""
    args = build_parser().parse_args(argv)
    directory = Path(args.submissions).absolute()
    if not directory.is_dir():
        raise UsageError(f"batch {args.submissions}: no such directory")
    check_limits(args, "--jobs and --stage-jobs", args.jobs, args.stage_jobs)
    if args.extra_tests and not Path(args.extra_tests).is_dir():
        raise UsageError(f"--extra-tests {args.extra_tests}: no such directory")
    stages = curriculum.load(root / "curriculum.toml")
    submissions = find_submissions(directory, stages)
    if not submissions:
        raise UsageError(f"batch {args.submissions}: no submission directories inside")
    out = Path(args.out).absolute()
    if out == directory or directory in out.parents:
        raise UsageError("--out must not be inside the submissions directory")
    check_folders(out / "gradebook.csv", f"--out {args.out}")
    given = {name: value for name, value in vars(args).items() if name in Options.__dataclass_fields__}
    options = Options(root=root, **given | {"extra_tests": args.extra_tests and str(Path(args.extra_tests).resolve())})
    with tempfile.TemporaryDirectory(prefix="kata-batch-", ignore_cleanup_errors=True) as private:
        rows = grade_all(submissions, options, Path(private), Progress(len(submissions)))
    rows.sort(key=lambda r: r.student)
    top = max((r.max_score for r in rows if r.status == GRADED), default=0.0)
    for row in rows:  # the same denominator for everyone; those not graded scored nothing
        row.max_score = row.max_score if row.status == GRADED else top
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in gradebook(rows, stages).items():
            part = out / f".{name}.{os.getpid()}.part"  # written whole: a temporary file renamed over it
            part.write_text(text, encoding="utf-8")
            os.replace(part, out / name)
    except OSError as error:
        raise UsageError(f"--out {args.out}: the gradebook cannot be written ({error.strerror})") from None
    print(f"Gradebook: {out / 'gradebook.csv'} and {out / 'gradebook.json'} ({len(rows)} students)")
    ungraded = [r.student for r in rows if r.status != GRADED]
    for label, names in (("To review", [r.student for r in rows if r.flagged]), ("Not graded", ungraded)):
        if names:
            print(f"{label} ({len(names)}): {', '.join(names)}")
    return 1 if ungraded else 0
