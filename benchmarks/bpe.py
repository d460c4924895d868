"""Row 6: how fast stage 13 trains a BPE, against Hugging Face's `tokenizers` on the same job.

Both train a byte-level BPE with GPT-2's chunk pattern to the same vocabulary size (256 bytes,
the merges, 2 special tokens) on the book repeated 1, 2 and 4 times; the row reports the CPU
seconds of each (process time: steadier than wall time on a shared machine), their ratio, and how
each grows with the text. `tokenizers` runs single-threaded (TOKENIZERS_PARALLELISM=false), like
the kata, and the two alternate on every repeat. Repeating the book keeps the set of different
chunks fixed, so the growth measures the part of training that reads the whole text (cutting it
into chunks and counting them); the merge loop works on the different chunks and stays the same.
`tokenizers` is a test-only dependency (requirements-test.txt): without it, its column is n/a.
"""

from __future__ import annotations

import os
import time

from .common import ROOT, Row, median, not_available

TITLE = "BPE training: the kata's reference vs Hugging Face tokenizers"
SPECIALS = ("<pad>", "<eos>")


def train_kata(bpe_stage, text: str, vocab_size: int) -> int:
    bpe = bpe_stage.ByteBPE()
    bpe.train(text, vocab_size, special_tokens=SPECIALS)
    return len(bpe.merges)


def train_hf(tokenizers, text: str, vocab_size: int) -> int:
    from tokenizers import models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer.get_vocab_size() - 256 - len(SPECIALS)


def cpu_seconds(fns: dict, repeats: int) -> dict[str, tuple[float, object]]:
    """For each named call: the median CPU time of ``repeats`` calls, alternating, and what it returned."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            results[name] = fn()
            times[name].append(time.process_time() - start)
    return {name: (median(times[name]), results[name]) for name in fns}


def run(quick: bool = False) -> Row:
    try:
        from reference import s13_bpe
    except ImportError as error:
        return not_available("bpe", TITLE, f"stage 13 reference cannot be imported ({error})")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread, like the kata (read at each call)
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    book = (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")
    if quick:
        book = book[:20_000]
    vocab_size, repeats, copies = (300, 1, (1, 2)) if quick else (1024, 3, (1, 2, 4))
    row = Row("bpe", TITLE)
    ours, theirs = {}, {}
    for n in copies:
        text = book * n
        contenders = {"kata": lambda: train_kata(s13_bpe, text, vocab_size)}
        if tokenizers is not None:
            contenders["tokenizers"] = lambda: train_hf(tokenizers, text, vocab_size)
        measured = cpu_seconds(contenders, repeats)
        ours[n], merges = measured["kata"]
        note = f"{len(text):,} characters, vocab_size {vocab_size} ({merges} merges); kata {ours[n]:.2f} s CPU"
        if tokenizers is not None:
            theirs[n], hf_merges = measured["tokenizers"]
            ratio = ours[n] / theirs[n]
            note += f", tokenizers {theirs[n]:.3f} s CPU ({hf_merges} merges)"
            row.add(f"{n}x the book: kata time / tokenizers time", round(ratio, 1), "x", note=note)
        else:
            row.add(f"{n}x the book: kata time / tokenizers time", None, "x",
                    note=note + "; tokenizers not installed (pip install -r requirements-test.txt)")
    last = copies[-1]
    row.add(f"kata: time at {last}x the book / time at 1x", round(ours[last] / ours[1], 2), "x",
            note="linear in the text would be " + f"{last}x; the merge loop does not grow with repeated text")
    if theirs:
        row.add(f"tokenizers: time at {last}x the book / time at 1x", round(theirs[last] / theirs[1], 2), "x")
    row.details = {"vocab_size": vocab_size, "repeats": repeats, "kata_s": ours, "tokenizers_s": theirs,
                   "tokenizers_version": getattr(tokenizers, "__version__", None)}
    return row
