"""Stage 13's reference against Hugging Face's `tokenizers`, the library that writes tokenizer.json.

`tokenizers` trains byte-level BPEs on the book here (GPT-2, Llama 3 and SmolLM pre-tokenizers, with
special tokens, one of them the other twice) and saves them; the reference must read each file and
encode a varied text id for id as `tokenizers` does, decode it back, and stream a file line by line
to the same ids. The stage suite's hand-written tokenizer.json is checked here too, so its
hand-worked ids are the library's.

Published files have quirks a freshly trained one lacks; each is made here with the tool that makes
them: SmolLM2's missing byte tokens (trained with an alphabet short of 21 bytes), Qwen2's NFC
normalizer, its own Split pattern and added tokens that are not special, and a file converted from
tiktoken-style ranks by transformers' TikTokenConverter (redundant merges; merges listed before a
token they use is made), also with its ids shuffled so the merge order and the id order disagree.
The stage suite's hand-made quirk files (QUIRK_FILES) are checked against the library too.

`tokenizers` is a test-only dependency (requirements-test.txt): a learner never needs it, so the
stage suite cannot use it, and these tests FAIL, never skip, where it is missing.
"""

from __future__ import annotations

import json

import pytest

import grader_kata
from grader import curriculum, loader
from families import BOOK, DOUBLE, HOLES, LLAMA3_PATTERN, SHORT, TOOL_CALL, pre_tokenizer_of, train_hf
from grader_kata import require_oracle

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
QUIRKY = [  # what the quirks of published files change
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e, nai\u0308ve, Å\u0308 \u212b \ufb01ne x\u00b2 \u2460",  # NFD accents
    "Café crème brûlée, naïve, \u00c5 \u1e9b\u0323",  # the same in NFC, and a dot-below reordering
    "Привет, мир! Ёлка ё\u0308. مرحبا بالعالم؟ ١٢٣ שלום עולם",  # Cyrillic, Arabic, Hebrew
    "東京タワーは333メートル。北京欢迎你！한국어 텍스트",  # CJK
    "🦙🔥 llamas 👩\u200d🔬 🇫🇷 🏳\ufe0f\u200d🌈 1\ufe0f\u20e3",  # emoji sequences
    "def f(x):\n    return {'a': x**2, \"b\": [1, 2, 3]}  # ok\n\tif x != 0: print(f'{x:>4}')\r\n",  # code
    "\x04\x06\x13\x14\x16\x1d the \x04bytes\x06 SmolLM2 lacks: ab\x04cd !\x04! ..\x06.. \x13x\x14 ",
    "\x00\x01\x1b[31mred\x1b[0m \x7f \x85 \u0600",  # other control characters, all present
    "\U00040000\U00080001 a\U0004ffffb \U000bfffd!",  # 4-byte characters led by F1 and F2, also holes
    f"{TOOL_CALL[0]}{{\"name\": \"f\"}}{TOOL_CALL[1]} <tool_call <tool_call>> {SHORT}{TOOL_CALL[0]}",
]


@pytest.fixture(scope="module")
def hf():
    return require_oracle("tokenizers")


@pytest.fixture(scope="module")
def bpe_stage():
    return loader.load_stage({"s13_bpe": curriculum.REFERENCE}, "s13_bpe")


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


def assert_library_ids(hf_tokenizer, bpe, texts, what: str) -> None:
    """encode (both ways of treating specials) and decode against the library, where the text need not come back
    (a normalizer changes it; a missing byte is dropped)."""
    for text in texts:
        expected = hf_tokenizer.encode(text, add_special_tokens=False).ids
        got = bpe.encode(text, allowed_special=True)
        at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        assert got == expected, (f"{what}: encode({text[:60]!r}, allowed_special=True) differs at index {at}\n"
                                 f"  ours {got[max(at - 3, 0):at + 8]}\n  hf   {expected[max(at - 3, 0):at + 8]}")
        assert bpe.decode(got) == hf_tokenizer.decode(expected, skip_special_tokens=False), f"{what}: decode {text[:60]!r}"
    hf_tokenizer.encode_special_tokens = True  # specials as plain text, as allowed_special=False
    try:
        for text in texts:
            assert bpe.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False).ids, f"{what}: {text[:60]!r}"
    finally:
        hf_tokenizer.encode_special_tokens = False


def saved(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.mark.parametrize("kind", ["gpt2", "smollm", "llama3", "qwen2"])
def test_published_quirks_encode_id_for_id(hf, bpe_stage, tmp_path, kind):
    """Each family trained by `tokenizers` as it is published: SmolLM's alphabet short of SmolLM2's 21 bytes; Qwen2
    with its NFC normalizer, its own pattern and two added tokens that are not special; Llama 3 with ignore_merges.
    The whole book, and text that meets every quirk (decomposed accents, the missing bytes, the added tokens)."""
    from tokenizers import AddedToken, normalizers

    tokenizer = train_hf(hf, pre_tokenizer_of(hf, kind), ignore_merges=kind == "llama3",
                         normalizer=normalizers.NFC() if kind == "qwen2" else None, holes=HOLES if kind == "smollm" else ())
    if kind == "qwen2":
        tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in TOOL_CALL])
    config = json.loads(tokenizer.to_str())
    bytes_in_vocab = [token for token in config["model"]["vocab"] if len(token) == 1]
    assert len(bytes_in_vocab) == (256 - len(HOLES) if kind == "smollm" else 256), len(bytes_in_vocab)
    bpe = bpe_stage.ByteBPE.from_tokenizer_json(saved(tokenizer, tmp_path))
    assert bpe.vocab_size == tokenizer.get_vocab_size(), f"vocab_size {bpe.vocab_size} vs {tokenizer.get_vocab_size()}"
    if kind == "smollm":
        assert [byte for byte in range(256) if bpe.byte_ids[byte] is None] == HOLES
    if kind == "qwen2":
        assert bpe.added_tokens == {TOOL_CALL[0]: 700, TOOL_CALL[1]: 701} and bpe.normalization == ["NFC"]
    assert_library_ids(tokenizer, bpe, [BOOK, *VARIED, *QUIRKY], f"{kind} as published")
    text = "\n".join(QUIRKY) + BOOK[:20_000]
    streamed = list(bpe.encode_iterable(text.splitlines(keepends=True), allowed_special=True))
    assert streamed == tokenizer.encode(text, add_special_tokens=False).ids, f"{kind}: encode_iterable differs"


@pytest.mark.parametrize("normalizer", ["NFD", "NFKC", "NFKD", "Sequence"])
def test_every_unicode_normalizer_is_the_librarys(hf, bpe_stage, tmp_path, normalizer):
    from tokenizers import normalizers

    made = {"NFD": normalizers.NFD(), "NFKC": normalizers.NFKC(), "NFKD": normalizers.NFKD(),
            "Sequence": normalizers.Sequence([normalizers.NFKD(), normalizers.NFC()])}[normalizer]
    tokenizer = train_hf(hf, pre_tokenizer_of(hf, "qwen2"), normalizer=made, vocab_size=400)
    bpe = bpe_stage.ByteBPE.from_tokenizer_json(saved(tokenizer, tmp_path))
    assert_library_ids(tokenizer, bpe, [*VARIED[1:7], *QUIRKY], f"normalizer {normalizer}")


def tiktoken_converted(hf, pattern: str = LLAMA3_PATTERN):
    """A file as transformers converts tiktoken ranks (Llama 3's, Qwen2's tokenizer.json): TikTokenConverter itself,
    fed a rank dict {token bytes: rank} made from a BPE that `tokenizers` trained (the single bytes first, in the
    byte alphabet's order, as OpenAI's files have them; then each merged token by its id). `tiktoken`, which the
    converter uses only to read a rank file, is not needed: the rank dict is handed to it directly."""
    from transformers.convert_slow_tokenizer import TikTokenConverter, bytes_to_unicode

    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    trained = json.loads(train_hf(hf, pre_tokenizer_of(hf, "gpt2"), vocab_size=1200).to_str())["model"]["vocab"]
    tokens = sorted((token_id, bytes(to_byte[char] for char in token)) for token, token_id in trained.items()
                    if token not in (SHORT, DOUBLE, "<pad>"))
    ranks = {data: rank for rank, (_, data) in enumerate(tokens)}

    class FromRanks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(ranks_given):
            return ranks_given

    return FromRanks(ranks, pattern=pattern, extra_special_tokens=[SHORT, DOUBLE]).converted()


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_file_converted_from_tiktoken_ranks_encodes_id_for_id(hf, bpe_stage, tmp_path, shuffled):
    """The converter lists, for each token in rank order, EVERY split of it into two tokens (redundant merges:
    "t" + "he" and "th" + "e"), so a merge may use a token that a later merge makes. Shuffled, the ids of the
    merged tokens are permuted too, so the merges' order is not their ids' order: the library goes by rank."""
    import random

    config = json.loads(tiktoken_converted(hf).to_str())
    vocab, merges = config["model"]["vocab"], config["model"]["merges"]
    made = [vocab[a + b] for a, b in merges]
    assert len(merges) > len(set(made)) and config["model"]["ignore_merges"], "the converter made no redundant merges"
    assert any(vocab[part] > vocab[a + b] for a, b in merges for part in (a, b)), "no merge uses a later token"
    if shuffled:
        merged = sorted(token_id for token_id in vocab.values() if token_id >= 256)
        moved = dict(zip(merged, random.Random(0).sample(merged, len(merged))))
        config["model"]["vocab"] = {token: moved.get(token_id, token_id) for token, token_id in vocab.items()}
        assert [config["model"]["vocab"][a + b] for a, b in merges] != sorted(made), "the ids still follow the merges"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    tokenizer = hf.Tokenizer.from_file(str(path))
    bpe = bpe_stage.ByteBPE.from_tokenizer_json(path)
    assert_library_ids(tokenizer, bpe, [BOOK, *VARIED, *QUIRKY], f"converted from tiktoken ranks, shuffled={shuffled}")
    if not shuffled:  # without ignore_merges the merges alone decide, redundant ones included
        config["model"]["ignore_merges"] = False
        path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        assert_library_ids(hf.Tokenizer.from_file(str(path)), bpe_stage.ByteBPE.from_tokenizer_json(path),
                           [BOOK, *VARIED, *QUIRKY], "converted from tiktoken ranks, without ignore_merges")


def test_the_stage_suites_quirk_files_are_what_tokenizers_reads(hf, stage_suite):
    """The hand-worked ids of the stage suite's QUIRK_CASES (a missing byte, merges out of id order or listed
    twice, NFC, an added token that is not special) are the library's."""
    for name, make in stage_suite.QUIRK_FILES.items():
        tokenizer = hf.Tokenizer.from_str(json.dumps(make()))
        for text, allowed, expected, why in stage_suite.QUIRK_CASES[name]:
            tokenizer.encode_special_tokens = not allowed
            assert tokenizer.encode(text, add_special_tokens=False).ids == expected, f"{name}: {text!r}: {why}"


@pytest.fixture(scope="module")
def stage_suite():
    """tests/test_s13_bpe.py as a module, for its hand-written file and its slow reading of tokenizer.json."""
    return grader_kata.stage_suite("s13_bpe")


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
