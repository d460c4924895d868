"""Run a downloaded Llama-architecture checkpoint with your own stages; the reference fills the gaps.

    python -m grader.generate DIR --prompt "It was a dark and stormy night"

DIR is a local directory holding config.json, tokenizer.json and the weights (model.safetensors,
its shards with model.safetensors.index.json, or pytorch_model.bin). The kata downloads nothing.
Your stages do the work: the tokenizer (s13), RoPE, GQA with its KV cache, RMSNorm, SwiGLU, the
model and its loader (s14-s19) and sampling (s21). A stage that is missing, untouched, does not
import or raises NotImplementedError is taken from reference/, and the command says so.

Options: --max-new-tokens N (default 40), --temperature T (0, the default, is greedy), --top-k K,
--top-p P, --seed S, --device cpu|cuda|mps, --impl exercises|reference|PATH, -v (full traceback).
Exit status: 0 generated, 1 your code failed (one line naming your stage), 2 bad command line or
a directory that is not a usable checkpoint (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from . import curriculum, loader
from .curriculum import UsageError
from .train import Progress, make_plan, run_plan

PROG = "python -m grader.generate"
STAGES = ("s13_bpe", "s21_generation")  # the stages called here; s21's dependencies come along
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = curriculum.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a local checkpoint directory (config.json, tokenizer.json, weights)")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="at most this many new tokens (default 40)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sample")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample among the most likely tokens up to mass p")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    parser.add_argument("--impl", default="exercises", help="whose stages: 'exercises' (default), 'reference', or a directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the full traceback when your code fails")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0 or args.temperature < 0:
        raise UsageError("--max-new-tokens and --temperature must not be negative")
    args.impl_path = curriculum.resolve_impl(args.impl, curriculum.load())
    args.directory = args.directory.expanduser()
    import torch

    kind = args.device.split(":")[0]
    usable = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not usable.get(kind, False):
        raise UsageError(f"--device {args.device}: {'not available here' if kind in usable else 'use cpu, cuda or mps'}")
    return args


def checkpoint_problem(directory: Path) -> str | None:
    """Why ``directory`` is not a checkpoint this command can run, or None."""
    if not directory.is_dir():
        return "no such directory"
    missing = [name for name in ("config.json", "tokenizer.json") if not (directory / name).is_file()]
    if not any((directory / name).is_file() for name in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if missing:
        return f"not a checkpoint directory: no {', no '.join(missing)}"
    try:
        json.loads((directory / "config.json").read_text(encoding="utf-8"))
        json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"unreadable config.json or tokenizer.json ({error})"
    return None


def special_ids(directory: Path) -> tuple[list[int], set[int]]:
    """The ids put before the prompt (the tokenizer's post-processor template) and the end-of-sequence ids."""
    post = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")).get("post_processor") or {}
    processors = post.get("processors", [post])  # a Sequence holds a list of them
    prefix = []
    for processor in processors:
        for piece in processor.get("single", [])[:1] if processor.get("type") == "TemplateProcessing" else []:
            if "SpecialToken" in piece:
                prefix = list(processor["special_tokens"][piece["SpecialToken"]["id"]]["ids"])
    eos = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("eos_token_id")
    return prefix, set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def generate(modules, args: argparse.Namespace, out, plan) -> int:
    """Load, then print the prompt and each new piece of text as soon as it decodes."""
    import torch

    llama, bpe, sampling = modules("s19_llama"), modules("s13_bpe"), modules("s21_generation")
    try:
        tokenizer = bpe.ByteBPE.from_tokenizer_json(args.directory / "tokenizer.json")
        model = llama.load_pretrained(args.directory).to(args.device)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if in_learner_code(error, plan):
            raise
        message = " ".join(str(error).split())[:300]  # one line, even for load_state_dict's list of keys
        raise UsageError(f"{args.directory}: cannot run this checkpoint: {message}") from error
    prefix, eos = special_ids(args.directory)
    tokens = torch.tensor([prefix + tokenizer.encode(args.prompt, allowed_special=True)], dtype=torch.long, device=args.device)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    caches, new_ids, shown = model.new_caches(), [], 0  # shown: characters printed so far
    with torch.no_grad():
        for _ in range(min(args.max_new_tokens, model.config.max_seq_len - tokens.size(1))):  # RoPE tables end there
            logits, _ = model(tokens, caches)  # the prompt first, then one token at a time
            next_id = sampling.sample_next(logits[:, -1], args.temperature, args.top_k, args.top_p, generator)  # (1,)
            if int(next_id) in eos:
                break
            new_ids.append(int(next_id))
            text = args.prompt + tokenizer.decode(new_ids)
            if not text.endswith("\ufffd"):  # a character whose bytes are not all there yet waits
                out.write(text[shown:])
                out.flush()
                shown = len(text)
            tokens = next_id[:, None]  # (1, 1)
    out.write((args.prompt + tokenizer.decode(new_ids))[shown:] + "\n")
    return 0


def in_learner_code(error: BaseException, plan) -> bool:
    """Whether the traceback passes through one of the learner's stage files."""
    mine = {(plan.impl / f"{stage_id}.py").resolve() for stage_id in plan.yours()}
    return any(Path(frame.filename).resolve() in mine for frame in traceback.extract_tb(error.__traceback__))


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    problem = checkpoint_problem(args.directory)
    if problem:
        raise UsageError(f"{args.directory}: {problem}")
    stages = curriculum.load()
    wanted = {*STAGES, *next(s for s in stages if s.id == "s21_generation").depends}
    plan = make_plan(args.impl_path, [stage.id for stage in stages if stage.id in wanted], stages)
    for line in plan.describe():
        print(line, file=sys.stderr)
    code, _ = run_plan(plan, lambda modules, _: generate(modules, args, out, plan), lambda: Progress(False),
                       args.verbose, prog=PROG, out=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    return curriculum.run_main(PROG, lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
