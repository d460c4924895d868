"""The grader's result model, which every output format is rendered from. A *unit* is one suite run for one
stage: its own suite (tests/test_<id>.py) or one file of an instructor's hidden tests (--extra-tests). A Report
holds every unit's StageResult in learning order, plus the run's notes (substitutions, integrity, platform limits)."""

from dataclasses import asdict, dataclass, field

# Stage statuses, as the scorecard and the JSON output spell them.
PASSED = "passed"
FAILING = "failing"  # some tests fail (the scorecard says "failing k of n")
NOT_STARTED = "not started"  # every failure is the stub's NotImplementedError and nothing passes
ERROR = "error"  # the stage could not be graded fairly: import error, crash, forbidden import ...
TIMED_OUT = "timed out"  # a test or the whole stage ran past its time limit
MISSING = "missing"  # no suite or no stage file to grade: not counted in the score

# Test outcomes.
TEST_PASSED, TEST_FAILED, TEST_ERROR, TEST_SKIPPED, TEST_NOT_RUN = "passed", "failed", "error", "skipped", "not run"
SCHEMA = "transformer-kata/grader-result/1"  # the JSON document's (docs/grader.md), which course tools check


@dataclass
class TestResult:
    name: str  # the test function's name (with parameters), e.g. "test_rows_sum_to_one[2]"
    outcome: str  # passed, failed, error (setup or teardown failed), skipped, not run
    exc_type: str = ""  # the exception's class name, e.g. "AssertionError", "NotImplementedError"
    message: str = ""  # the exception's text: for tests/checks.py failures it ends with "Likely cause: ..."
    where: str = ""  # "exercises/s03_attention.py:42", the last line of learner code in the traceback
    duration: float = 0.0  # seconds

    @property
    def passed(self) -> bool:
        return self.outcome == TEST_PASSED


@dataclass
class StageResult:
    id: str  # stage id, "s03_attention"
    number: int  # position in the learning order
    title: str
    status: str  # one of the statuses above
    score: float  # points earned: max_score when the suite passes, else 0
    max_score: float  # the stage's points (0 for a missing stage)
    suite: str  # the suite graded, relative to the repository root or the extra-tests directory
    extra: bool = False  # True for an instructor's hidden suite (--extra-tests)
    reason: str = ""  # one line: why the stage is error / timed out / missing, or an integrity verdict
    substituted: list[str] = field(default_factory=list)  # stages loaded from reference/ for this run
    tests: list[TestResult] = field(default_factory=list)
    duration: float = 0.0  # wall seconds of the child process
    isolation: str = ""  # what the stage's sandbox reached (grader/sandbox.py LEVELS)
    reused: bool = False  # the verdict of an earlier run, nothing it depends on changed (grader/cache.py)
    flag: str = ""  # for course tools: "imports_reference", "forged_results" (no credit) or "not_reached" (budget)

    def status_text(self) -> str:
        """The scorecard's words: "passed", "failing 2 of 9", "not started", "error", ..."""
        failing = sum(not t.passed for t in self.tests)
        return f"failing {failing} of {len(self.tests)}" if self.status == FAILING else self.status


@dataclass
class Report:
    impl: str  # what was graded, as given ("exercises", "reference" or a path)
    fallback: bool  # True when unfinished dependencies were taken from reference/
    fallback_note: str  # one line saying how dependencies were chosen
    stages: list[StageResult]
    notes: list[str] = field(default_factory=list)  # platform limits, integrity findings, warnings
    integrity_failed: bool = False  # a tampered test file under --ci
    pass_threshold: float | None = None  # --pass-threshold: fraction of max_score that passes
    flags: dict[str, list[str]] = field(default_factory=dict)  # for course tools: "patching", "tampered_tests"

    @property
    def score(self) -> float:
        return round(sum(s.score for s in self.stages), 4)

    @property
    def max_score(self) -> float:
        return round(sum(s.max_score for s in self.stages), 4)

    @property
    def graded(self) -> list[StageResult]:
        return [s for s in self.stages if s.status != MISSING]

    def succeeded(self) -> bool:
        """Exit 0: every graded stage passed (or the score reaches --pass-threshold), integrity intact."""
        met = (bool(self.graded) and all(s.status == PASSED for s in self.graded) if self.pass_threshold is None
               else self.max_score > 0 and self.score >= self.pass_threshold * self.max_score - 1e-9)
        return met and not self.integrity_failed

    def current(self) -> StageResult | None:
        """The stage to work on next: the first graded main suite that does not pass."""
        return next((s for s in self.graded if not s.extra and s.status != PASSED), None)

    def to_dict(self) -> dict:
        """The JSON document (schema in docs/grader.md)."""
        return {"schema": SCHEMA, "score": self.score, "max_score": self.max_score, "passed": self.succeeded(),
                "impl": self.impl, "fallback": self.fallback, "notes": list(self.notes), "flags": dict(self.flags),
                "stages": [asdict(s) | {"tests_passed": sum(t.passed for t in s.tests), "tests_total": len(s.tests),
                                        "duration": round(s.duration, 3),
                                        "tests": [asdict(t) | {"duration": round(t.duration, 4)} for t in s.tests]}
                           for s in self.stages]}
