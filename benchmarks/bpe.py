"""Row 6: how fast stage 13 trains a BPE, against Hugging Face's `tokenizers` on the same job.

Both train a byte-level BPE with GPT-2's chunk pattern to the same vocabulary size (256 bytes,
the merges, 2 special tokens) on 1, 2 and 4 copies of the book; the row reports the CPU seconds
of each (process time: steadier than wall time on a shared machine), their ratio, and how each
grows with the text. `tokenizers` runs single-threaded (TOKENIZERS_PARALLELISM=false), like the
kata, and the two alternate on every repeat. Two kinds of copies: the book REPEATED keeps the set
of different chunks fixed, so only the part of training that reads the whole text grows; copies
with their letters SHIFTED (a -> b -> c ..., a Caesar cipher, a different shift per copy) bring
new words, so the merge loop, which works on the different chunks, grows too, as on real text.
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


def shifted(text: str, shift: int) -> str:
    """The text with every ASCII letter moved ``shift`` places along the alphabet (new words, same shape)."""
    lower, upper = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    table = str.maketrans(lower + upper, lower[shift:] + lower[:shift] + upper[shift:] + upper[:shift])
    return text.translate(table)


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
    ours: dict[str, dict[int, float]] = {"repeated": {}, "shifted": {}}
    theirs: dict[str, dict[int, float]] = {"repeated": {}, "shifted": {}}
    for kind in ("repeated", "shifted"):
        for n in copies:
            text = book * n if kind == "repeated" else "".join(shifted(book, k) for k in range(n))
            contenders = {"kata": lambda: train_kata(s13_bpe, text, vocab_size)}
            if tokenizers is not None:
                contenders["tokenizers"] = lambda: train_hf(tokenizers, text, vocab_size)
            measured = cpu_seconds(contenders, repeats)
            ours[kind][n], merges = measured["kata"]
            note = (f"{len(text):,} characters, vocab_size {vocab_size} ({merges} merges); "
                    f"kata {ours[kind][n]:.2f} s CPU")
            name = f"{n}x the book ({kind}): kata time / tokenizers time"
            if tokenizers is not None:
                theirs[kind][n], hf_merges = measured["tokenizers"]
                note += f", tokenizers {theirs[kind][n]:.3f} s CPU ({hf_merges} merges)"
                row.add(name, round(ours[kind][n] / theirs[kind][n], 1), "x", note=note)
            else:
                row.add(name, None, "x",
                        note=note + "; tokenizers not installed (pip install -r requirements-test.txt)")
    last = copies[-1]
    for kind in ("repeated", "shifted"):
        growth = round(ours[kind][last] / ours[kind][1], 2)
        row.add(f"kata: time at {last}x the book ({kind}) / time at 1x", growth, "x",
                note=f"proportional to the text would be {last}x")
        if theirs[kind]:
            row.add(f"tokenizers: time at {last}x the book ({kind}) / time at 1x",
                    round(theirs[kind][last] / theirs[kind][1], 2), "x")
    row.details = {"vocab_size": vocab_size, "repeats": repeats, "kata_s": ours, "tokenizers_s": theirs,
                   "tokenizers_version": getattr(tokenizers, "__version__", None)}
    return row
