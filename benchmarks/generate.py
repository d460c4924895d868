"""Row 8: `python -m grader.generate` against transformers' `generate`, on the same checkpoint.

The checkpoint has SmolLM2-135M's exact shapes (30 layers, D 576, 9 heads, 3 KV heads, F 1536,
V 49,152, tied embeddings, rope_theta 100000) with RANDOM weights: a LlamaForCausalLM seeded and
written by save_pretrained in bfloat16, as the real one is published, into a temporary folder, next
to a tokenizer.json of 49,152 ids trained by `tokenizers` (byte-level BPE, GPT-2's pre-tokenizer) on
the book and three letter-shifted copies of it (the book alone stops at about 14,000 ids), so that
every id the model can pick decodes. Speed does not depend on the weights; the config has no
end-of-sequence id, so neither side stops early.

Each side runs in a child process of its own (batch 1, float32, CPU, greedy, the same torch thread
count as the benchmark), alternating kata, transformers, kata, ... and quoting medians:

    kata          python -m grader.generate DIR --impl reference --prompt TEXT (run in the child
                  through its run(); the model's forward is wrapped to note when each token's
                  logits are ready)
    transformers  AutoModelForCausalLM.from_pretrained(DIR, dtype=float32), then generate with a
                  streamer that notes when each new token is handed over (its default attention,
                  sdpa, and its default cache)

Time to first token: from the start of generation (the kata: its caches created, after loading;
transformers: the call to generate) to the first new token (the prompt's forward pass). Decode
tokens/s: (N - 1) / the time from the first new token to the last. Peak memory: the child's max RSS
(VmHWM, the high-water mark of its resident memory), imports and loading included, as a person running either sees it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bpe import shifted
from .common import ROOT, Row, families, median, not_available

TITLE = "Generation: python -m grader.generate vs transformers' generate (SmolLM2-135M shapes, random weights)"
INSTALL = "pip install -r requirements-test.txt"
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, intermediate_size=1536, tie_word_embeddings=True, rms_norm_eps=1e-5,
                    max_position_embeddings=8192, rope_theta=100000.0)
TINY = dict(SMOLLM2_135M, vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256)


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """A byte-level BPE of exactly vocab_size ids (one special token, <|endoftext|>, id 0), trained by `tokenizers`."""
    import tokenizers

    built, book = families(), (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")
    tokenizer = built.train_hf(tokenizers, built.pre_tokenizer_of(tokenizers, "gpt2"), vocab_size=vocab_size,
                               special_tokens=["<|endoftext|>"], text="".join(shifted(book, k) for k in range(4)))
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"the tokenizer has {tokenizer.get_vocab_size()} ids, not {vocab_size}")
    tokenizer.save(str(directory / "tokenizer.json"))


def write_checkpoint(directory: Path, shapes: dict, dtype: str = "bfloat16") -> None:
    """A seeded random LlamaForCausalLM of these shapes, saved with save_pretrained, and its tokenizer.json."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = dict(shapes)
    rope = {"rope_type": "default", "rope_theta": shapes.pop("rope_theta")}
    config = LlamaConfig(**shapes, rope_parameters=rope, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(directory)
    write_tokenizer(directory, shapes["vocab_size"])


def prompt_of(directory: Path, n_tokens: int) -> tuple[str, list[int]]:
    """The book's opening, cut where `tokenizers` makes it exactly n_tokens ids: (text, ids)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    book = (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")
    start = book.index("It was on a dreary night of November")
    words = book[start:start + 2000].split(" ")
    for n_words in range(1, len(words)):
        text = " ".join(words[:n_words])
        ids = tokenizer.encode(text).ids
        if len(ids) >= n_tokens:
            break
    while len(ids) > n_tokens:  # a word of several tokens overshot: drop characters until it fits
        text = text[:-1]
        ids = tokenizer.encode(text).ids
    return text, ids


# --- the children: one side each, printing one JSON line --------------------------------------


def child_kata(directory: str, prompt: str, new_tokens: int) -> dict:
    """python -m grader.generate in this process, with the model's forward timed."""
    from grader import generate, loader

    marks: dict[str, list[float]] = {"start": [], "logits": []}
    load_stage = loader.load_stage

    def timed_load_stage(sources, stage_id):
        module = load_stage(sources, stage_id)
        if stage_id == "s19_llama" and not hasattr(module.Llama, "_benchmark_timed"):
            forward, new_caches = module.Llama.forward, module.Llama.new_caches

            def timed_forward(self, *args, **kwargs):
                result = forward(self, *args, **kwargs)
                marks["logits"].append(time.perf_counter())
                return result

            def timed_new_caches(self):
                marks["start"].append(time.perf_counter())
                return new_caches(self)

            module.Llama.forward, module.Llama.new_caches = timed_forward, timed_new_caches
            module.Llama._benchmark_timed = True
        return module

    loader.load_stage = timed_load_stage
    out = io.StringIO()
    code = generate.run([directory, "--impl", "reference", "--prompt", prompt, "--max-new-tokens", str(new_tokens)],
                        out=out)
    if code != 0:
        raise RuntimeError(f"python -m grader.generate exited {code}")
    text = out.getvalue()
    return {"start": marks["start"][0], "tokens": marks["logits"], "text": text[len(prompt):-1]}  # print adds "\n"


def child_transformers(directory: str, prompt_ids: list[int], new_tokens: int) -> dict:
    """transformers' from_pretrained and generate, with a streamer noting when each new token comes."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []

        def put(self, value):  # the prompt first, then each new token
            self.times.append(time.perf_counter())

        def end(self):
            pass

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    clock = Clock()
    prompt = torch.tensor([prompt_ids])
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, streamer=clock)
    new = out[0, len(prompt_ids):].tolist()
    text = Tokenizer.from_file(str(Path(directory) / "tokenizer.json")).decode(new)
    return {"start": start, "tokens": clock.times[1:], "text": text}


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (getrusage's ru_maxrss
    keeps the parent's high-water mark from before the fork, which would put a floor under the child's)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description="one side of row 8, in a child")
    parser.add_argument("side", choices=("kata", "transformers"))
    parser.add_argument("directory")
    parser.add_argument("prompt_json", help='{"text": ..., "ids": [...]}')
    parser.add_argument("new_tokens", type=int)
    parser.add_argument("threads", type=int)
    args = parser.parse_args(argv)
    if not (Path(args.directory) / "config.json").is_file():
        parser.error(f"{args.directory}: not a checkpoint directory (python -m benchmarks --only generate makes one)")
    import torch

    torch.set_num_threads(args.threads)
    prompt = json.loads(args.prompt_json)
    began = time.perf_counter()
    if args.side == "kata":
        result = child_kata(args.directory, prompt["text"], args.new_tokens)
    else:
        result = child_transformers(args.directory, prompt["ids"], args.new_tokens)
    tokens = result.pop("tokens")
    result |= {"load_s": result["start"] - began, "ttft_s": tokens[0] - result["start"], "n_tokens": len(tokens),
               "decode_tokens_per_s": (len(tokens) - 1) / (tokens[-1] - tokens[0]) if len(tokens) > 1 else None,
               "max_rss_mib": peak_rss_mib()}
    print(json.dumps(result))


# --- the row ---------------------------------------------------------------------------------


def run_side(side: str, directory: Path, prompt: dict, new_tokens: int, threads: int) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.generate", side, str(directory), json.dumps(prompt),
                           str(new_tokens), str(threads)], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} child exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> Row:
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        return not_available("generate", TITLE, f"needs transformers and tokenizers ({error.name} missing: {INSTALL})")
    import torch

    threads = torch.get_num_threads()
    shapes, prompt_len, new_tokens, repeats = (TINY, 8, 8, 1) if quick else (SMOLLM2_135M, 32, 128, 5)
    row = Row("generate", TITLE)
    with tempfile.TemporaryDirectory(prefix="kata-bench-") as folder:
        directory = Path(folder)
        write_checkpoint(directory, shapes)
        text, ids = prompt_of(directory, prompt_len)
        prompt = {"text": text, "ids": ids}
        runs: dict[str, list[dict]] = {"kata": [], "transformers": []}
        for _ in range(repeats):
            for side in runs:
                runs[side].append(run_side(side, directory, prompt, new_tokens, threads))
    figures = {side: {key: median([r[key] for r in results]) for key in
                      ("decode_tokens_per_s", "ttft_s", "max_rss_mib", "load_s")} for side, results in runs.items()}
    pairs = list(zip(runs["kata"], runs["transformers"]))

    def paired(key: str) -> float:
        """The median over pairs of kata / transformers: steadier than a ratio of medians when the machine drifts."""
        return median([ours[key] / theirs[key] for ours, theirs in pairs])

    same = sum(ours["text"] == theirs["text"] for ours, theirs in pairs)
    how = (f"median of {repeats} child process(es) per side, alternating; batch 1, float32, {threads} torch "
           f"thread(s), greedy, {new_tokens} new tokens after a {len(ids)}-token prompt")
    shape = (f"{shapes['num_hidden_layers']} layers, D {shapes['hidden_size']}, V {shapes['vocab_size']:,}, "
             f"bfloat16 on disk")
    for side, name in (("kata", "grader.generate"), ("transformers", "transformers")):
        row.add(f"{name}: decode tokens/s", round(figures[side]["decode_tokens_per_s"], 1), "tokens/s", note=how)
        row.add(f"{name}: time to first token", round(figures[side]["ttft_s"], 3), "s",
                note=f"loading took {figures[side]['load_s']:.1f} s before it (not counted)")
        row.add(f"{name}: peak memory (max RSS)", round(figures[side]["max_rss_mib"]), "MiB",
                note="the whole process: imports, loading and generation")
    speed, memory = paired("decode_tokens_per_s"), paired("max_rss_mib")
    row.add("decode tokens/s: grader.generate / transformers", round(speed, 2), "x", "" if quick else ">= 1.0",
            met=None if quick else speed >= 1.0,
            note=f"median of the {repeats} pairs' ratios; {shape}; the same text from both in {same} of {repeats}")
    row.add("time to first token: grader.generate / transformers", round(paired("ttft_s"), 2), "x")
    row.add("peak memory: grader.generate / transformers", round(memory, 2), "x", "" if quick else "<= 1.2",
            met=None if quick else memory <= 1.2)
    row.details = {"shapes": shapes, "prompt_ids": ids, "new_tokens": new_tokens, "threads": threads,
                   "runs": {side: [{k: v for k, v in r.items() if k != "start"} for r in results]
                            for side, results in runs.items()},
                   "transformers_version": transformers.__version__}
    return row


if __name__ == "__main__":
    child_main(sys.argv[1:])
