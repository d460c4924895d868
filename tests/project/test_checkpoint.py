"""The kata's Llama against Hugging Face transformers, and `python -m grader.generate` run as a person would.

transformers' LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM, with random tiny configs,
write checkpoint directories with save_pretrained (config.json as transformers >= 5 writes it, or
rewritten to the layout of older versions: Llama 3's, Llama 2's and TinyLlama's, Qwen2.5's with a
switched-off sliding_window; one file or small shards; float32 or bfloat16); the reference stage 19
loads each and must give the same logits within 1e-4 and the same greedy token ids as transformers'
generate, for RoPE bases 10000, 500000 and 1000000, Llama 3 scaling, grouped-query, multi-head and
multi-query attention, tied and untied heads, Qwen2's q/k/v biases, Mistral's sliding window (the
kata caps max_seq_len there) or none, and a left-padded batch. The command, given such a directory
and a tokenizer.json trained here by `tokenizers`, must print exactly the text transformers' greedy
generate gives, decoded by `tokenizers`, and refuse an unsupported family in one line.

transformers and tokenizers are test-only dependencies (requirements-test.txt): a learner never
needs them, and these tests FAIL, never skip, where they are missing.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from grader import curriculum, loader
from families import BOOK, LLAMA3, generate, our_greedy_ids, write_model
from grader_kata import require_oracle

ROOT = curriculum.ROOT
PROMPT = "It was on a dreary night of November that I"
EOS = "<|endoftext|>"
TOLERANCE = 1e-4  # the reference reaches about 1e-5 here (float32, 2 layers, weights of std 0.3)


@pytest.fixture(scope="module")
def hf():
    return require_oracle("tokenizers", "transformers")


@pytest.fixture(scope="module")
def llama():
    return loader.load_stage({stage.id: curriculum.REFERENCE for stage in curriculum.load()}, "s19_llama")


CASES = {  # name: (write_model options, the max_seq_len the kata must read: 64, or Mistral's window)
    "gqa-5.x-base10000": (dict(), 64),
    "mha-5.x-base500000-llama3-tied-sharded": (dict(heads=4, kv_heads=4, base=500000.0, scaling=LLAMA3, tie=True,
                                                    shard=True), 64),
    "mqa-old-base500000-sharded": (dict(kv_heads=1, base=500000.0, layout="before-5.0", shard=True), 64),
    "gqa-old-base10000-llama3-tied": (dict(scaling=LLAMA3, tie=True, layout="before-5.0"), 64),
    "gqa-5.x-base500000-bf16": (dict(base=500000.0, dtype=torch.bfloat16), 64),
    "llama-2-tinyllama-layout": (dict(layout="llama-2"), 64),
    "qwen2.5-old-base1e6-tied-window16-off": (dict(family="qwen2", base=1e6, tie=True, window=16,
                                                   layout="before-5.0"), 64),
    "qwen2-5.x-base1e6-mqa-sharded": (dict(family="qwen2", base=1e6, kv_heads=1, shard=True), 64),
    "mistral-v0.1-window16-old": (dict(family="mistral", window=16, layout="before-5.0"), 16),
    "mistral-v0.2-no-window-5.x-bf16": (dict(family="mistral", dtype=torch.bfloat16), 64),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_greedy_ids_match_transformers(hf, llama, tmp_path, case):
    options, max_seq_len = CASES[case]
    model = write_model(hf, tmp_path, **options)
    ours = llama.load_pretrained(tmp_path)
    assert ours.config.max_seq_len == max_seq_len, f"{case}: max_seq_len {ours.config.max_seq_len}, not {max_seq_len}"
    # 40 positions: past the 16 that llama3 scaling keeps unstretched, and past Qwen2.5's switched-off window
    tokens = torch.randint(0, 96, (2, min(40, max_seq_len)))
    with torch.no_grad():
        expected = model(tokens).logits
        logits, _ = ours(tokens)
    diff = (logits - expected).abs().max().item()
    assert diff < TOLERANCE, f"{case}: largest logit difference {diff:.3g} (allowed {TOLERANCE})"
    assert expected.abs().max() > 1.0, "the logits must be large enough for the comparison to mean something"
    prompt = tokens[:1, :6]
    model.generation_config.eos_token_id = None  # as many tokens as asked: ten, so 16 positions in all
    with torch.no_grad():
        theirs = model.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)[0, 6:].tolist()
    assert our_greedy_ids(ours, prompt, 10) == theirs, f"{case}: greedy ids differ from transformers' {theirs}"


def test_a_left_padded_batch_matches_transformers_with_its_position_ids(hf, llama, tmp_path):
    model = write_model(hf, tmp_path, base=500000.0, scaling=LLAMA3)
    ours = llama.load_pretrained(tmp_path)
    tokens = torch.randint(1, 96, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :11] = 0  # row 1: 11 padding tokens on the left
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate computes for left padding
    with torch.no_grad():
        expected = model(tokens, attention_mask=mask, position_ids=positions).logits
        logits, _ = ours(tokens, attention_mask=mask)
    diff = (logits - expected)[mask.bool()].abs().max().item()
    assert diff < TOLERANCE, f"largest logit difference at real tokens {diff:.3g} (allowed {TOLERANCE})"


# --- the command ------------------------------------------------------------------------------


def write_tokenizer(directory, bos: bool = False) -> object:
    """A byte-level BPE of 300 ids trained by `tokenizers` on the book, eos first (id 0), saved as tokenizer.json.

    bos: a post-processor puts "<s>" (id 1) before every text, as Llama 3's tokenizer.json does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS, "<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([BOOK[:30_000]], trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer


def hf_greedy_text(model, tokenizer, new_tokens: int) -> str:
    """transformers' generate (greedy, its own cache), decoded by `tokenizers`: the prompt and what follows."""
    prompt = tokenizer.encode(PROMPT).ids  # with the post-processor's <s> first, when there is one
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=0,
                             pad_token_id=0)[0, len(prompt):].tolist()
    new = out[:out.index(0)] if 0 in out else out
    assert len(new) >= 10, "the random model should write a few tokens before eos"
    return tokenizer.decode(prompt + new)  # special tokens (<s>) are not shown


@pytest.fixture(scope="module")
def checkpoints(hf, tmp_path_factory):
    """Checkpoint directories with a tokenizer.json: Llama in the 5.x layout (sharded), in the older one with a <s>
    prefix, and Qwen2.5's (q/k/v biases, tied, base 1e6, a window of 16 switched off: 24 new tokens go past it)."""
    made = {}
    for layout in ("5.x", "before-5.0", "qwen2"):
        directory = tmp_path_factory.mktemp(layout)
        tokenizer = write_tokenizer(directory, bos=layout == "before-5.0")
        if layout == "qwen2":
            model = write_model(hf, directory, family="qwen2", vocab=tokenizer.get_vocab_size(), base=1e6, tie=True,
                                window=16, layout="before-5.0")
        else:
            model = write_model(hf, directory, vocab=tokenizer.get_vocab_size(), base=500000.0, layout=layout,
                                shard=layout == "5.x", scaling=LLAMA3 if layout == "5.x" else None)
        made[layout] = (directory, hf_greedy_text(model, tokenizer, 24))
    return made


@pytest.mark.parametrize("layout", ["5.x", "before-5.0", "qwen2"])
def test_the_command_prints_what_transformers_generates(checkpoints, layout):
    directory, expected = checkpoints[layout]
    done = generate(str(directory), "--prompt", PROMPT, "--max-new-tokens", "24", "--impl", "reference")
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n", f"ours:\n{done.stdout!r}\ntransformers:\n{expected!r}"
    assert done.stderr == "", "nothing is substituted when --impl is the reference"


def test_untouched_stubs_are_replaced_by_the_reference_and_named(checkpoints, stub_tree):
    directory, expected = checkpoints["5.x"]
    done = generate(str(directory), "--prompt", PROMPT, "--max-new-tokens", "24", "--impl", str(stub_tree))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"
    for stage_id in ("s13_bpe", "s14_rope", "s16_gqa", "s19_llama", "s21_generation"):
        assert f"using reference/{stage_id}.py: yours is not started" in done.stderr, done.stderr
    assert "s20_lm_training" not in done.stderr and "s12_corpus" not in done.stderr, "only the stages it runs"


def test_sampling_is_reproducible_under_a_seed(checkpoints):
    directory, _ = checkpoints["before-5.0"]
    runs = [generate(str(directory), "--prompt", PROMPT, "--max-new-tokens", "12", "--temperature", "1.0",
                     "--top-k", "20", "--top-p", "0.9", "--seed", str(seed), "--impl", "reference") for seed in (3, 3)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith(PROMPT)


def test_a_crash_in_the_learners_stage_is_one_line_naming_it(checkpoints, tmp_path):
    directory, _ = checkpoints["5.x"]
    impl = tmp_path / "mine"
    shutil.copytree(curriculum.REFERENCE, impl)
    source = (impl / "s21_generation.py").read_text(encoding="utf-8")
    line = "        return logits.argmax(dim=-1)\n"
    assert source.count(line) == 1
    (impl / "s21_generation.py").write_text(source.replace(line, "        return logits.argmax(dim=-1) + None\n"),
                                            encoding="utf-8")
    done = generate(str(directory), "--prompt", PROMPT, "--impl", str(impl))
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("using ")]  # whose stages: one line
    assert len(lines) == 1 and "your s21_generation crashed at mine/s21_generation.py:" in lines[0], done.stderr
    assert "TypeError" in lines[0] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow  # a command per unusable directory
def test_a_directory_that_is_not_a_usable_checkpoint_is_one_line_and_exit_2(checkpoints, tmp_path):
    directory, _ = checkpoints["before-5.0"]
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(directory, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    yarn = tmp_path / "yarn"
    shutil.copytree(directory, yarn)
    config = json.loads((yarn / "config.json").read_text(encoding="utf-8"))
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (yarn / "config.json").write_text(json.dumps(config), encoding="utf-8")
    refused = {  # a copy of a checkpoint, its config.json changed: what the one line must say
        "gemma": ("before-5.0", {"model_type": "gemma"},
                  "config.json: model_type 'gemma' is not supported (llama, mistral, qwen2)"),
        "sliding": ("qwen2", {"use_sliding_window": True}, "use_sliding_window true"),
        "no_biases": ("before-5.0", {"model_type": "qwen2"}, "Missing key(s) in state_dict"),  # Llama's weights
    }
    for name, (source, change, _) in refused.items():
        shutil.copytree(checkpoints[source][0], tmp_path / name)
        config = json.loads((tmp_path / name / "config.json").read_text(encoding="utf-8"))
        (tmp_path / name / "config.json").write_text(json.dumps(dict(config, **change)), encoding="utf-8")
    for path, phrase in ((tmp_path / "missing", "no such directory"), (tmp_path, "no config.json"),
                         (no_tokenizer, "no tokenizer.json"), (yarn, "'yarn'"),
                         *((tmp_path / name, phrase) for name, (_, _, phrase) in refused.items())):
        done = generate(str(path), "--prompt", PROMPT, "--impl", "reference")
        assert done.returncode == 2, (path, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and phrase in lines[0], (path, done.stderr)
        assert done.stdout == "", "nothing is printed before the checkpoint is known to be usable"
    for argv, phrase in (((), "--prompt"), (("--prompt", "x", "--device", "tpu"), "use cpu, cuda or mps"),
                         (("--prompt", "x", "--max-new-tokens", "-1"), "must not be negative")):
        done = generate(str(directory), "--impl", "reference", *argv)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and phrase in done.stderr, done.stderr


def test_an_empty_prompt_starts_from_the_bos_token_or_is_refused(hf, checkpoints):
    """transformers' tokenizer gives [<s>] for "" where its post-processor adds <s>; with no BOS there is nothing to
    start from, and the command says so before loading the model."""
    from tokenizers import Tokenizer

    directory, _ = checkpoints["before-5.0"]
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    model = hf.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([tokenizer.encode("").ids]), max_new_tokens=12, do_sample=False,
                             eos_token_id=0, pad_token_id=0)[0].tolist()
    done = generate(str(directory), "--prompt", "", "--max-new-tokens", "12", "--impl", "reference")
    assert done.returncode == 0, done.stderr
    assert done.stdout == tokenizer.decode(out[:out.index(0)] if 0 in out else out) + "\n", done.stdout
    done = generate(str(checkpoints["5.x"][0]), "--prompt", "", "--impl", "reference")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no BOS token" in done.stderr, done.stderr


@pytest.mark.parametrize("bos, add_bos_token", [(True, None), (False, True), (True, False)])
def test_the_ids_before_a_prompt_are_those_transformers_puts_there(hf, llama, tmp_path, bos, add_bos_token):
    """tokenizer.json's post-processor decides; transformers 5 ignores tokenizer_config.json's add_bos_token
    whenever there is a tokenizer.json (it honours it only for a tokenizer without one)."""
    from grader import generate as command

    write_tokenizer(tmp_path, bos=bos)
    settings = {"bos_token": "<s>", "eos_token": EOS}
    settings.update({} if add_bos_token is None else {"add_bos_token": add_bos_token})
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"")  # read_checkpoint only looks for it
    bpe = loader.load_stage({stage.id: curriculum.REFERENCE for stage in curriculum.load()}, "s13_bpe")
    tokenizer = bpe.ByteBPE.from_tokenizer_json(tmp_path / "tokenizer.json")
    ours = command.read_checkpoint(tmp_path).prefix + tokenizer.encode(PROMPT)
    assert ours == hf.AutoTokenizer.from_pretrained(tmp_path).encode(PROMPT), (bos, add_bos_token)
