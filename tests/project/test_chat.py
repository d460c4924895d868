"""`python -m grader.chat` run as a person would, against Hugging Face transformers.

A tiny random LlamaForCausalLM written by save_pretrained, a byte-level BPE trained by `tokenizers`
with ChatML's added tokens, and a ChatML chat template in tokenizer_config.json (as SmolLM2-Instruct
and Qwen2.5 ship it). transformers' tokenizer, loaded from the directory, is the oracle of the
rendered prompt (apply_chat_template), and its greedy generate, given each turn's whole rendered
conversation, the oracle of every reply: the command, which keeps its KV cache across turns and feeds
only what the cache lacks, must print the same replies. The model is nudged so that its first reply
ends at <|im_end|> (see `checkpoint`).

transformers and tokenizers are test-only dependencies (requirements-test.txt): these tests FAIL,
never skip, where they are missing.
"""

from __future__ import annotations

import json

import pytest
import torch

from grader import chat, curriculum, generate, loader
from families import BOOK, CHATML, greedy, rendered, run_chat
from grader_kata import require_oracle

ROOT = curriculum.ROOT
# the same, with a header that changes every turn: the rendered text before the cached tokens differs
COUNTING = "{{ '<|im_start|>system\nturn ' ~ (messages|length + 1) // 2 ~ '<|im_end|>\n' }}" + CHATML
TURNS = ("Hello there", "What is the time?")
REPLY_TOKENS = 12  # --max-new-tokens: the second reply may run to it


@pytest.fixture(scope="module")
def hf():
    return require_oracle("tokenizers", "transformers")


def write_checkpoint(hf, directory, template: str) -> None:
    """A ChatML byte-level BPE (<|im_end|> is id 2) and a random LlamaForCausalLM, nudged to end its first reply."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([BOOK[:30_000]], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(directory / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
                "chat_template": template}
    (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    torch.manual_seed(0)
    config = hf.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                            tie_word_embeddings=False, bos_token_id=None, eos_token_id=0, pad_token_id=None)
    model = hf.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # weights far from their init, as in test_checkpoint.py
        for parameter in model.parameters():
            parameter.copy_(1.0 + 0.3 * torch.randn_like(parameter) if parameter.dim() == 1
                            else 0.3 * torch.randn_like(parameter))
        # the first reply: the longest opening (2..8 ids) that tokenizes back to itself, then <|im_end|>:
        # <|im_end|>'s output row becomes a copy, slightly larger, of the id that would come next
        oracle = hf.AutoTokenizer.from_pretrained(directory)
        prompt = rendered(oracle, [{"role": "user", "content": TURNS[0]}])
        out = greedy(model, prompt, 12)
        k = max(k for k in range(2, 9) if out[k] not in out[:k] and oracle.encode(
            oracle.decode(out[:k]), add_special_tokens=False) == out[:k])
        logit = model(torch.tensor([prompt + out[:k]])).logits[0, -1, out[k]]
        model.lm_head.weight[2] = model.lm_head.weight[out[k]] * (1.05 if logit > 0 else 0.95)
    model.save_pretrained(directory)


def expected_chat(hf, directory) -> tuple[list[str], list[str], list[list[int]]]:
    """transformers' replies (text), the -v line of each turn, and the rendered prompts, for TURNS."""
    oracle = hf.AutoTokenizer.from_pretrained(directory)
    model = hf.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    messages, cached, replies, notes, prompts = [], [], [], [], []
    for turn, text in enumerate(TURNS, 1):
        messages.append({"role": "user", "content": text})
        prompt = rendered(oracle, messages)
        reply = greedy(model, prompt, REPLY_TOKENS)
        reused = next((n for n in range(min(len(cached), len(prompt) - 1)) if cached[n] != prompt[n]),
                      min(len(cached), len(prompt) - 1))
        notes.append(f"turn {turn}: {len(prompt) - reused} new tokens, {reused} reused from the cache")
        cached = (prompt + reply)[:len(prompt) + len(reply) - (len(reply) == REPLY_TOKENS)]  # the last id is not fed
        replies.append(oracle.decode(reply))
        messages.append({"role": "assistant", "content": replies[-1]})
        prompts.append(prompt)
    return replies, notes, prompts


@pytest.fixture(scope="module")
def checkpoints(hf, tmp_path_factory):
    """name -> (directory, transformers' replies, -v lines, rendered prompts), for CHATML and COUNTING."""
    made = {}
    for name, template in (("chatml", CHATML), ("counting", COUNTING)):
        directory = tmp_path_factory.mktemp(name)
        write_checkpoint(hf, directory, template)
        made[name] = (directory, *expected_chat(hf, directory))
    first = greedy(hf.LlamaForCausalLM.from_pretrained(made["chatml"][0]).eval(), made["chatml"][3][0], REPLY_TOKENS)
    assert 2 <= len(first) < REPLY_TOKENS, "the first reply must end at <|im_end|>, after a few ids"
    return made


def test_the_rendered_prompt_is_what_transformers_renders(hf, checkpoints):
    bpe = loader.load_stage({stage.id: curriculum.REFERENCE for stage in curriculum.load()}, "s13_bpe")
    for name, (directory, replies, _, prompts) in checkpoints.items():
        checkpoint = generate.read_checkpoint(directory)
        template = chat.read_template(checkpoint)
        tokenizer = bpe.ByteBPE.from_tokenizer_json(directory / "tokenizer.json")
        conversation = [{"role": "user", "content": TURNS[0]}, {"role": "assistant", "content": replies[0]},
                        {"role": "user", "content": TURNS[1]}]
        for turn, expected in enumerate(prompts):
            text = chat.render(template, checkpoint, conversation[:2 * turn + 1])
            ours = tokenizer.encode(text, allowed_special=True)
            assert ours == expected, f"{name}, turn {turn + 1}: ours {ours}\ntransformers' {expected}"
        assert chat.end_of_turn(checkpoint) == {0, 2}, "config.json's eos (0) and the template's <|im_end|> (2)"


@pytest.mark.parametrize("name", ["chatml", "counting"])
def test_a_two_turn_chat_replies_as_transformers_and_feeds_only_what_the_cache_lacks(checkpoints, stub_tree, name):
    """chatml: turn 2 reuses every cached id (its text starts with turn 1's); counting: the header changed, so
    the caches are cut back to the ids before it. counting runs the untouched stubs: the reference stands in."""
    directory, replies, notes, prompts = checkpoints[name]
    impl = "reference" if name == "chatml" else str(stub_tree)
    done = run_chat(str(directory), "--max-new-tokens", str(REPLY_TOKENS), "--impl", impl, "-v",
                    stdin=f"{TURNS[0]}\n\n{TURNS[1]}\n")  # an empty line is skipped
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(reply + "\n" for reply in replies), f"ours {done.stdout!r}\ntransformers' {replies}"
    assert [line for line in done.stderr.splitlines() if not line.startswith("using ")] == notes, done.stderr
    assert ("using reference/s21_generation.py: yours is not started" in done.stderr) == (name == "counting")
    reused = int(notes[1].split(", ")[1].split()[0])
    if name == "chatml":
        assert reused > len(prompts[0]), "turn 2 reuses turn 1's prompt and reply from the cache"
    else:
        assert reused < len(prompts[0]) - 5, "the header changed: the caches are cut back before it"


def test_a_missing_or_broken_template_is_one_line_and_exit_2(checkpoints, tmp_path):
    directory = checkpoints["chatml"][0]
    settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    cases = {"{% for m in messages %}": "does not compile", "{{ raise_exception('roles must alternate') }}":
             "roles must alternate", None: "no chat template"}
    for index, (template, phrase) in enumerate(cases.items()):
        broken = tmp_path / str(index)
        broken.mkdir()
        for path in directory.iterdir():
            (broken / path.name).symlink_to(path)
        (broken / "tokenizer_config.json").unlink()
        settings["chat_template"] = template
        (broken / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
        done = run_chat(str(broken), "--impl", "reference", stdin="Hello\n")
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and phrase in done.stderr, done.stderr
        assert done.stdout == "", "nothing is printed before the template is known to work"


@pytest.mark.parametrize("command", [generate, chat])
@pytest.mark.parametrize("option, phrase", [
    (("--top-k", "0"), "--top-k must be at least 1"), (("--top-p", "1.5"), "--top-p must be in (0, 1]"),
    (("--top-p", "0"), "--top-p must be in (0, 1]"), (("--temperature", "-1"), "--temperature must be 0"),
    (("--temperature", "nan"), "--temperature must be 0"), (("--max-new-tokens", "-1"), "must not be negative"),
    (("--seed", "-3"), "--seed must be in"), (("--device", "tpu"), "use cpu, cuda or mps"),
])
def test_bad_options_are_one_line_and_exit_2_before_anything_loads(command, option, phrase, tmp_path, capsys):
    """The directory does not exist: the option is refused before it is even looked at."""
    status = command.main([str(tmp_path / "missing"), *option, *(["--prompt", "x"] if command is generate else [])])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1 and phrase in err, err


def test_the_text_of_new_ids_keeps_the_space_a_sentencepiece_decoder_strips_and_waits_for_whole_characters():
    class Pieces:  # a SentencePiece-like decoder: "▁" is a space, and the text's first space is dropped
        pieces = {0: "▁It", 1: "▁was", 2: "▁a", 3: "\xe2", 4: "\x80\x94", 5: "▁night"}  # 3, 4: an em dash's bytes

        def decode(self, ids):
            raw = "".join(self.pieces[i] for i in ids).replace("▁", " ").encode("latin-1")
            return raw.decode("utf-8", errors="replace").removeprefix(" ")

    tokenizer, prompt, new = Pieces(), [0, 1], [2, 3, 4, 5, 2]
    stream = generate.TextStream(tokenizer, prompt)
    pieces = [stream.push(token_id) for token_id in new] + [stream.push()]
    assert pieces == [" a", "", "—", " night", " a", ""], pieces
    whole = tokenizer.decode(prompt + new)
    assert "".join(pieces) == whole[len(tokenizer.decode(prompt)):], "the pieces add up to the text after the prompt"
