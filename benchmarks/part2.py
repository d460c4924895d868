"""Row 5: the Part II decoder-only model: what the KV cache buys, and how fast the model trains.

Decoding: greedy generation (temperature 0) of N new tokens from a batch of prompts, once with
the KV cache (only the new token goes through the model each step) and once without (the whole
sequence is re-run each step). The model is freshly initialised: speed does not depend on the
weights, and greedy decoding is deterministic, so both runs must produce the same tokens.

Training: tokens per second of plain training steps of the same small model (forward, loss,
backward, gradient clipping, AdamW step) on windows of the shipped corpus read as bytes.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .common import ROOT, Row, median, not_available

TITLE = "Part II: greedy decoding with vs without the KV cache; training tokens per second"


def load_part2():
    """(s19_llama, s21_generation) from reference/, or raise ImportError naming what is missing."""
    from reference import s19_llama, s21_generation

    return s19_llama, s21_generation


def run(quick: bool = False) -> Row:
    try:
        llama, generation = load_part2()
    except ImportError as error:
        return not_available("part2", TITLE, f"Part II reference not there yet ({error})")
    row = Row("part2", TITLE)
    batch, prompt_len, new_tokens = (4, 8, 16) if quick else (32, 16, 256)
    train_batch, context, steps = (4, 32, 4) if quick else (16, 128, 30)
    config = llama.LlamaConfig(vocab_size=512, max_seq_len=max(prompt_len + new_tokens, context))
    torch.manual_seed(0)
    model = llama.Llama(config).eval()
    prompt = torch.randint(0, config.vocab_size, (batch, prompt_len))

    outputs, seconds = {}, {}
    for use_cache in (True, False):
        with torch.no_grad():
            start = time.perf_counter()
            outputs[use_cache] = generation.generate(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache)
            seconds[use_cache] = time.perf_counter() - start
    same = torch.equal(outputs[True], outputs[False])
    speedup = seconds[False] / seconds[True]
    row.add(f"greedy decoding, {new_tokens} tokens, batch {batch}: speed-up with KV cache", round(speedup, 2), "x",
            ">= 10" if not quick else "", met=speedup >= 10 if not quick else None,
            note=f"{seconds[False]:.2f} s without vs {seconds[True]:.2f} s with; identical tokens: {same}; "
                 f"LlamaConfig defaults (D={config.d_model}, {config.n_layers} layers, H={config.n_heads}, "
                 f"Hkv={config.n_kv_heads}), V={config.vocab_size}, prompt {prompt_len}")
    row.details["decoding"] = {"batch": batch, "prompt": prompt_len, "new_tokens": new_tokens,
                               "cached_s": seconds[True], "uncached_s": seconds[False], "identical_tokens": same}

    # training throughput on the corpus as bytes (ids < 256 < vocab_size)
    text = (ROOT / "data" / "frankenstein.txt").read_bytes()
    data = torch.tensor(list(text[: 200_000]), dtype=torch.long)
    torch.manual_seed(0)
    model = llama.Llama(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 1):  # step 0 warms up
        starts = torch.randint(0, data.numel() - context - 1, (train_batch,), generator=generator)
        x = torch.stack([data[s:s + context] for s in starts])  # (B, S)
        y = torch.stack([data[s + 1:s + context + 1] for s in starts])  # (B, S), shifted by one
        start = time.perf_counter()
        logits, aux = model(x)
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), y.reshape(-1)) + aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    tokens_per_second = train_batch * context / median(times)
    row.add(f"training, batch {train_batch} x {context} tokens", round(tokens_per_second), "tokens/s",
            note=f"median of {steps} steps; loss {loss.item():.2f} after {steps + 1} steps")
    row.details["training"] = {"batch": train_batch, "context": context, "step_s": times}
    return row
