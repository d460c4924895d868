"""Run a downloaded Llama-architecture checkpoint with your own stages; the reference fills the gaps.

    python -m grader.generate DIR --prompt "It was a dark and stormy night"

DIR holds config.json, tokenizer.json and the weights (model.safetensors, shards with their index, or
pytorch_model.bin); nothing is downloaded. Your stages s13-s19 and s21 do the work, the reference standing in
(named on stderr) as in grader/harness.py. Exit 0 generated, 1 your code failed (one line), 2 bad usage or DIR.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from .options import UsageError, check_device, run_main
from .loader import for_running
from .harness import parse, run_plan

PROG = "python -m grader.generate"
STAGES = ("s13_bpe", "s21_generation")  # the stages called here; s21's dependencies come along
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
OPTIONS = {  # generate's and chat's sampling options, as add_argument's keywords
    "--max-new-tokens": {"type": int, "default": 40, "help": "at most this many new tokens (default 40)"},
    "--temperature": {"type": float, "default": 0.0, "help": "0 (default): greedy; > 0: sample"},
    "--top-k": {"type": int, "help": "sample among the k most likely tokens (k >= 1)"},
    "--top-p": {"type": float, "help": "sample among the most likely tokens up to mass p, 0 < p <= 1"},
    "--device": {"default": "cpu", "help": "cpu (default), cuda or mps"},
}


@dataclass
class Checkpoint:
    """What a checkpoint directory says about running it, read before any model is loaded."""

    directory: Path
    prefix: list[int]  # the ids tokenizer.json's post-processor puts before a text (BOS), as transformers 5 does
    eos: set[int]  # config.json's eos_token_id and generation_config.json's: generation stops there
    added: dict[str, int]  # tokenizer.json's added tokens: "<|im_end|>" -> its id
    settings: dict  # tokenizer_config.json, {} when there is none (bos_token, eos_token, chat_template)
    bos: list[int]  # config.json's bos_token_id as a list ([] when none): where transformers starts without a prompt


def read_json(path: Path, needed: bool = True) -> dict:
    """A JSON object from ``path`` ({} for a missing file that is not needed); UsageError if unreadable."""
    if not needed and not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path.parent}: unreadable {path.name} ({error})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path.parent}: {path.name} holds a {type(data).__name__}, not an object")
    return data


def ids_of(value) -> list[int]:
    """An eos_token_id or bos_token_id of config.json: an int, a list of them, or None."""
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]


def read_checkpoint(directory: Path) -> Checkpoint:
    """Read the directory's JSON files; UsageError (one line) if it cannot run.

    The ids before a prompt come from tokenizer.json's TemplateProcessing (Llama 2's and 3's "<s>" or
    "<|begin_of_text|>"; Qwen2.5 has none): transformers 5 ignores tokenizer_config.json's add_bos_token
    whenever there is a tokenizer.json, and so does this.
    """
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    missing = [name for name in ("config.json", "tokenizer.json") if not (directory / name).is_file()]
    missing += [] if any((directory / name).is_file() for name in WEIGHTS) else [" or ".join(WEIGHTS)]
    if missing:
        raise UsageError(f"{directory}: not a checkpoint directory: no {', no '.join(missing)}")
    config, tokenizer = read_json(directory / "config.json"), read_json(directory / "tokenizer.json")
    post, prefix = tokenizer.get("post_processor") or {}, []
    for processor in post.get("processors", [post]):  # a Sequence holds a list of them
        for piece in processor.get("single", [])[:1] if processor.get("type") == "TemplateProcessing" else []:
            if "SpecialToken" in piece:
                prefix = list(processor["special_tokens"][piece["SpecialToken"]["id"]]["ids"])
    generation = read_json(directory / "generation_config.json", needed=False)
    added = {token["content"]: token["id"] for token in tokenizer.get("added_tokens") or []}
    eos = set(ids_of(config.get("eos_token_id")) + ids_of(generation.get("eos_token_id")))
    return Checkpoint(directory, prefix, eos, added, read_json(directory / "tokenizer_config.json", needed=False),
                      (ids_of(config.get("bos_token_id")) or ids_of(generation.get("bos_token_id")))[:1])


def check_options(args) -> None:
    """UsageError (one line) for a sampling option out of range or a device not here: checked before anything loads."""
    checks = [  # (wrong, what to say)
        (args.max_new_tokens < 0, f"--max-new-tokens must not be negative, got {args.max_new_tokens}"),
        (not 0 <= args.temperature < math.inf, f"--temperature must be 0 (greedy) or positive, got {args.temperature}"),
        (args.top_k is not None and args.top_k < 1, f"--top-k must be at least 1, got {args.top_k}"),
        (args.top_p is not None and not 0 < args.top_p <= 1, f"--top-p must be in (0, 1], got {args.top_p}"),
        (not 0 <= args.seed < 2**64, f"--seed must be in [0, 2**64), got {args.seed}"),
    ]
    for wrong, message in checks:
        if wrong:
            raise UsageError(message)
    check_device(args.device)


def load(modules, directory: Path, device: str, plan):
    """(tokenizer, model) by your stages 13 and 19; UsageError for a checkpoint they cannot read, a crash re-raised."""
    llama, bpe = modules("s19_llama"), modules("s13_bpe")
    try:
        tokenizer = bpe.ByteBPE.from_tokenizer_json(directory / "tokenizer.json")
        return tokenizer, llama.load_pretrained(directory).to(device)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if plan.crashed_in([(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)]):
            raise  # the learner's loader failed: their crash, not a bad checkpoint
        message = " ".join(str(error).split())[:300]  # one line, even for load_state_dict's list of keys
        raise UsageError(f"{directory}: cannot run this checkpoint: {message}") from error


class TextStream:
    """The text that new ids add after some context ids, piece by piece, right for byte-level and SentencePiece.

    Decoding the new ids alone would lose what depends on their left: SentencePiece drops the space
    of a text's first word, a byte-level character may start in an earlier id. So each piece is
    decode(window + new)[len(decode(window)):], the window being the ids since the last piece was
    shown (a few, whatever the length of the text); a piece ending in U+FFFD (a character whose
    bytes are not all there yet) waits for the next id.
    """

    def __init__(self, tokenizer, context: list[int]) -> None:
        self.decode, self.ids = tokenizer.decode, list(context[-4:])  # a little context is enough
        self.shown = len(self.ids)  # ids[:shown] are shown (or context); the rest wait for a whole character

    def push(self, token_id: int | None = None) -> str:
        """The new text once ``token_id`` is added; with None, whatever is still held back."""
        self.ids += [] if token_id is None else [token_id]
        before, text = self.decode(self.ids[: self.shown]), self.decode(self.ids)
        if token_id is not None and (text.endswith("\ufffd") or len(text) <= len(before)):
            return ""
        self.ids, self.shown = self.ids[self.shown :], len(self.ids) - self.shown
        return text[len(before) :]


def sample(model, sampling, feed: list[int], caches, args, eos: set[int], text: TextStream, generator,
           out) -> list[int]:
    """Feed ``feed`` after what ``caches`` hold; the up to --max-new-tokens ids sampled next, their text printed."""
    tokens, new_ids = torch.tensor([feed], dtype=torch.long, device=args.device), []
    room = model.config.max_seq_len - caches[0].length - len(feed) + 1  # the RoPE tables end at max_seq_len
    with torch.inference_mode():  # no autograd bookkeeping at all: about 2% faster a token than no_grad
        for _ in range(min(args.max_new_tokens, room)):
            logits, _ = model(tokens, caches)  # what the caches lack first, then one token at a time
            next_id = sampling.sample_next(logits[:, -1], args.temperature, args.top_k, args.top_p, generator)  # (1,)
            if int(next_id) in eos:
                break
            new_ids.append(int(next_id))
            print(text.push(int(next_id)), end="", file=out, flush=True)
            tokens = next_id[:, None]  # (1, 1)
    print(text.push(), file=out)
    return new_ids


def generate(modules, args, checkpoint: Checkpoint, out, plan) -> None:
    """Load, then print the prompt as typed and each new piece of text as soon as it decodes."""
    tokenizer, model = load(modules, checkpoint.directory, args.device, plan)
    prompt = checkpoint.prefix + tokenizer.encode(args.prompt, allowed_special=True) or checkpoint.bos
    print(args.prompt, end="", file=out, flush=True)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    sample(model, modules("s21_generation"), prompt, model.new_caches(), args, checkpoint.eos,
           TextStream(tokenizer, prompt), generator, out)


def run(argv: list[str], out=sys.stdout) -> int:
    args = parse(PROG, __doc__, argv, {
        "directory": {"type": Path, "help": "a checkpoint directory (config.json, tokenizer.json, weights)"},
        "--prompt": {"required": True, "help": "the text to continue"}, **OPTIONS,
    })
    check_options(args)
    checkpoint = read_checkpoint(args.directory.expanduser())
    if not args.prompt and not (checkpoint.prefix or checkpoint.bos):
        raise UsageError(f"--prompt is empty and {args.directory} has no BOS token to start from: give a prompt")
    plan = for_running(args.impl_path, STAGES)
    return run_plan(plan, lambda modules, _: generate(modules, args, checkpoint, out, plan), args.verbose, PROG,
                    sys.stderr)[0]


main = functools.partial(run_main, PROG, run)  # main(argv=None) -> exit status


if __name__ == "__main__":
    raise SystemExit(main())
