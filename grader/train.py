"""Train a capstone with your own stages; the reference fills the stages you have not written.

    python -m grader.train copy|reverse|lm    # Part I's capstone copies or reverses strings; Part II's is an LM

A stage comes from --impl (default exercises/) unless missing, an untouched stub, unreadable, not importing or
raising NotImplementedError; then the reference stands in, named with the reason (grader.pictures and
grader.generate share this plan). Exit 0 trained, 1 your code crashed (one line: its file:line), 2 bad usage.
"""

from __future__ import annotations

import functools
import random
import sys
import time
from collections.abc import Callable

import torch

from . import loader, options as shared
from .harness import Progress, parse, run_plan

COPY = ("s11_copy_task",)  # the stages a task calls directly; their dependencies come along
TASK_STAGES = {"copy": COPY, "reverse": COPY, "lm": ("s12_corpus", "s13_bpe", "s20_lm_training", "s21_generation")}
DEFAULT_STEPS = {"copy": 300, "reverse": 300, "lm": 400}  # copy/reverse: CopyTaskConfig.max_steps
LM_PROMPT = "It was on a dreary night of November"  # the opening of chapter 5
PROG = "python -m grader.train"


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
