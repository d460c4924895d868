"""Builders of checkpoint directories as each family publishes them, made by the tools that make the real ones.

Shared by test_bpe_oracle.py, test_spm_oracle.py, test_checkpoint.py, test_chat.py and test_families.py:
byte-level BPEs trained by `tokenizers` (GPT-2, SmolLM, Llama 3 and Qwen2 pre-tokenizers), a SentencePiece
BPE trained by `sentencepiece` and converted by transformers, random tiny models saved by transformers'
save_pretrained (config.json in the layout of each transformers version), and the commands run as processes.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess

import torch

from grader import curriculum
import preloaded
from grader_kata import require_oracle

ROOT = curriculum.ROOT
BOOK = (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")
SHORT, DOUBLE = "<|endoftext|>", "<|endoftext|><|endoftext|>"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# the bytes SmolLM2-135M's vocabulary has no token for
HOLES = [4, 6, 19, 20, 22, 29, 192, 193, 241, 242, *range(245, 256)]
TOOL_CALL = ("<tool_call>", "</tool_call>")  # Qwen2.5's added tokens with "special": false
SMOLLM2_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                 "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                 "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>"]
# Llama 2's and TinyLlama's normalizer (older transformers wrote it); transformers 5 writes a Metaspace pre-tokenizer
OLDER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
CHATML = ("{% for message in messages %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


# --- tokenizers -------------------------------------------------------------------------------


def train_hf(hf, pre_tokenizer, ignore_merges: bool = False, vocab_size: int = 700, normalizer=None, holes=(),
             special_tokens=(SHORT, DOUBLE, "<pad>"), text: str = BOOK[:60_000]):
    """A byte-level BPE trained by `tokenizers` on ``text`` (60 000 characters of the book), every byte but ``holes``
    included (the book has none of HOLES, so the trainer then makes no token for them, as SmolLM2's lacks them)."""
    from tokenizers import decoders, models, trainers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokenizer = hf.Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = [char for byte, char in bytes_to_unicode().items() if byte not in holes]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=alphabet)
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def pre_tokenizer_of(hf, kind: str):
    from tokenizers import pre_tokenizers

    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind in ("llama3", "qwen2"):
        pattern = LLAMA3_PATTERN if kind == "llama3" else QWEN2_PATTERN
        return pre_tokenizers.Sequence([pre_tokenizers.Split(hf.Regex(pattern), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),  # SmolLM
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def byte_level(hf, name: str, vocab_size: int = 700, text: str = BOOK[:60_000]):
    """SmolLM2's ("smollm2"), Llama 3's ("llama3") or Qwen2.5's ("qwen2.5") kind of byte-level tokenizer, trained."""
    from tokenizers import AddedToken, normalizers, processors

    if name == "smollm2":  # the added tokens first (trained as specials), the 21 bytes left out of the alphabet
        tokenizer = train_hf(hf, pre_tokenizer_of(hf, "smollm"), vocab_size=vocab_size, holes=HOLES,
                             special_tokens=SMOLLM2_ADDED, text=text)
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    elif name == "llama3":  # the specials after the merged tokens, as Llama 3's 128000...
        tokenizer = train_hf(hf, pre_tokenizer_of(hf, "llama3"), ignore_merges=True, vocab_size=vocab_size,
                             special_tokens=(), text=text)
        tokenizer.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
        tokenizer.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                                 special_tokens=[("<|begin_of_text|>", vocab_size)])
    else:  # Qwen2.5: NFC, its own pattern, the specials after the merged tokens, then two that are not special
        tokenizer = train_hf(hf, pre_tokenizer_of(hf, "qwen2"), normalizer=normalizers.NFC(), vocab_size=vocab_size,
                             special_tokens=(), text=text)
        tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in TOOL_CALL])
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def train_spm(prefix, vocab_size: int = 1200):
    """A BPE of vocab_size (1 200) pieces trained by sentencepiece on the book, Llama 2's options; (path, processor)."""
    spm = require_oracle("sentencepiece")
    spm.SentencePieceTrainer.train(
        input=str(ROOT / "data" / "frankenstein.txt"), model_prefix=str(prefix), model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, split_digits=True, character_coverage=0.9995, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=100_000, num_threads=1, minloglevel=2)
    return prefix.with_suffix(".model"), spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))


def converted_spm(model_path, directory) -> dict:
    """transformers 5's conversion of the sentencepiece model to a tokenizer.json (in ``directory``), parsed."""
    require_oracle("google.protobuf", "tokenizers")
    from transformers import LlamaTokenizer

    (directory / "tokenizer.model").write_bytes(model_path.read_bytes())
    path = directory / "tokenizer.json"
    LlamaTokenizer.from_pretrained(str(directory)).backend_tokenizer.save(str(path))
    return json.loads(path.read_text(encoding="utf-8"))


def layouts(newer: dict) -> dict[str, dict]:
    """The converted file, and the same with the older layout: only the normalizer and pre-tokenizer changed."""
    older = copy.deepcopy(newer) | {"normalizer": OLDER, "pre_tokenizer": None}
    return {"newer": newer, "older": older}


def with_bos(config: dict, bos: str = "<s>", bos_id: int = 1) -> dict:
    """tokenizer.json's config with the "<s> $A" post-processor of Llama 2's and Mistral's published files."""
    return config | {"post_processor": {
        "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                                 {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}}


# --- models -----------------------------------------------------------------------------------


FAMILIES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
            "mistral": ("MistralConfig", "MistralForCausalLM")}


def write_model(hf, directory, *, family="llama", window=None, vocab=96, heads=4, kv_heads=2, base=10000.0,
                scaling=None, tie=False, layout="5.x", shard=False, dtype=torch.float32, bos=None, eos=0):
    """A random model of the family saved with save_pretrained; returns it as transformers loads it back, in float32.

    window: Mistral's sliding_window; for Qwen2, the sliding_window its published config.json names while
    use_sliding_window is false (transformers >= 5 would write null). layout "llama-2": TinyLlama's config.json.
    """
    torch.manual_seed(0)
    config_class, model_class = (getattr(hf, name) for name in FAMILIES[family])
    options = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=64,
                   rms_norm_eps=1e-6, tie_word_embeddings=tie, bos_token_id=bos, eos_token_id=eos,
                   pad_token_id=None, rope_parameters=dict(scaling or {"rope_type": "default"}, rope_theta=base))
    if family == "qwen2":
        options.update(use_sliding_window=False, max_window_layers=1)
    if family == "mistral":
        options.update(sliding_window=window)
    model = model_class(config_class(**options)).eval()
    with torch.no_grad():  # weights far from their init, so that a misplaced one shows
        for parameter in model.parameters():
            parameter.copy_(1.0 + 0.3 * torch.randn_like(parameter) if parameter.dim() == 1
                            else 0.3 * torch.randn_like(parameter))
    model.to(dtype).save_pretrained(directory, max_shard_size="20KB" if shard else "1GB")
    saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert "rope_parameters" in saved and "rope_theta" not in saved, "transformers >= 5 writes rope_parameters"
    if layout == "before-5.0":  # the layout of transformers < 5: top-level rope_theta and rope_scaling
        rope = saved.pop("rope_parameters")
        saved["rope_theta"] = rope.pop("rope_theta")
        saved["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    if layout == "llama-2":  # TinyLlama's (transformers 4.31): no rope_theta (10000), rope_scaling null, pretraining_tp
        assert saved.pop("rope_parameters") == {"rope_type": "default", "rope_theta": 10000.0}
        saved.update(rope_scaling=None, pretraining_tp=1, torch_dtype=saved.pop("dtype"), transformers_version="4.31.0")
    if family == "qwen2":  # Qwen2.5's files name a window that use_sliding_window false switches off
        assert saved["use_sliding_window"] is False and "max_window_layers" in saved
        saved["sliding_window"] = window
    (directory / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    assert any(directory.glob("*.safetensors.index.json")) == shard
    return model_class.from_pretrained(directory, dtype=torch.float32).eval()  # as transformers reads it


def our_greedy_ids(ours, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """Greedy decoding with the kata's model and its caches: the prompt, then one token at a time (as the command)."""
    caches, tokens, ids = ours.new_caches(), prompt, []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits, _ = ours(tokens, caches)
            tokens = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
            ids.append(int(tokens))
    return ids


def greedy(model, prompt: list[int], new_tokens: int, eos=2) -> list[int]:
    """transformers' greedy generate, its own cache, stopping after an eos id: the new ids, the eos dropped."""
    stops = eos if isinstance(eos, list) else [eos]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=stops,
                             pad_token_id=0)[0, len(prompt):].tolist()
    return next((out[:i] for i, token_id in enumerate(out) if token_id in stops), out)


def rendered(oracle, messages: list[dict]) -> list[int]:
    return oracle.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


# --- the commands, run as a person runs them ----------------------------------------------------


def command(module: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([*preloaded.python_m(env), module, *argv], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=240)


def generate(*argv: str) -> subprocess.CompletedProcess:
    return command("grader.generate", *argv)


def run_chat(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return command("grader.chat", *argv, stdin=stdin)
