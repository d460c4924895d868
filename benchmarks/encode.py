"""Row 9: how fast the kata's tokenizer encodes the book from a tokenizer.json, against `tokenizers` on the same file.

One entry of FAMILIES per kind of tokenizer.json: how to write one (a real file of that family
cannot be downloaded here, so each is trained by the tool that makes the real ones, with the builders
of tests/project/families.py that the family tests use) and how the kata reads it: GPT-2's kind
(49,152 ids), SmolLM2's, Llama 3's and Qwen2.5's (byte-level, 4,000 merged ids plus their added
tokens, trained by `tokenizers` on the book), and a SentencePiece BPE with byte fallback (4,000
pieces, trained by `sentencepiece` on the book, converted by transformers) in Llama 2's / TinyLlama's
older layout and in the Metaspace layout of Mistral's files (--quick: 512 ids, 1,200 pieces).

Both encode the whole book (data/frankenstein.txt) into ids, alternating, `tokenizers` single-
threaded (TOKENIZERS_PARALLELISM=false), like the kata; the row reports the median CPU seconds
(process time) of each, their ratio, and whether the ids are the same. Reading the file is not
timed. `tokenizers`, `transformers` and `sentencepiece` are test-only dependencies
(requirements-test.txt): without them the row is n/a.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bpe import cpu_seconds
from .common import ROOT, Row, families, not_available

TITLE = "Encoding the book: the kata's tokenizer vs Hugging Face tokenizers, on the same tokenizer.json"


@dataclass(frozen=True)
class Family:
    """One kind of tokenizer.json in the row."""

    name: str  # what the table calls it, e.g. "byte-level BPE, GPT-2 style"
    write: Callable[[Path, bool], Path]  # (folder, quick) -> the tokenizer.json written into the folder
    load_kata: Callable[[Path], object]  # the kata's tokenizer read from that file; .encode(text) -> ids


def gpt2_style(folder: Path, quick: bool) -> Path:
    """GPT-2's kind: byte-level BPE, ByteLevel pre-tokenizer, trained by `tokenizers` (49,152 ids; 512 in --quick)."""
    from .generate import write_tokenizer

    write_tokenizer(folder, 512 if quick else 49152)
    return folder / "tokenizer.json"


def byte_level(name: str) -> Callable[[Path, bool], Path]:
    """SmolLM2's, Llama 3's or Qwen2.5's kind, trained by `tokenizers` on the whole book."""

    def write(folder: Path, quick: bool) -> Path:
        import tokenizers

        built = families()
        tokenizer = built.byte_level(tokenizers, name, vocab_size=512 if quick else 4000, text=built.BOOK)
        tokenizer.save(str(folder / "tokenizer.json"))
        return folder / "tokenizer.json"

    return write


def sentencepiece(layout: str) -> Callable[[Path, bool], Path]:
    """A SentencePiece BPE with byte fallback trained by `sentencepiece`, converted by transformers; "older":
    Llama 2's and TinyLlama's Prepend + Replace normalizer, "newer": the Metaspace pre-tokenizer of Mistral's."""

    def write(folder: Path, quick: bool) -> Path:
        built = families()
        model, _ = built.train_spm(folder / "spm", vocab_size=1200 if quick else 4000)
        config = built.layouts(built.converted_spm(model, folder))[layout]
        (folder / "tokenizer.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        return folder / "tokenizer.json"

    return write


def byte_bpe(path: Path):
    from reference import s13_bpe

    return s13_bpe.ByteBPE.from_tokenizer_json(path)


FAMILIES = [  # one entry per kind of file the kata reads; ByteBPE.from_tokenizer_json reads them all
    Family("byte-level BPE, GPT-2 style", gpt2_style, byte_bpe),
    Family("SmolLM2 style (Digits + ByteLevel, missing bytes)", byte_level("smollm2"), byte_bpe),
    Family("Llama 3 style (Split + ByteLevel, ignore_merges)", byte_level("llama3"), byte_bpe),
    Family("Qwen2 style (NFC + Split + ByteLevel, added tokens)", byte_level("qwen2.5"), byte_bpe),
    Family("SentencePiece BPE, Llama 2 / TinyLlama layout", sentencepiece("older"), byte_bpe),
    Family("SentencePiece BPE, Mistral's Metaspace layout", sentencepiece("newer"), byte_bpe),
]


def run(quick: bool = False) -> Row:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread, like the kata (read at each call)
    try:  # the files are made by the tools that make the real ones
        import google.protobuf  # noqa: F401  (transformers' conversion of a sentencepiece model)
        import sentencepiece  # noqa: F401
        import transformers  # noqa: F401
        from tokenizers import Tokenizer
    except ImportError as error:
        return not_available("encode", TITLE, f"needs tokenizers, transformers and sentencepiece ({error.name} "
                                              "missing: pip install -r requirements-test.txt)")
    book = (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")
    if quick:
        book = book[:20_000]
    repeats = 1 if quick else 5
    row = Row("encode", TITLE)
    for family in FAMILIES:
        with tempfile.TemporaryDirectory(prefix="kata-bench-") as folder:
            path = family.write(Path(folder), quick)
            kata, theirs = family.load_kata(path), Tokenizer.from_file(str(path))
            measured = cpu_seconds({"kata": lambda: kata.encode(book),
                                    "tokenizers": lambda: theirs.encode(book, add_special_tokens=False).ids}, repeats)
            size = theirs.get_vocab_size()
        (ours, ids), (hf, hf_ids) = measured["kata"], measured["tokenizers"]
        note = (f"{len(book):,} characters -> {len(hf_ids):,} ids, vocabulary {size:,}; median of {repeats}, "
                f"alternating; the same ids: {ids == hf_ids}")
        row.add(f"{family.name}: kata encode", round(ours, 3), "s", note="CPU seconds")
        row.add(f"{family.name}: tokenizers encode", round(hf, 3), "s", note="CPU seconds, one thread")
        row.add(f"{family.name}: kata time / tokenizers time", round(ours / hf, 2), "x", note=note)
        row.details[family.name] = {"kata_s": ours, "tokenizers_s": hf, "same_ids": ids == hf_ids, "ids": len(hf_ids)}
    return row
