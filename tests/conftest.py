"""Choose the implementation a stage suite tests, and hand it to the tests.

    pytest tests/test_s03_attention.py                      # your exercises/ (the default)
    pytest tests/test_s03_attention.py --impl reference     # the answer key
    pytest tests/test_s03_attention.py --impl path/to/tree  # any directory shaped like exercises/

The stage under test always comes from --impl. The earlier stages it builds on come from
reference/ (so each stage is graded on its own merits) unless --no-fallback is given or the
stage is listed in --learner-stages. The grader hands its plan instead (--plan: stage id -> "impl" or
"reference", grader/loader.py); both are one loader.Plan. The header of the run says which stages were substituted.

A stage listed in FORBIDDEN_CALLS may not call the torch functions its tests use as the oracle. A
torch function mode refuses them for the whole suite, however the learner's code took hold of them
(``from torch.nn.functional import scaled_dot_product_attention as sdpa`` at import time too); the
test's own oracle calls, made by the test module itself, still go through.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grader import curriculum, loader, options  # noqa: E402

HELP_IMPL = "what to test: 'exercises' (default), 'reference', or a directory shaped like exercises/"
HELP_NO_FALLBACK = "take every stage from --impl, never from reference/"
HELP_LEARNER_STAGES = "comma-separated stage ids to take from --impl even with the fallback on"
HELP_PLAN = "the grader's plan: a JSON object, stage id -> \"impl\" or \"reference\" (overrides the two above)"
HELP_DEVICE = "run the stage suites on this torch device (cpu, cuda, mps); default cpu"

STAGES = curriculum.load()
STAGE_IDS = [stage.id for stage in STAGES]
REFERENCE = ROOT / "reference"

# stage id -> (parts of the names torch gives the forbidden functions, the likely cause). A part
# catches every alias and private variant: F.scaled_dot_product_attention, torch.ops.aten's
# scaled_dot_product_attention, torch._scaled_dot_product_attention_math, the fused kernels.
FORBIDDEN_CALLS = {
    "s03_attention": (("scaled_dot_product",),
                      "this stage is about writing it yourself: scores, scale, mask, softmax, weighted sum."),
    "s05_multihead": (("scaled_dot_product", "multi_head_attention_forward"),
                      "use your own scaled_dot_product_attention from stage 3, not torch's or nn.MultiheadAttention."),
    "s16_gqa": (("scaled_dot_product",),
                "write the attention yourself: repeat the key/value heads, then scores, mask, softmax, weighted sum."),
    "s18_rmsnorm": (("rms_norm",), "write the formula yourself: torch.nn.RMSNorm is the test's oracle."),
}


def pytest_addoption(parser):
    group = parser.getgroup("kata")
    group.addoption("--impl", default="exercises", help=HELP_IMPL)
    group.addoption("--no-fallback", action="store_true", default=False, help=HELP_NO_FALLBACK)
    group.addoption("--learner-stages", default="", help=HELP_LEARNER_STAGES)
    group.addoption("--plan", default="", help=HELP_PLAN)
    group.addoption("--device", default=os.environ.get("KATA_DEVICE", "cpu"), help=HELP_DEVICE)


def learner_stages(config) -> frozenset[str]:
    listed = frozenset(filter(None, (s.strip() for s in config.getoption("--learner-stages").split(","))))
    unknown = sorted(listed - set(STAGE_IDS))
    if unknown:
        raise pytest.UsageError(f"--learner-stages: unknown stage ids {unknown}")
    return listed


def pytest_configure(config):
    try:
        impl = options.resolve_impl(config.getoption("--impl"), STAGES, ROOT)
    except options.UsageError as error:
        raise pytest.UsageError(str(error)) from None
    config._kata_impl = impl  # noqa: SLF001 - our own attributes
    config._kata_learner = learner_stages(config)  # noqa: SLF001
    config._kata_plan = given_plan(config.getoption("--plan"), impl)  # noqa: SLF001


def given_plan(text: str, impl: Path) -> loader.Plan | None:
    """The plan the grader hands (--plan, loader.Plan.to_json), or None when it hands none."""
    try:
        data, trees = json.loads(text) if text else None, {"impl": impl, "reference": REFERENCE}
        return loader.Plan({s: trees[data[s]] for s in STAGE_IDS}, impl, REFERENCE) if text else None
    except (ValueError, KeyError, TypeError):
        raise pytest.UsageError('--plan: expected a JSON object: every stage id -> "impl" or "reference"') from None


def pytest_report_header(config):
    impl, plan = config._kata_impl, config._kata_plan  # noqa: SLF001
    if impl == REFERENCE or REFERENCE not in plan_for(config, "").sources.values():
        return [f"kata: every stage from {impl} (no fallback to reference/)"]
    mine = [s for s, tree in plan.sources.items() if tree == impl] if plan else config._kata_learner  # noqa: SLF001
    return [
        f"kata: stage under test from {impl}",
        f"kata: earlier stages from reference/ except these, taken from --impl: {', '.join(sorted(mine)) or 'none'}",
    ]


def stage_id_of(request) -> str:
    name = Path(str(request.node.path)).stem
    stage_id = name.removeprefix("test_")
    if stage_id not in STAGE_IDS:
        raise pytest.UsageError(f"{name}.py is not a stage suite: {stage_id!r} is not in curriculum.toml")
    return stage_id


def fallback_on(config) -> bool:
    """The fallback needs an answer key: a student release may ship without reference/."""
    return not config.getoption("--no-fallback") and options.reference_of(ROOT) is not None


def plan_for(config, stage_id: str) -> loader.Plan:
    """The grader's plan (--plan), else the one it would make from --no-fallback and --learner-stages."""
    if config._kata_plan:  # noqa: SLF001
        return config._kata_plan  # noqa: SLF001
    mine = config._kata_learner if fallback_on(config) else None  # noqa: SLF001
    return loader.for_grading(STAGES, stage_id, config._kata_impl, REFERENCE, mine)  # noqa: SLF001


class ForbiddenCalls:
    """A torch function mode that refuses the functions a stage must not call.

    A call goes through only when it comes from the test module itself (its oracle): the nearest
    frame outside torch must be in that file, and no torch frame in between may be working for an
    object of the learner's (a hook on the learner's module, say). Everything else is refused.
    """

    def __init__(self, stage_id: str, parts: tuple[str, ...], hint: str, test_file: str):
        import torch
        from torch.overrides import TorchFunctionMode

        class Mode(TorchFunctionMode):
            def __torch_function__(mode, func, types, args=(), kwargs=None):  # noqa: N805 - the mode
                name = getattr(func, "__name__", "")
                if any(part in name for part in parts) and not self.called_by_the_test(sys._getframe(1)):
                    self.refuse(name)
                return func(*args, **(kwargs or {}))

        self.stage_id, self.hint, self.test_file = stage_id, hint, os.path.normcase(test_file)
        self.torch_dir = os.path.normcase(os.path.dirname(torch.__file__)) + os.sep
        self.mode = Mode()

    def called_by_the_test(self, frame) -> bool:
        """``frame`` called the function (or is torch's dispatch to this mode, on behalf of a caller)."""
        while frame is not None and os.path.normcase(frame.f_code.co_filename).startswith(self.torch_dir):
            owner = frame.f_locals.get("self")
            if owner is not None and not _made_by_torch(type(owner)):
                return False
            frame = frame.f_back
        return frame is not None and os.path.normcase(frame.f_code.co_filename) == self.test_file

    def refuse(self, name: str) -> None:
        from checks import fail  # tests/ is on sys.path whenever a suite runs

        fail(f"your code called torch's {name}, which {self.stage_id} forbids (the tests compare against it)",
             self.hint)


def not_written_here(module, stage_id: str) -> str:
    """Why the stage's own definitions are not the learner's, or ''.

    Each function and class the reference defines must be one written in the learner's file: torch's
    own (``RMSNorm = nn.RMSNorm``, a factory that returns one, an alias of the forbidden function) would
    reach the tests as theirs, where the guard takes it for the test's oracle.
    """
    source = ROOT / "reference" / f"{stage_id}.py"
    if not source.is_file():
        return ""  # a student release without the answer key: nothing to compare with
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or not hasattr(module, node.name):
            continue
        mine = getattr(module, node.name)
        if isinstance(node, ast.ClassDef):
            written = isinstance(mine, type) and mine.__module__ == module.__name__
        else:
            code = getattr(inspect.unwrap(mine), "__code__", None) if callable(mine) else None
            written = code is not None and code.co_filename == module.__file__
        if written:
            continue
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        home = getattr(mine, "__module__", None) or type(mine).__module__
        if home == module.__name__:
            return f"{node.name} in your {stage_id}.py is not a {kind}: write the {kind} its docstring describes"
        return (f"{node.name} in your {stage_id}.py is {home}.{getattr(mine, '__name__', type(mine).__name__)}, "
                f"not a {kind} written in that file: this stage asks you to write it yourself")
    return ""


def _made_by_torch(cls: type) -> bool:
    """A class torch defines (not a learner's class that borrows a torch module name)."""
    module = sys.modules.get(cls.__module__)
    return cls.__module__.split(".")[0] == "torch" and getattr(module, cls.__name__, None) is cls


@pytest.fixture(scope="module", autouse=True)
def forbidden_calls(request):
    """While a stage suite runs (importing the stage included), its FORBIDDEN_CALLS are refused."""
    stage_id = Path(str(request.path)).stem.removeprefix("test_")
    parts, hint = FORBIDDEN_CALLS.get(stage_id, ((), ""))
    if not parts:
        yield None
        return
    guard = ForbiddenCalls(stage_id, parts, hint, str(request.module.__file__))
    with guard.mode:
        yield guard


@pytest.fixture(scope="module")
def stage(request):
    """The module under test: this suite's stage, loaded from --impl under the fallback plan."""
    stage_id = stage_id_of(request)
    module = loader.load_stage(plan_for(request.config, stage_id).sources, stage_id)
    problem = not_written_here(module, stage_id) if stage_id in FORBIDDEN_CALLS else ""
    if problem:
        raise AssertionError(problem)
    return module


@pytest.fixture(scope="session", autouse=True)
def device(request):
    """The torch device the suites run on: new tensors and modules land there by default."""
    import torch

    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and stages run side by side
    name = request.config.getoption("--device")
    try:
        options.check_device(name)
    except options.UsageError as error:
        raise pytest.UsageError(str(error)) from None
    torch.set_default_device(name)
    yield torch.device(name)
    torch.set_default_device("cpu")


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same random state, whatever ran before it."""
    import torch

    torch.manual_seed(0)
    yield
