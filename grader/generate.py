"""Run a downloaded Llama-architecture checkpoint with your own stages; the reference fills the gaps.

    python -m grader.generate DIR --prompt "It was a dark and stormy night"

DIR holds config.json, tokenizer.json and the weights (model.safetensors, shards with their index, or
pytorch_model.bin); nothing is downloaded. Your stages s13-s19 and s21 do the work, the reference standing in
(named on stderr) as in grader/train.py. Exit 0 generated, 1 your code failed (one line), 2 bad usage or DIR.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path

import torch

from .curriculum import UsageError, run_main
from .train import make_plan, parse, run_plan

PROG = "python -m grader.generate"
STAGES = ("s13_bpe", "s21_generation")  # the stages called here; s21's dependencies come along
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read_checkpoint(directory: Path) -> tuple[list[int], set[int]]:
    """(ids before the prompt from the tokenizer's template, end-of-sequence ids); UsageError if it cannot run."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    missing = [name for name in ("config.json", "tokenizer.json") if not (directory / name).is_file()]
    missing += [] if any((directory / name).is_file() for name in WEIGHTS) else [" or ".join(WEIGHTS)]
    if missing:
        raise UsageError(f"{directory}: not a checkpoint directory: no {', no '.join(missing)}")
    try:
        config, tokenizer = [json.loads((directory / name).read_text(encoding="utf-8"))
                             for name in ("config.json", "tokenizer.json")]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{directory}: unreadable config.json or tokenizer.json ({error})") from None
    post, prefix = tokenizer.get("post_processor") or {}, []
    for processor in post.get("processors", [post]):  # a Sequence holds a list of them
        for piece in processor.get("single", [])[:1] if processor.get("type") == "TemplateProcessing" else []:
            if "SpecialToken" in piece:
                prefix = list(processor["special_tokens"][piece["SpecialToken"]["id"]]["ids"])
    eos = config.get("eos_token_id")
    return prefix, set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def generate(modules, args, out, plan) -> int:
    """Load, then print the prompt and each new piece of text as soon as it decodes."""
    llama, bpe, sampling = modules("s19_llama"), modules("s13_bpe"), modules("s21_generation")
    try:
        tokenizer = bpe.ByteBPE.from_tokenizer_json(args.directory / "tokenizer.json")
        model = llama.load_pretrained(args.directory).to(args.device)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if plan.crashed_in([(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)]):
            raise  # the learner's loader failed: their crash, not a bad checkpoint
        message = " ".join(str(error).split())[:300]  # one line, even for load_state_dict's list of keys
        raise UsageError(f"{args.directory}: cannot run this checkpoint: {message}") from error
    tokens = args.prefix + tokenizer.encode(args.prompt, allowed_special=True)
    tokens = torch.tensor([tokens], dtype=torch.long, device=args.device)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    caches, new_ids, shown = model.new_caches(), [], 0  # shown: characters printed so far
    with torch.inference_mode():  # no autograd bookkeeping at all: about 2% faster a token than no_grad
        for _ in range(min(args.max_new_tokens, model.config.max_seq_len - tokens.size(1))):  # RoPE tables end there
            logits, _ = model(tokens, caches)  # the prompt first, then one token at a time
            next_id = sampling.sample_next(logits[:, -1], args.temperature, args.top_k, args.top_p, generator)  # (1,)
            if int(next_id) in args.eos:
                break
            new_ids.append(int(next_id))
            text = args.prompt + tokenizer.decode(new_ids)
            if not text.endswith("\ufffd"):  # a character whose bytes are not all there yet waits
                print(text[shown:], end="", file=out, flush=True)
                shown = len(text)
            tokens = next_id[:, None]  # (1, 1)
    print((args.prompt + tokenizer.decode(new_ids))[shown:], file=out)


def run(argv: list[str], out=sys.stdout) -> int:
    args = parse(PROG, __doc__, argv, {
        "directory": {"type": Path, "help": "a checkpoint directory (config.json, tokenizer.json, weights)"},
        "--prompt": {"required": True, "help": "the text to continue"},
        "--max-new-tokens": {"type": int, "default": 40, "help": "at most this many new tokens (default 40)"},
        "--temperature": {"type": float, "default": 0.0, "help": "0 (default): greedy; > 0: sample"},
        "--top-k": {"type": int, "help": "sample among the k most likely tokens"},
        "--top-p": {"type": float, "help": "sample among the most likely tokens up to mass p"},
        "--device": {"default": "cpu", "help": "cpu (default), cuda or mps"},
    })
    if args.max_new_tokens < 0 or args.temperature < 0:
        raise UsageError("--max-new-tokens and --temperature must not be negative")
    usable = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not usable.get(args.device.split(":")[0]):
        known = args.device.split(":")[0] in usable
        raise UsageError(f"--device {args.device}: {'not available here' if known else 'use cpu, cuda or mps'}")
    args.directory = args.directory.expanduser()
    args.prefix, args.eos = read_checkpoint(args.directory)
    plan = make_plan(args.impl_path, STAGES)
    return run_plan(plan, lambda modules, _: generate(modules, args, out, plan), args.verbose, PROG, sys.stderr)[0]


main = functools.partial(run_main, PROG, run)  # main(argv=None) -> exit status


if __name__ == "__main__":
    raise SystemExit(main())
