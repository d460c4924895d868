"""Stage 13's SentencePieceBPE against `sentencepiece` itself and Hugging Face's `tokenizers`.

`sentencepiece` trains a small BPE on the book as Llama 2's was trained (byte fallback, digits
split, a dummy prefix, no normalization, extra whitespace kept, whitespace-only pieces allowed);
its own `encode` gives the expected ids. transformers' Llama tokenizer converts the model to a
tokenizer.json (the newer layout: a Metaspace pre-tokenizer, prepend_scheme "first"), and the
older layout (normalizer Prepend("▁") + Replace(" " -> "▁"), as older transformers and the
published Llama 2 and TinyLlama files write it) is made from it by editing those two fields only.
`tokenizers` reads both; the reference must encode id for id as `tokenizers` does, as
`sentencepiece` does wherever the layout agrees with it, and decode as `tokenizers` does. The stage
suite's hand-written Llama 2-style file is checked against `tokenizers` too.

`sentencepiece`, `protobuf` (transformers reads the .model file with it) and `tokenizers` are
test-only dependencies: these tests FAIL, never skip, where one is missing.
"""

from __future__ import annotations

import json

import pytest

import grader_kata
from grader import curriculum, loader
from families import BOOK, converted_spm, generate, layouts, train_spm, with_bos
from grader_kata import require_oracle

VARIED = [
    "",
    "Hello world",
    BOOK[50_000:56_000],
    "Café crème brûlée, naïve façade — “quoted” ‘single’… e\u0301",  # accents, mostly byte fallback
    "你好，世界。ロボットの夢 한국어 مرحبا بالعالم Привет, мир Ελληνικά",  # CJK, Arabic, Cyrillic, Greek
    "🦙🔥 llamas 👩‍🔬 🇫🇷",  # emoji, a zero-width joiner, a flag
    "def f(x):\n    return x ** 2  # squared\n\n\tif x != 0: {'a': [1, 2]}",  # code, indentation
    "\x00\x01\x07 control \x7f\x1b[0m bytes",
    "  two leading spaces", " one", "trailing   ", "many     inner      spaces", " ", "   ",
    "\n\nnew\nlines\r\n\n", "In 1818 there were 1,234,567.89 pounds",
    "a\u00a0b\u3000c\u2028d ▁ literal ▁▁ markers",
]
WITH_SPECIALS = ["<s>Hello</s> world", "x<s> y</s>", "</s></s><unk>z", "<s>  two"]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """A BPE of 1 200 pieces trained by sentencepiece on the book, Llama 2's options; (path, processor)."""
    return train_spm(tmp_path_factory.mktemp("spm") / "tokenizer")


@pytest.fixture(scope="module")
def newer_config(spm_model, tmp_path_factory):
    """transformers 5's conversion of the sentencepiece model to a tokenizer.json, parsed."""
    return converted_spm(spm_model[0], tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def bpe_stage():
    return loader.load_stage({"s13_bpe": curriculum.REFERENCE}, "s13_bpe")


def read_both(hf, bpe_stage, config: dict, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return hf.Tokenizer.from_file(str(path)), bpe_stage.ByteBPE.from_tokenizer_json(path)


def test_the_converted_file_has_the_layouts_this_stage_reads(newer_config):
    """What transformers 5 writes for Llama: no normalizer, Metaspace(first, split false), byte fallback,
    the decoder Replace + ByteFallback + Fuse + Strip, <unk> <s> </s> at 0 1 2 and bytes at 3..258."""
    assert newer_config["normalizer"] is None
    assert newer_config["pre_tokenizer"] == {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                             "split": False}
    assert newer_config["model"]["byte_fallback"] is True
    assert [step["type"] for step in newer_config["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"]
    vocab = newer_config["model"]["vocab"]
    assert [vocab["<unk>"], vocab["<s>"], vocab["</s>"], vocab["<0x00>"], vocab["<0xFF>"]] == [0, 1, 2, 3, 258]


@pytest.mark.parametrize("layout", ["newer", "older"])
def test_encode_and_decode_match_tokenizers_and_sentencepiece(spm_model, newer_config, bpe_stage, tmp_path, layout):
    hf = require_oracle("tokenizers")
    sp = spm_model[1]
    tokenizer, ours = read_both(hf, bpe_stage, layouts(newer_config)[layout], tmp_path)
    assert type(ours).__name__ == "SentencePieceBPE" and ours.vocab_size == tokenizer.get_vocab_size() == 1200
    for text in VARIED + WITH_SPECIALS:
        expected = tokenizer.encode(text, add_special_tokens=False).ids  # added tokens split out: allowed_special
        got = ours.encode(text, allowed_special=True)
        assert got == expected, f"{layout}: encode({text[:60]!r}, allowed_special=True)\n  ours {got[:30]}\n  hf   {expected[:30]}"
        assert ours.decode(got) == tokenizer.decode(got, skip_special_tokens=False), f"{layout}: decode of {text[:60]!r}"
    for text in VARIED:
        got = ours.encode(text)
        # Metaspace adds no "▁" before text that starts with a space; sentencepiece (and the older layout) does
        if layout == "older" or not text.startswith(" "):
            assert got == sp.encode(text), f"{layout}: encode({text[:60]!r}) differs from sentencepiece"
        if layout == "older":
            # a "▁" in the text is a space to both: it comes back as one
            assert ours.decode(got) == sp.decode(got) == text.replace("▁", " "), f"{layout}: decode(encode({text[:60]!r}))"
    assert ours.encode(BOOK) == sp.encode(BOOK), "the whole book"
    fallen = [i for i in ours.encode(VARIED[4]) if 3 <= i <= 258]  # the byte tokens
    assert len(fallen) > 50, f"the multilingual text should mostly fall back to bytes, got {len(fallen)} byte tokens"


# the texts of the brief, and "</s>" inside the text as a TinyLlama chat template puts it
NORMALIZED_SPECIALS = WITH_SPECIALS + [
    "Hello <s> world", "Hi</s>\nthere", "<s>", " <s>", "a<unk>b", "<s>[INST] Hi [/INST] Hello </s><s>[INST] more",
    "<|user|>\nHi</s>\n<|assistant|>\n", "a </s>b </s>", "  </s>  ", "</s>", "x▁</s>", "<s><s> </s></s>"]


@pytest.mark.parametrize("marked", [("<unk>", "<s>", "</s>"), ("</s>",)])
def test_special_tokens_marked_normalized_match_tokenizers(newer_config, bpe_stage, tmp_path, marked):
    """The converted file in the older layout with <unk> <s> </s> (or only </s>) marked "normalized": true, as
    Meta's Llama 2 upload marks them: tokenizers finds those in the normalized text, written "▁</s>", so "Hi</s>" is
    text and " </s>" one token. Ours must give the same ids, and decode them as tokenizers does."""
    hf = require_oracle("tokenizers")
    config = layouts(newer_config)["older"]
    for token in config["added_tokens"]:
        token["normalized"] = token["content"] in marked
    tokenizer, ours = read_both(hf, bpe_stage, config, tmp_path)
    for text in VARIED + NORMALIZED_SPECIALS:
        expected = tokenizer.encode(text, add_special_tokens=False).ids
        got = ours.encode(text, allowed_special=True)
        assert got == expected, f"{marked}: encode({text[:60]!r}, allowed_special=True)\n  ours {got[:30]}\n  hf   {expected[:30]}"
        assert ours.decode(got) == tokenizer.decode(got, skip_special_tokens=False), f"{marked}: decode of {text[:60]!r}"
    # the file is read as marked: "</s>" is a token after a space, text after a letter
    assert ours.encode("Hi </s>", allowed_special=True)[-1] == 2 and 2 not in ours.encode("Hi</s>", allowed_special=True)


@pytest.mark.parametrize("scheme, split", [("always", False), ("always", True), ("never", False)])
def test_other_metaspace_settings_match_tokenizers(newer_config, bpe_stage, tmp_path, scheme, split):
    hf = require_oracle("tokenizers")
    config = newer_config | {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme,
                                               "split": split}}
    tokenizer, ours = read_both(hf, bpe_stage, config, tmp_path)
    for text in VARIED + WITH_SPECIALS:
        assert ours.encode(text, allowed_special=True) == tokenizer.encode(text, add_special_tokens=False).ids, \
            f"Metaspace {scheme} split={split}: {text[:60]!r}"


def test_byte_runs_that_are_not_utf8_decode_as_tokenizers_does(newer_config, bpe_stage, tmp_path):
    hf = require_oracle("tokenizers")
    tokenizer, ours = read_both(hf, bpe_stage, newer_config, tmp_path)
    byte = newer_config["model"]["vocab"]["<0xC3>"]
    piece = newer_config["model"]["vocab"]["▁the"]
    for ids in ([byte], [byte, byte, byte + 0xA9 - 0xC3], [piece, byte, 1, byte + 0xA9 - 0xC3], [3, 258, piece, 3]):
        assert ours.decode(ids) == tokenizer.decode(ids, skip_special_tokens=False), ids


def test_sentencepiece_merges_one_place_at_a_time_as_apply_merges_does(bpe_stage):
    """A BPE model written by hand: pieces "aba" (score 0), "ab" (-1), "a", "b"; sentencepiece merges the best
    pair of its queue, the leftmost on a tie, one place at a time: "abab" is a b a b -> ab a b -> aba b (merging
    every (a, b) at once would give ab ab). apply_merges, with the scores as ranks, must give the same ids."""
    spm = require_oracle("google.protobuf", "sentencepiece")
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    model = model_pb2.ModelProto()
    model.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    model.normalizer_spec.name, model.normalizer_spec.add_dummy_prefix = "identity", False
    for piece, score in [("<unk>", 0.0), ("aba", 0.0), ("ab", -1.0), ("a", -2.0), ("b", -3.0)]:
        model.pieces.add(piece=piece, score=score, type=model_pb2.ModelProto.SentencePiece.UNKNOWN if piece == "<unk>"
                         else model_pb2.ModelProto.SentencePiece.NORMAL)
    sp = spm.SentencePieceProcessor(model_proto=model.SerializeToString())
    a, b, ab, aba = (sp.piece_to_id(piece) for piece in ("a", "b", "ab", "aba"))
    ranks, merges = {(ab, a): 0, (a, b): 1}, {(ab, a): aba, (a, b): ab}
    for text, pieces in [("abab", ["aba", "b"]), ("ababab", ["aba", "b", "ab"]), ("abba", ["ab", "b", "a"])]:
        assert sp.encode(text, out_type=str) == pieces, text
        assert bpe_stage.apply_merges([{"a": a, "b": b}[char] for char in text], ranks, merges) == sp.encode(text), text


def test_the_stage_suites_hand_written_llama2_file_is_what_tokenizers_reads(bpe_stage):
    """The hand-worked ids of tests/test_s13_bpe.py's SentencePiece tests are the library's."""
    hf = require_oracle("tokenizers")
    suite = grader_kata.stage_suite("s13_bpe")
    older = hf.Tokenizer.from_str(json.dumps(suite.spm_tokenizer_json(suite.OLDER)))
    assert older.encode("Hello world", add_special_tokens=False).ids == suite.SPM_HELLO
    assert older.encode("é", add_special_tokens=False).ids == suite.SPM_E_ACUTE
    assert older.encode("abc", add_special_tokens=False).tokens == ["▁", "ab", "c"]
    twice = suite.spm_tokenizer_json(suite.OLDER, model_merges=suite.SPM_MERGES + [["a", "b"]])
    assert hf.Tokenizer.from_str(json.dumps(twice)).encode("abc", add_special_tokens=False).tokens == ["▁", "a", "bc"]
    assert older.encode("  Hello", add_special_tokens=False).tokens == ["▁▁", "▁Hello"]
    assert older.decode([suite.spm_byte_id(0xC3)] * 2 + [suite.spm_byte_id(0xA9)]) == "\ufffd" * 3
    assert older.decode([suite.SPM_IDS["▁▁"], suite.SPM_IDS["▁Hello"]]) == "  Hello"
    assert older.decode([1, suite.SPM_IDS["▁Hello"], 2], skip_special_tokens=False) == "<s> Hello</s>"
    for text in ["你", "a🦙"]:
        assert older.decode(older.encode(text, add_special_tokens=False).ids) == text
    cases = [(suite.OLDER, {"  Hello": ["▁▁", "▁Hello"], "</s>Hello": ["</s>", "▁Hello"], "Hello  ": ["▁Hello", "▁▁"]}),
             (suite.metaspace("always"), {"  Hello": ["▁", "▁Hello"], "</s>Hello": ["</s>", "▁Hello"]}),
             (suite.metaspace("first"), {"  Hello": ["▁", "▁Hello"], "</s>Hello": ["</s>", "H", "ell", "o"]}),
             (suite.metaspace("always", split=True), {"Hello  ": ["▁Hello", "▁", "▁"]})]
    for layout, expected in cases:
        tokenizer = hf.Tokenizer.from_str(json.dumps(suite.spm_tokenizer_json(layout)))
        for text, pieces in expected.items():
            assert tokenizer.encode(text, add_special_tokens=False).tokens == pieces, (layout, text)
    normalized = hf.Tokenizer.from_str(json.dumps(suite.spm_tokenizer_json(
        suite.OLDER, added_tokens=suite.spm_added_tokens("</s>"))))
    for text, (pieces, mistakes) in suite.SPM_NORMALIZED_CASES.items():
        encoding = normalized.encode(text, add_special_tokens=False)
        assert encoding.tokens == pieces and encoding.ids == [suite.spm_id(piece) for piece in pieces], text
        assert tuple(encoding.ids) not in mistakes, text
    ids = [suite.SPM_IDS["▁Hello"], 2, suite.SPM_IDS["▁world"]]
    assert normalized.decode(ids, skip_special_tokens=False) == "Hello </s> world"
    assert normalized.decode([2], skip_special_tokens=False) == "</s>"


def test_generate_prints_what_transformers_generates_with_a_llama2_tokenizer(newer_config, tmp_path):
    """`python -m grader.generate` on a tiny random Llama with the converted tokenizer in the older layout and
    Llama 2's "<s> $A" post-processor: the text transformers' greedy generate gives, decoded by `tokenizers`
    (whose decode of prompt + new ids keeps the space before the first new word)."""
    hf = require_oracle("tokenizers")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = with_bos(layouts(newer_config)["older"])
    tokenizer = hf.Tokenizer.from_str(json.dumps(config, ensure_ascii=False))
    (tmp_path / "tokenizer.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=1200, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                         bos_token_id=1, eos_token_id=2))
    with torch.no_grad():
        for parameter in model.parameters():  # large enough weights for a varied greedy text
            parameter.copy_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    prompt_text = "It was on a dreary night of November that I"
    prompt = tokenizer.encode(prompt_text).ids
    assert prompt[0] == 1, "the post-processor puts <s> first"
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=2,
                             pad_token_id=0)[0, len(prompt):].tolist()
    new = out[:out.index(2)] if 2 in out else out
    expected = tokenizer.decode(prompt + new)
    assert expected.startswith(prompt_text) and len(new) >= 10, expected
    done = generate(str(tmp_path), "--prompt", prompt_text, "--max-new-tokens", "24", "--impl", "reference")
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n", (done.stdout, expected)
