"""The finale, family by family: `python -m grader.generate` and `python -m grader.chat` against transformers.

For each family a checkpoint directory is made as the published one is, by the tools that make the
real ones: transformers' save_pretrained writes a tiny random model (hidden 32, 2 layers) with the
family's config.json, and the tokenizer files come from `tokenizers` (byte-level) or `sentencepiece`
converted by transformers (Llama 2 style), with the family's quirks:

- SmolLM2: Llama layout, tied; Digits + ByteLevel, 17 added tokens at ids 0-16, no token for 21 bytes.
- Llama 3.x: llama3 RoPE scaling, tied; Split + ByteLevel with ignore_merges, <|begin_of_text|> put first
  by a TemplateProcessing post-processor.
- Qwen2.5: q/k/v biases, tied, base 1e6, a sliding_window that use_sliding_window false switches off;
  NFC + Qwen's Split + ByteLevel, <tool_call> added but not special, no BOS.
- TinyLlama (Llama 2): config.json as transformers 4.31 wrote it; SentencePiece BPE with byte fallback
  in the older Prepend + Replace layout, <s> put first by TemplateProcessing.
- Mistral: mistral config with a sliding_window; SentencePiece in the Metaspace layout transformers 5 writes.

The oracle is transformers as a person would use it on the directory: AutoTokenizer.from_pretrained
(BOS as the files ask), AutoModelForCausalLM's greedy generate, decode with the special tokens shown.
The command must print the prompt as typed and then exactly transformers' continuation; the ids of
the prompt and of the continuation are checked in-process with the same reference stages the command
loads. The logits of each family are test_checkpoint.py's business. SmolLM2's directory also runs the
README's command word for word, and a prompt with a byte its vocabulary lacks (dropped, as `tokenizers`
drops it). The ChatML families answer one chat turn as transformers' generate does.
"""

from __future__ import annotations

import json

import pytest
import torch

from families import (CHATML, LLAMA3, converted_spm, generate, greedy, layouts, our_greedy_ids, rendered, run_chat,
                      train_spm, with_bos, write_model)
from families import byte_level as byte_level_tokenizer
from grader import curriculum, loader
from grader.generate import read_checkpoint
from grader_kata import require_oracle

pytestmark = pytest.mark.slow  # nine runs of the commands, about 30 s
PROMPTS = {  # what each family's tokenizer reads in its own way
    "llama3": "In 1818 there were 1,234,567 pounds, I'm told",  # digits in threes, a contraction
    "qwen2.5": "Cafe\u0301 cre\u0300me <tool_call>{\"x\": 12}</tool_call> It was",  # NFD accents, added tokens
    # no leading space: there transformers 5's LlamaTokenizer and the file differ (see the chat test)
    "tinyllama": "It was on a dreary night of November that I",
    "mistral": "  In 1818,   it was",  # leading and inner runs of spaces: Metaspace's "first" differs there
}
NEW_TOKENS = 12
# Llama-2-chat's template, as its tokenizer_config.json has it: bos_token in the text, a system message folded in
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
README = ("python", "-m", "grader.generate", "models/smollm2", "--prompt", "Gravity is", "--max-new-tokens", "40")
NAMES = ["smollm2", "llama3", "qwen2.5", "tinyllama", "mistral"]


@pytest.fixture(scope="module")
def hf():
    return require_oracle("tokenizers", "sentencepiece", "transformers")


@pytest.fixture(scope="module")
def tokenizers(hf):
    return require_oracle("tokenizers")


def settings(directory, **values) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(values), encoding="utf-8")


def byte_level(tokenizers, directory, name: str):
    """SmolLM2's, Llama 3's or Qwen2.5's tokenizer.json and tokenizer_config.json; the model's options."""
    tokenizer = byte_level_tokenizer(tokenizers, name)
    if name == "smollm2":
        settings(directory, tokenizer_class="GPT2Tokenizer", bos_token="<|im_start|>", eos_token="<|im_end|>",
                 chat_template=CHATML, clean_up_tokenization_spaces=False)
        model = dict(base=100000.0, tie=True, bos=1, eos=2, layout="before-5.0")
    elif name == "llama3":
        # clean_up_tokenization_spaces true, as published: transformers 5 ignores it for a BPE ("Hello ." stays)
        settings(directory, tokenizer_class="PreTrainedTokenizerFast", bos_token="<|begin_of_text|>",
                 eos_token="<|end_of_text|>", clean_up_tokenization_spaces=True)
        model = dict(base=500000.0, scaling=LLAMA3, tie=True, bos=700, eos=701, layout="before-5.0")
    else:
        settings(directory, tokenizer_class="Qwen2Tokenizer", bos_token=None, eos_token="<|im_end|>",
                 chat_template=CHATML, clean_up_tokenization_spaces=False)
        # a window of 16, switched off: prompt and reply run past it
        model = dict(family="qwen2", base=1e6, tie=True, window=16, bos=700, eos=702, layout="before-5.0")
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer.get_vocab_size(), model


def sentencepiece(spm_model, directory, name: str):
    """TinyLlama's (older layout) or Mistral's (Metaspace) tokenizer.json with <s> first; the model's options."""
    config = converted_spm(spm_model, directory)  # tokenizer.model stays beside it, as published
    config = with_bos(layouts(config)["older" if name == "tinyllama" else "newer"])
    (directory / "tokenizer.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    settings(directory, tokenizer_class="LlamaTokenizer", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
             add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False,
             **{"chat_template": LLAMA2_CHAT} if name == "tinyllama" else {})
    if name == "tinyllama":
        return 1200, dict(layout="llama-2", bos=1, eos=2)
    return 1200, dict(family="mistral", window=32, bos=1, eos=2, layout="before-5.0")  # the kata reads 32 positions


@pytest.fixture(scope="module")
def checkpoints(hf, tokenizers, tmp_path_factory) -> dict:
    """name -> the checkpoint directory, written by save_pretrained with the family's tokenizer files."""
    spm_model, _ = train_spm(tmp_path_factory.mktemp("spm") / "tokenizer")
    made = {}
    for name in NAMES:
        directory = tmp_path_factory.mktemp(name)
        if name in ("tinyllama", "mistral"):
            vocab, options = sentencepiece(spm_model, directory, name)
        else:
            vocab, options = byte_level(tokenizers, directory, name)
        write_model(hf, directory, vocab=vocab, **options)
        made[name] = directory
    return made


def transformers_generates(hf, directory, prompt: str, new_tokens: int) -> tuple[list[int], list[int], str]:
    """(prompt ids, new ids, text): transformers' greedy continuation, shown after the prompt as typed."""
    oracle = hf.AutoTokenizer.from_pretrained(directory)
    model = hf.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = oracle.encode(prompt)  # with BOS where the files ask for it
    new = greedy(model, ids, new_tokens, eos=[model.generation_config.eos_token_id])
    shown, whole = (oracle.decode(some, skip_special_tokens=False) for some in (ids, ids + new))
    assert whole.startswith(shown) and len(new) >= 4, (shown, whole)
    return ids, new, prompt + whole[len(shown):]


def assert_same_ids(directory, prompt: str, ids: list[int], new: list[int]) -> None:
    """The ids the command computes, with the reference stages it loads: the prompt's, then the greedy ones."""
    stages = {stage.id: curriculum.REFERENCE for stage in curriculum.load()}
    tokenizer = loader.load_stage(stages, "s13_bpe").ByteBPE.from_tokenizer_json(directory / "tokenizer.json")
    ours = read_checkpoint(directory).prefix + tokenizer.encode(prompt, allowed_special=True)
    assert ours == ids, f"prompt ids: ours {ours}\ntransformers' {ids}"
    model = loader.load_stage(stages, "s19_llama").load_pretrained(directory)
    assert our_greedy_ids(model, torch.tensor([ids]), len(new)) == new, f"greedy ids differ from transformers' {new}"


@pytest.mark.parametrize("name", NAMES)
def test_generate_prints_what_transformers_generates(hf, checkpoints, name):
    directory = checkpoints[name]
    if name == "smollm2":  # the README's command, word for word, on a directory like the one it downloads
        prompt, new_tokens = README[5], int(README[7])
        done = generate(*(str(directory) if word == "models/smollm2" else word for word in README[3:]))
    else:
        prompt, new_tokens = PROMPTS[name], NEW_TOKENS
        done = generate(str(directory), "--prompt", prompt, "--max-new-tokens", str(new_tokens), "--impl", "reference")
    ids, new, expected = transformers_generates(hf, directory, prompt, new_tokens)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n", f"{name}: ours\n{done.stdout!r}\ntransformers'\n{expected!r}"
    assert_same_ids(directory, prompt, ids, new)


def test_a_byte_smollm2_lacks_is_dropped_as_tokenizers_drops_it(hf, checkpoints):
    directory = checkpoints["smollm2"]
    prompt = "Gravity\x04 is \x04"
    ids, new, expected = transformers_generates(hf, directory, prompt, NEW_TOKENS)
    assert ids == hf.AutoTokenizer.from_pretrained(directory).encode("Gravity is "), "transformers drops the byte"
    done = generate(str(directory), "--prompt", prompt, "--max-new-tokens", str(NEW_TOKENS), "--impl", "reference")
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n", f"ours\n{done.stdout!r}\ntransformers'\n{expected!r}"
    assert_same_ids(directory, prompt, ids, new)


@pytest.mark.parametrize("name", ["smollm2", "qwen2.5", "tinyllama"])
def test_a_chat_turn_replies_as_transformers(hf, tokenizers, checkpoints, name):
    """ChatML (SmolLM2, Qwen2.5), or Llama 2's [INST] with a system message and <s> written by the template:
    the text apply_chat_template renders, its ids, and the reply greedy generate gives, ending at <|im_end|> or eos.

    TinyLlama: transformers 5's LlamaTokenizer does not read tokenizer.json's normalizer and pre-tokenizer; it
    builds Metaspace("first") (tokenizer_config.json's legacy false) and so puts no "▁" before "[INST]" after the
    "<s>" the template writes (nor a third "▁" before "  In"). The file (Prepend "▁" to every piece between special
    tokens) does, as `tokenizers`, sentencepiece, Meta's chat code and transformers 4's fast tokenizer do: the
    command's ids are the file's, and transformers' are checked to differ by that "▁" alone.
    """
    directory = checkpoints[name]
    oracle = hf.AutoTokenizer.from_pretrained(directory)
    model = hf.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    system = ["--system", "You are brief."] if name == "tinyllama" else []
    messages = [{"role": "system", "content": system[1]}] if system else []
    messages.append({"role": "user", "content": "Hello there"})
    prompt = rendered(oracle, messages)
    if name == "tinyllama":
        text = oracle.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        by_file = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        ids = by_file.encode(text, add_special_tokens=False).ids
        assert ids == [1, oracle.convert_tokens_to_ids("▁"), *prompt[1:]], f"they differ otherwise: {ids}\n{prompt}"
        prompt = ids
    ends = [model.config.eos_token_id, oracle.convert_tokens_to_ids("<|im_end|>" if name != "tinyllama" else "</s>")]
    reply = greedy(model, prompt, NEW_TOKENS, eos=ends)
    assert len(reply) >= 2, "the random model should say something before it stops"
    done = run_chat(str(directory), "--max-new-tokens", str(NEW_TOKENS), "--impl", "reference", *system,
                    stdin="Hello there\n")
    assert done.returncode == 0, done.stderr
    expected = oracle.decode(reply)
    assert done.stdout == expected + "\n", f"{name}: ours {done.stdout!r}\ntransformers' {expected!r}"
