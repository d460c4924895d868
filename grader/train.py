"""Train a capstone with your own stages; the reference fills the stages you have not written.

    python -m grader.train copy|reverse|lm    # Part I's capstone copies or reverses strings; Part II's is an LM

A stage comes from --impl (default exercises/) unless missing, an untouched stub, unreadable, not importing or
raising NotImplementedError; then the reference stands in, named with the reason (grader.pictures and
grader.generate share this plan). Exit 0 trained, 1 your code crashed (one line: its file:line), 2 bad usage.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import curriculum, loader, options as shared

COPY = ("s11_copy_task",)  # the stages a task calls directly; their dependencies come along
TASK_STAGES = {"copy": COPY, "reverse": COPY, "lm": ("s12_corpus", "s13_bpe", "s20_lm_training", "s21_generation")}
DEFAULT_STEPS = {"copy": 300, "reverse": 300, "lm": 400}  # copy/reverse: CopyTaskConfig.max_steps
LM_PROMPT = "It was on a dreary night of November"  # the opening of chapter 5
NOT_WRITTEN = re.compile(r"(s\d\d_\w+): not written yet")
OPTIONS = {  # the options of every command that runs learner code, as add_argument's keywords
    "--impl": {"default": "exercises", "help": "whose stages: exercises (default), reference, or a folder like it"},
    "--seed": {"type": int, "default": 0, "help": "random seed (default 0)"},
    "-v --verbose": {"action": "store_true", "help": "the full traceback of a crash (default: one line, file:line)"},
}
PROG = "python -m grader.train"


def parse(prog: str, doc: str, argv: list[str], options: dict[str, dict]):
    """``argv`` parsed with OPTIONS and ``options``, --steps checked and --impl resolved to ``impl_path``."""
    args = shared.parser(prog, doc, {**OPTIONS, **options}).parse_args(argv)
    if getattr(args, "steps", None) is not None and args.steps < 1:
        raise shared.UsageError(f"--steps must be at least 1, got {args.steps}")
    args.impl_path = shared.resolve_impl(args.impl, curriculum.load())
    return args


@dataclass
class Progress:
    """A line rewritten in place on a terminal (``live``), with the time left to ``total`` once it says ``step N``."""

    live: bool = False
    out: object = sys.stdout
    total: int | None = None
    early_stop: bool = False  # the time left is "at most" that
    start: float = field(default_factory=time.perf_counter)
    width: int = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, line: str) -> None:
        if not self.live:
            return
        text = f"{line}  {self.elapsed():6.1f}s"
        if self.total and (done := re.search(r"step\s+(\d+)", line)) and int(done[1]):
            left = self.elapsed() * max(0, self.total - int(done[1])) / int(done[1])
            text += f", {'at most ' if self.early_stop else ''}about {left:.0f}s left"
        print("\r" + text.ljust(self.width), end="", file=self.out, flush=True)
        self.width = len(text)

    def close(self) -> None:
        if self.live and self.width:
            print(file=self.out, flush=True)
        self.width = 0


def train_copy(modules: Callable[[str], object], args, steps: int, progress: Progress) -> list[str]:
    """Part I's capstone; returns the summary lines."""
    copy_task = modules("s11_copy_task")
    config = copy_task.CopyTaskConfig(reverse=args.task == "reverse", max_steps=steps, seed=args.seed)
    result = copy_task.train_copy_task(config, log=progress)
    progress.close()
    seconds = progress.elapsed()
    lines = [f"{args.task}: held-out exact match {result.accuracy:.1%} after {result.steps} steps ({seconds:.1f} s)"]
    sources = copy_task.random_strings(3, config.min_len, config.max_len, random.Random(args.seed + 1))
    batch = copy_task.make_batch(sources, [s[::-1] if config.reverse else s for s in sources], result.vocab)
    decoded = copy_task.greedy_decode(result.model, batch.src, batch.src_mask, config.max_len + 1,
                                      result.vocab.bos_id, result.vocab.eos_id, result.vocab.pad_id)
    return lines + [f"  {''.join(source):<12} -> {''.join(result.vocab.decode(row, skip_special=True))}"
                    for source, row in zip(sources, decoded.tolist())]


def train_lm(modules: Callable[[str], object], args, steps: int, progress: Progress) -> list[str]:
    """Part II's capstone: BPE on the book, a tiny Llama, a sample; returns the summary lines."""
    corpus, bpe_stage = modules("s12_corpus"), modules("s13_bpe")
    training, generation = modules("s20_lm_training"), modules("s21_generation")
    torch.manual_seed(args.seed)
    progress("lm: training the BPE tokenizer")
    text = corpus.load_corpus()
    tokenizer = bpe_stage.ByteBPE()
    tokenizer.train(text, 512)
    tokens = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train, val = corpus.split_tokens(tokens, 0.1)
    model = training.tiny_llama(tokenizer.vocab_size, d_model=64, max_seq_len=256)
    config = training.TrainConfig(steps=steps, batch_size=16, context=64, lr=3e-3, warmup=max(1, steps // 10),
                                  eval_every=max(1, steps // 20), eval_windows=32, seed=args.seed)
    baseline = training.unigram_baseline(train, val, tokenizer.vocab_size)
    start = time.perf_counter()
    result = training.train_lm(model, train, val, config, log=lambda line: progress(f"lm: {line}"))
    seconds = time.perf_counter() - start
    progress.close()
    prompt = torch.tensor([tokenizer.encode(LM_PROMPT)], dtype=torch.long)
    sample = generation.generate(model, prompt, 120, temperature=0.8, top_k=50, top_p=0.95, eos_id=tokenizer.eos_id,
                                 generator=torch.Generator().manual_seed(args.seed))
    parameters = sum(p.numel() for p in model.parameters())
    return [f"lm: {len(tokens):,} BPE tokens (vocabulary {tokenizer.vocab_size}), {parameters:,} parameters",
            f"lm: validation loss {result.val_loss:.3f} nats after {result.steps} steps (unigram baseline "
            f"{baseline:.3f}); {result.tokens_seen / seconds:,.0f} training tokens/s",
            "", tokenizer.decode(sample[0].tolist())]


def forward_frames(again: Callable[[], object]) -> list[tuple[str, int]]:
    """(file, line) of the forward call behind a failing backward: ``again`` (the crashed run) under anomaly mode."""
    with warnings.catch_warnings(record=True) as caught, torch.autograd.detect_anomaly(check_nan=False):
        warnings.simplefilter("always")
        with contextlib.suppress(Exception):  # the same crash, expected
            again()
    trace = "\n".join(str(w.message) for w in caught if "Traceback of forward call" in str(w.message))
    return [(name, int(line)) for name, line in re.findall(r'File "([^"]+)", line (\d+)', trace)]


def report_crash(prog: str, error: BaseException, plan: loader.Plan, verbose: bool, again: Callable[[], object]) -> int:
    """Exit status 1, one line on stderr: your stage's file:line (via ``again`` for a failing backward) or where."""
    if verbose:
        traceback.print_exception(error)
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(error.__traceback__)]
    if "gradient computation" in str(error) or "backward" in str(error):
        frames += forward_frames(again)
    what = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}".rstrip(": ")
    if found := plan.crashed_in(frames):
        line = f"your {found[0]} crashed at {plan.impl.name}/{found[0]}.py:{found[1]}: {what}"
    else:
        where = f" in {Path(frames[-1][0]).parent.name}/{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else ""
        using = f", while using your {', '.join(plan.yours())}" if plan.yours() else ""
        line = f"crashed{where}{using}: {what}"
    print(f"{prog}: {line}" + ("" if verbose else " (-v shows the traceback)"), file=sys.stderr)
    return 1


def run_plan(plan: loader.Plan, work: Callable, verbose: bool, prog: str, out=sys.stdout, **progress) -> tuple:
    """Say whose stages are used, then (0, work(modules, Progress(...))), restarted on a stage's NotImplementedError."""
    print("".join(line + "\n" for line in plan.describe()), end="", file=out)
    modules = lambda stage_id: loader.load_stage(plan.sources, stage_id)  # noqa: E731
    while True:
        bar = Progress(out=out, **progress)
        try:
            return 0, work(modules, bar)
        except Exception as error:  # noqa: BLE001 - the learner's code may raise anything
            bar.close()
            if isinstance(error, shared.UsageError):
                raise  # bad input (a checkpoint that cannot be run): one line, exit 2, from run_main
            found = isinstance(error, NotImplementedError) and NOT_WRITTEN.search(str(error))
            if not found or plan.sources.get(found[1]) == plan.reference:
                return report_crash(prog, error, plan, verbose, lambda: work(modules, Progress())), None
            plan.substitute(found[1], "not finished (it raises NotImplementedError)")
            print(f"using reference/{found[1]}.py: yours is {plan.substituted[found[1]]}; starting again", file=out)


def run(argv: list[str], out=sys.stdout) -> int:
    args = parse(PROG, __doc__, argv, {
        "task": {"choices": TASK_STAGES, "help": "copy or reverse (Part I's capstone), or lm (Part II's, on a book)"},
        "--steps": {"type": int, "help": "training steps (default: copy/reverse 300, or fewer at 100%%; lm 400)"},
        "--quiet": {"action": "store_true", "help": "no progress line (off too when not on a terminal)"},
    })
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and it leaves the machine usable
    steps = args.steps or DEFAULT_STEPS[args.task]
    trainer = train_lm if args.task == "lm" else train_copy
    return run_plan(loader.for_running(args.impl_path, TASK_STAGES[args.task]),
                    lambda modules, progress: print("\n".join(trainer(modules, args, steps, progress)), file=out),
                    args.verbose, PROG, out, live=not args.quiet and out.isatty(), total=steps,
                    early_stop=args.task != "lm")[0]


main = functools.partial(shared.run_main, PROG, run)  # main(argv=None) -> exit status


if __name__ == "__main__":
    raise SystemExit(main())
