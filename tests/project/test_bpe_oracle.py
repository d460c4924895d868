"""Stage 13's reference against Hugging Face's `tokenizers`, the library that writes tokenizer.json.

`tokenizers` trains byte-level BPEs on the book here (GPT-2, Llama 3 and SmolLM pre-tokenizers, with
special tokens, one of them the other twice) and saves them; the reference must read each file and
encode a varied text id for id as `tokenizers` does, decode it back, and stream a file line by line
to the same ids. The stage suite's hand-written tokenizer.json is checked here too, so its
hand-worked ids are the library's.

`tokenizers` is a test-only dependency (requirements-test.txt): a learner never needs it, so the
stage suite cannot use it, and these tests FAIL, never skip, where it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from grader import curriculum, loader
from grader_kata import require_oracle

ROOT = curriculum.ROOT
BOOK = (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")
SHORT, DOUBLE = "<|endoftext|>", "<|endoftext|><|endoftext|>"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

VARIED = [
    "",
    "I can't, won't; it's he'll she'd we're they've I'm. DON'T 'tis O'Brien's",  # contractions, any case
    "In 1818 there were 1,234,567.89 pounds; 42nd street; ٣٤ ² ½",  # digits, other scripts' digits
    "Café crème brûlée, naïve façade — “quoted” ‘single’… e\u0301",  # accents, a combining accent
    "你好，世界。ロボットの夢 한국어",  # CJK
    "🦙🔥 llamas 👩‍🔬 🇫🇷",  # emoji, a zero-width joiner, a flag
    "  \n\n\tTabs,\r\nCRLF   and   runs of   spaces  \n",  # whitespace runs
    "trailing spaces   ", "\n\n\n", "a\u00a0b\u3000c\u2028d",  # unicode spaces
    f"{DOUBLE}{SHORT} and {SHORT}x{SHORT * 3}<pad> <pad>",  # special tokens, the longest first
    BOOK[100_000:104_000],
]


@pytest.fixture(scope="module")
def hf():
    return require_oracle("tokenizers")


@pytest.fixture(scope="module")
def bpe_stage():
    return loader.load_stage({"s13_bpe": curriculum.REFERENCE}, "s13_bpe")


def train_hf(hf, pre_tokenizer, ignore_merges: bool = False, vocab_size: int = 700):
    """A byte-level BPE trained by `tokenizers` on 60 000 characters of the book, all 256 bytes included."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = hf.Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SHORT, DOUBLE, "<pad>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([BOOK[:60_000]], trainer)
    return tokenizer


def pre_tokenizer_of(hf, kind: str):
    from tokenizers import pre_tokenizers

    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind == "llama3":
        return pre_tokenizers.Sequence([pre_tokenizers.Split(hf.Regex(LLAMA3_PATTERN), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),  # SmolLM
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def assert_same_ids(hf_tokenizer, bpe, what: str) -> None:
    for text in VARIED:
        expected = hf_tokenizer.encode(text, add_special_tokens=False).ids  # specials split out, as allowed_special
        got = bpe.encode(text, allowed_special=True)
        assert got == expected, f"{what}: encode({text[:60]!r}, allowed_special=True)\n  ours {got[:30]}\n  hf   {expected[:30]}"
        assert bpe.decode(got) == hf_tokenizer.decode(expected, skip_special_tokens=False) == text, \
            f"{what}: decode does not give back {text[:60]!r}"
    hf_tokenizer.encode_special_tokens = True  # specials as plain text, as allowed_special=False
    try:
        for text in VARIED:
            expected = hf_tokenizer.encode(text, add_special_tokens=False).ids
            got = bpe.encode(text)
            assert got == expected, f"{what}: encode({text[:60]!r})\n  ours {got[:30]}\n  hf   {expected[:30]}"
    finally:
        hf_tokenizer.encode_special_tokens = False


@pytest.mark.parametrize("kind, ignore_merges", [("gpt2", False), ("llama3", True), ("llama3", False), ("smollm", False)])
def test_tokenizer_json_written_by_tokenizers_encodes_id_for_id(hf, bpe_stage, tmp_path, kind, ignore_merges):
    tokenizer = train_hf(hf, pre_tokenizer_of(hf, kind), ignore_merges)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    bpe = bpe_stage.ByteBPE.from_tokenizer_json(path)
    assert bpe.vocab_size == tokenizer.get_vocab_size(), f"vocab_size {bpe.vocab_size} vs {tokenizer.get_vocab_size()}"
    assert bpe.special_tokens == {SHORT: 0, DOUBLE: 1, "<pad>": 2}, bpe.special_tokens
    assert_same_ids(tokenizer, bpe, f"{kind} pre-tokenizer, ignore_merges={ignore_merges}")


def test_merges_in_the_older_string_spelling_read_the_same(hf, bpe_stage, tmp_path):
    tokenizer = train_hf(hf, pre_tokenizer_of(hf, "gpt2"))
    config = json.loads(tokenizer.to_str())
    assert isinstance(config["model"]["merges"][0], list), "tokenizers now writes merges as [a, b]"
    config["model"]["merges"] = [" ".join(pair) for pair in config["model"]["merges"]]  # GPT-2's "a b"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    assert_same_ids(hf.Tokenizer.from_file(str(path)), bpe_stage.ByteBPE.from_tokenizer_json(path), "'a b' merges")


def test_streaming_a_file_line_by_line_gives_the_library_ids_of_the_whole(hf, bpe_stage, tmp_path):
    tokenizer = train_hf(hf, pre_tokenizer_of(hf, "gpt2"))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    bpe = bpe_stage.ByteBPE.from_tokenizer_json(tmp_path / "tokenizer.json")
    text = "\n".join(VARIED) + BOOK[200_000:260_000]
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    with path.open(encoding="utf-8", newline="") as lines:
        streamed = list(bpe.encode_iterable(lines, allowed_special=True))
    assert streamed == tokenizer.encode(text, add_special_tokens=False).ids, "encode_iterable differs from tokenizers"


@pytest.fixture(scope="module")
def stage_suite():
    """tests/test_s13_bpe.py as a module, for its hand-written file and its slow reading of tokenizer.json."""
    spec = importlib.util.spec_from_file_location("_s13_suite", ROOT / "tests" / "test_s13_bpe.py")
    suite = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "tests"))  # the suite imports checks.py from there
    try:
        spec.loader.exec_module(suite)
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return suite


def test_the_stage_suites_hand_written_tokenizer_json_is_what_tokenizers_reads(hf, stage_suite):
    """The hand-worked ids of tests/test_s13_bpe.py are the library's, not only the reference's."""
    suite = stage_suite
    assert set(hf.pre_tokenizers.ByteLevel.alphabet()) == set(suite.BYTE_ALPHABET.values()), "the byte alphabet differs"
    for spelling in ("pairs", "strings"):
        config = suite.hand_tokenizer_json(spelling)
        tokenizer = hf.Tokenizer.from_str(json.dumps(config))
        for text, expected, why in suite.HAND_CASES:
            assert tokenizer.encode(text, add_special_tokens=False).ids == expected, f"{text!r} ({spelling}): {why}"
        for byte in range(128):  # every ASCII byte is the hand-written id (so the alphabet's ORDER agrees too)
            assert tokenizer.encode(chr(byte), add_special_tokens=False).ids == [suite.hand_byte_id(byte)], byte
        for text in suite.FILE_TEXTS:
            assert suite.slow_encode_file(config, text) == tokenizer.encode(text, add_special_tokens=False).ids, text


def test_the_stage_suites_slow_reading_of_a_file_is_what_tokenizers_does(hf, stage_suite, tmp_path):
    """slow_encode_file, the stage suite's oracle for tokenizer.json, on a file tokenizers trained on the book."""
    tokenizer = train_hf(hf, pre_tokenizer_of(hf, "gpt2"))
    config = json.loads(tokenizer.to_str())
    for text in VARIED + stage_suite.FILE_TEXTS:
        assert stage_suite.slow_encode_file(config, text) == tokenizer.encode(text, add_special_tokens=False).ids, \
            f"slow_encode_file differs from tokenizers on {text[:60]!r}"


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "smollm"])
def test_streaming_cut_anywhere_gives_the_ids_of_the_whole_text(bpe_stage, kind):
    """encode_iterable's safe cuts, proven by random trial: 1 500 random texts of awkward characters, each
    fed in random pieces, give encode's ids for the whole text, for each family's chunk patterns."""
    import random

    patterns = {"gpt2": [bpe_stage.GPT2_PATTERN], "llama3": [LLAMA3_PATTERN],
                "smollm": [bpe_stage.DIGITS_PATTERN, bpe_stage.GPT2_PATTERN]}[kind]
    bpe = bpe_stage.ByteBPE()
    bpe.train(BOOK[:30_000], 300)
    bpe.patterns = [bpe_stage.regex.compile(pattern) for pattern in patterns]
    alphabet = [*"\n\n!?ab e'tsT12 3\r\t.é你🦙", "  ", "'ll", "<eos>", "\u00a0", "\u3000", "\x1c"]
    rng = random.Random(0)
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 8))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        for allowed in (False, True):
            assert list(bpe.encode_iterable(pieces, allowed)) == bpe.encode(text, allowed), (text, pieces, allowed)
