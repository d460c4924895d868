"""Stage 21: temperature, top-k, top-p, sampling, and the generation loop with and without the KV cache.

Oracles: hand-worked logits (the arithmetic is in each docstring), torch.softmax for the sampling
distribution, a toy model written here whose next token is known in advance, and a slow greedy loop
written here that re-runs the full sequence each step.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_raises, assert_tensor, fail

INF = float("inf")
PROBS = [0.05, 0.5, 0.15, 0.3]  # deliberately not sorted: index 1 is the most likely, then 3, 2, 0
LOGITS = [math.log(p) for p in PROBS]

HINT_TOP_K = ("Find the k-th largest logit of each row (torch.topk(logits, k).values[..., -1:]) and set every logit "
              "strictly below it to -inf: exactly k survive, not k + 1.")
HINT_TOP_P = ("Sort the probabilities in decreasing order and keep a token when the probability of the tokens ranked "
              "ABOVE it (cumsum - itself) is still below p: the token that crosses p is kept. Then put the decision "
              "back in vocabulary order (scatter with the sort's indices).")
HINT_MASK = ("Pass attention_mask to every model call (attention_mask=mask), and after each step append one column of "
             "ones to it (torch.cat with mask.new_ones(B, 1)): the token just generated is real, so the mask always "
             "covers every token so far.")
HINT_EOS = ("A row that has produced eos is finished: from then on it gets eos_id, whatever the model says, and the "
            "loop stops as soon as every row is finished.")


class Successor(nn.Module):
    """A toy model written here: at every position it predicts (token + 1) mod V with a margin of 10.

    It records every call (the tokens it was fed, and the caches; the attention masks in ``masks``), and
    its "cache" only counts positions.
    """

    class Cache:
        def __init__(self) -> None:
            self.length = 0

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.calls: list[tuple[torch.Tensor, object]] = []
        self.masks: list[torch.Tensor | None] = []

    def new_caches(self):
        return [self.Cache()]

    def forward(self, tokens, caches=None, attention_mask=None):
        self.calls.append((tokens.clone(), caches))
        self.masks.append(None if attention_mask is None else attention_mask.clone())
        if caches is not None:
            caches[0].length += tokens.size(1)
        return 10.0 * F.one_hot((tokens + 1) % self.vocab, self.vocab).float(), torch.zeros(())


def tiny_llama(stage, vocab: int = 23):
    """The stage-19 model (the stage under test imports it), with weights spread out so that argmax varies."""
    llama = sys.modules[stage.Llama.__module__]
    model = stage.Llama(llama.LlamaConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                          d_ff=48, max_seq_len=64)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return model


# --- temperature, top-k, top-p ----------------------------------------------------------------


def test_apply_temperature_divides_the_logits(stage):
    """[2, 4, -6] at temperature 2 -> [1, 2, -3]; at 0.5 -> [4, 8, -12]."""
    logits = torch.tensor([[2.0, 4.0, -6.0]])
    assert_close(stage.apply_temperature(logits, 2.0), torch.tensor([[1.0, 2.0, -3.0]]), "temperature 2", atol=1e-6,
                 hint="Divide by the temperature: T > 1 flattens the distribution, T < 1 sharpens it.")
    assert_close(stage.apply_temperature(logits, 0.5), torch.tensor([[4.0, 8.0, -12.0]]), "temperature 0.5", atol=1e-6,
                 hint="Divide by the temperature (do not multiply).")
    assert_raises(lambda: stage.apply_temperature(logits, 0.0), ValueError, "apply_temperature(logits, 0)",
                 hint="Temperature 0 would divide by zero: raise ValueError (sample_next handles 0 as greedy).")


def test_top_k_keeps_exactly_the_k_largest(stage):
    """Row 0 [1, 3, 2, 0.5], k = 2: the two largest are 3 (index 1) and 2 (index 2).
    Row 1 [4, -1, 0, 5], k = 2: 5 (index 3) and 4 (index 0)."""
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [4.0, -1.0, 0.0, 5.0]])
    original = logits.clone()
    got = stage.top_k_filter(logits, 2)
    expected = torch.tensor([[-INF, 3.0, 2.0, -INF], [4.0, -INF, -INF, 5.0]])
    assert_tensor(got, "top_k_filter(logits, 2)", shape=(2, 4), dtype=torch.float32, hint=HINT_TOP_K)
    assert_equal((got == expected).all().item(), True, f"top_k_filter(logits, 2): expected {expected.tolist()}, got {got.tolist()}",
                 hint=HINT_TOP_K)
    assert_close(logits, original, "the input logits after top_k_filter", atol=0.0,
                 hint="Return a new tensor (masked_fill, not masked_fill_): the caller's logits must not change.")
    assert_equal(torch.isfinite(stage.top_k_filter(logits, 1)).sum(dim=-1).tolist(), [1, 1], "survivors per row with k = 1",
                 hint=HINT_TOP_K)
    assert_equal(torch.isfinite(stage.top_k_filter(logits, 4)).sum(dim=-1).tolist(), [4, 4], "survivors per row with k = V",
                 hint="k >= V keeps every logit.")


def test_top_p_keeps_the_token_that_crosses_p(stage):
    """Probabilities [0.05, 0.5, 0.15, 0.3]; by rank: 0.5 (index 1), 0.3 (3), 0.15 (2), 0.05 (0).
    Mass of the tokens ranked above each: 0, 0.5, 0.8, 0.95.
    p = 0.3  -> only index 1 (0.5 alone already reaches 0.3);
    p = 0.7  -> indices 1 and 3 (0.5 < 0.7, so the token that brings it to 0.8 is kept);
    p = 0.85 -> indices 1, 3, 2; p = 1.0 -> all four."""
    logits = torch.tensor([LOGITS])
    cases = {0.3: [1], 0.7: [1, 3], 0.85: [1, 2, 3], 1.0: [0, 1, 2, 3]}
    for p, kept in cases.items():
        got = stage.top_p_filter(logits, p)
        assert_close(logits, torch.tensor([LOGITS]), f"the input logits after top_p_filter(logits, {p})", atol=0.0,
                     hint="Return a new tensor (masked_fill, not masked_fill_): the caller's logits must not change "
                          "in place.")
        assert_tensor(got, f"top_p_filter(logits, {p})", shape=(1, 4), dtype=torch.float32, hint=HINT_TOP_P)
        survivors = torch.isfinite(got[0]).nonzero().flatten().tolist()
        assert_equal(survivors, kept, f"indices kept by top_p_filter with p = {p} (probabilities {PROBS})", hint=HINT_TOP_P)
        assert_close(got[0, kept], logits[0, kept], f"kept logits with p = {p}", atol=0.0,
                     hint="Kept logits are returned unchanged; only the dropped ones become -inf.")


# --- sampling ---------------------------------------------------------------------------------


def test_temperature_zero_is_the_argmax(stage):
    logits = torch.randn(6, 11)
    hint = "Temperature 0 means greedy: return logits.argmax(dim=-1) without sampling (and without dividing by 0)."
    try:
        got = stage.sample_next(logits, temperature=0.0)
    except (ValueError, ZeroDivisionError, RuntimeError) as error:
        fail(f"sample_next(logits, temperature=0) raised {error!r}; expected the argmax of each row", hint)
    assert_tensor(got, "sample_next(logits (6, 11), temperature=0)", shape=(6,), dtype=torch.long,
                  hint="One token id per row, as torch.long.")
    assert_close(got, logits.argmax(dim=-1), "greedy tokens", atol=0, hint=hint)


def test_sample_next_is_reproducible_under_a_seeded_generator(stage):
    logits = torch.zeros(64, 10)  # uniform: every draw is a real coin toss
    first = stage.sample_next(logits, generator=torch.Generator().manual_seed(7))
    assert_tensor(first, "sample_next(logits (64, 10))", shape=(64,), dtype=torch.long, hint="One id per row.")
    again = stage.sample_next(logits, generator=torch.Generator().manual_seed(7))
    other = stage.sample_next(logits, generator=torch.Generator().manual_seed(8))
    assert_close(again, first, "draws with the same seed", atol=0,
                 hint="Pass the generator to torch.multinomial(probs, 1, generator=generator).")
    if torch.equal(other, first):
        fail("64 uniform draws with seeds 7 and 8 came out identical", "Are you drawing with the given generator at all?")


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).float() / tokens.numel()


def test_sampled_frequencies_match_the_softmax(stage):
    """20 000 draws: a frequency's standard deviation is at most sqrt(0.25 / 20000) ≈ 0.0035, so a
    tolerance of 0.015 is more than four standard deviations. Filtered tokens must never appear.
    top-k 2 and top-p 0.7 both keep 0.5 and 0.3: renormalised [0, 0.625, 0, 0.375]."""
    n = 20_000
    logits = torch.tensor([LOGITS]).expand(n, 4)
    cases = [
        (dict(), torch.tensor(PROBS)),
        (dict(temperature=2.0), torch.softmax(torch.tensor(LOGITS) / 2.0, dim=-1)),
        (dict(top_k=2), torch.tensor([0.0, 0.625, 0.0, 0.375])),
        (dict(top_p=0.7), torch.tensor([0.0, 0.625, 0.0, 0.375])),
    ]
    for options, expected in cases:
        tokens = stage.sample_next(logits, generator=torch.Generator().manual_seed(0), **options)
        assert_tensor(tokens, f"sample_next(..., {options})", shape=(n,), dtype=torch.long, hint="One id per row.")
        got = frequencies(tokens, 4)
        assert_close(got, expected, f"frequencies of 20000 draws with {options}", atol=0.015,
                     hint="Filter the logits (temperature divides; top-k and top-p set -inf), then softmax, then "
                          "torch.multinomial: never sample from the logits themselves.")
        never = expected == 0
        assert_equal(int(tokens[never[tokens]].numel()), 0, f"draws of filtered tokens with {options}",
                     hint="A filtered token has probability exactly 0.")


# --- the generation loop ----------------------------------------------------------------------


def test_generate_appends_exactly_max_new_tokens_without_eos(stage):
    model = Successor(10)
    prompt = torch.tensor([[3, 4], [8, 9]])
    out = stage.generate(model, prompt, 5, temperature=0.0)
    assert_tensor(out, "generate(prompt (2, 2), 5 new tokens)", shape=(2, 7), dtype=torch.long,
                  hint="Return the prompt followed by the new tokens: (B, S + n).")
    assert_close(out, torch.tensor([[3, 4, 5, 6, 7, 8, 9], [8, 9, 0, 1, 2, 3, 4]]), "generated tokens", atol=0,
                 hint="Each step samples from the LAST position's logits (logits[:, -1]) and appends that token.")
    zero = stage.generate(model, prompt, 0, temperature=0.0)
    assert_close(zero, prompt, "generate with max_new_tokens=0", atol=0, hint="No new tokens: the prompt comes back.")


def test_generate_stops_at_eos_and_pads_finished_rows_with_eos(stage):
    """V = 10, eos = 0, each step adds last + 1 (mod 10).
    Row 0 from 7: 8, 9, 0 (eos) -> finished; the model would say 1 next, but the row gets 0, 0, 0.
    Row 1 from 4: 5, 6, 7, 8, 9, 0 (eos) -> every row finished after 6 steps, although 10 were allowed."""
    out = stage.generate(Successor(10), torch.tensor([[7], [4]]), 10, temperature=0.0, eos_id=0)
    expected = torch.tensor([[7, 8, 9, 0, 0, 0, 0], [4, 5, 6, 7, 8, 9, 0]])
    assert_tensor(out, "generate with eos", shape=tuple(expected.shape), dtype=torch.long, hint=HINT_EOS)
    assert_close(out, expected, "tokens generated with eos_id 0", atol=0, hint=HINT_EOS)


def test_generate_feeds_the_prompt_once_then_one_token_per_step_with_the_cache(stage):
    model = Successor(10)
    prompt = torch.tensor([[1, 2, 3], [5, 5, 5]])
    out = stage.generate(model, prompt, 4, temperature=0.0, use_cache=True)
    fed = [tokens for tokens, _ in model.calls]
    assert_equal([tuple(t.shape) for t in fed], [(2, 3), (2, 1), (2, 1), (2, 1)], "shapes fed to the model with use_cache",
                 hint="With the cache, feed the prompt once, then ONLY the newest token (B, 1) each step: the cache "
                      "already holds the rest (feeding the whole sequence again puts every position in it twice).")
    caches = [c for _, c in model.calls]
    if caches[0] is None or any(c is not caches[0] for c in caches):
        fail("the calls did not all receive the same caches list",
             "Create caches = model.new_caches() once, before the loop, and pass it to every call.")
    for step, tokens in enumerate(fed[1:], start=3):
        assert_close(tokens, out[:, step : step + 1], f"token fed at step {step - 2}", atol=0,
                     hint="Feed the token sampled in the previous step.")
    model.calls.clear()
    stage.generate(model, prompt, 3, temperature=0.0, use_cache=False)
    assert_equal([(tuple(t.shape), c) for t, c in model.calls], [((2, 3), None), ((2, 4), None), ((2, 5), None)],
                 "(shape, caches) of each call with use_cache=False",
                 hint="Without the cache, feed the whole sequence so far each step and pass no caches.")


def test_greedy_generation_matches_a_slow_full_sequence_loop(stage):
    model = tiny_llama(stage)
    prompt = torch.randint(0, 23, (3, 4))
    expected = prompt
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(expected)
            expected = torch.cat([expected, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    for use_cache in (True, False):
        out = stage.generate(model, prompt, 12, temperature=0.0, use_cache=use_cache)
        assert_tensor(out, f"generate(use_cache={use_cache})", shape=(3, 16), dtype=torch.long, hint="(B, S + n).")
        assert_close(out, expected, f"greedy tokens with use_cache={use_cache}", atol=0,
                     hint="Take the argmax of the LAST position's logits each step; with the cache, the model must see "
                          "the prompt once and then each new token once, in order.")


def test_cached_and_uncached_sampling_give_identical_tokens(stage):
    model = tiny_llama(stage)
    prompt = torch.randint(0, 23, (4, 3))
    options = dict(temperature=0.9, top_k=8, top_p=0.95)
    cached = stage.generate(model, prompt, 15, use_cache=True, generator=torch.Generator().manual_seed(5), **options)
    uncached = stage.generate(model, prompt, 15, use_cache=False, generator=torch.Generator().manual_seed(5), **options)
    assert_tensor(cached, "cached generation", shape=(4, 18), dtype=torch.long, hint="(B, S + n).")
    assert_close(cached, uncached, "tokens sampled with the cache vs without (same seed)", atol=0,
                 hint="Both paths must give the same logits each step and draw with the same generator in the same order.")
    again = stage.generate(model, prompt, 15, use_cache=True, generator=torch.Generator().manual_seed(5), **options)
    assert_close(again, cached, "two cached runs with the same seed", atol=0, hint="Pass the generator to sample_next.")


# --- left-padded batches ----------------------------------------------------------------------


def test_generate_passes_the_attention_mask_one_column_longer_each_step(stage):
    model = Successor(10)
    prompt = torch.tensor([[0, 2, 3], [4, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    kept_prompt, kept_mask = prompt.clone(), mask.clone()
    for use_cache in (True, False):
        model.calls.clear()
        model.masks.clear()
        stage.generate(model, prompt, 3, temperature=0.0, use_cache=use_cache, attention_mask=mask)
        expected = [torch.cat([mask, torch.ones(2, n, dtype=torch.long)], dim=1) for n in range(3)]
        got = [None if m is None else tuple(m.shape) for m in model.masks]
        assert_equal(got, [tuple(m.shape) for m in expected], f"attention_mask shapes passed (use_cache={use_cache})",
                     hint=HINT_MASK)
        for step, (seen, want) in enumerate(zip(model.masks, expected)):
            assert_close(seen, want, f"attention_mask at step {step} (use_cache={use_cache})", atol=0, hint=HINT_MASK)
    assert_close(prompt, kept_prompt, "the prompt after generate", atol=0,
                 hint="generate must not write into its prompt: build new tensors with torch.cat.")
    assert_close(mask, kept_mask, "the attention_mask after generate", atol=0,
                 hint="Grow a new mask with torch.cat each step; never modify the caller's mask in place.")
    model.masks.clear()
    stage.generate(model, prompt, 2, temperature=0.0)
    assert_equal(model.masks, [None, None], "attention_mask passed without one",
                 hint="Without an attention_mask, pass attention_mask=None to the model.")


def test_left_padded_prompts_generate_what_each_generates_alone(stage):
    """Prompts of 6, 2 and 4 tokens, left-padded to 6; greedy; the oracle runs each prompt alone, by hand."""
    model = tiny_llama(stage)
    prompts = [torch.randint(1, 23, (n,)) for n in (6, 2, 4)]
    batch, mask = torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, 6, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        batch[row, 6 - len(prompt):], mask[row, 6 - len(prompt):] = prompt, 1
    alone = []
    with torch.no_grad():
        for prompt in prompts:
            tokens = prompt[None]
            for _ in range(8):
                logits, _ = model(tokens)
                tokens = torch.cat([tokens, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
            alone.append(tokens[0, len(prompt):])
    for use_cache in (True, False):
        out = stage.generate(model, batch, 8, temperature=0.0, use_cache=use_cache, attention_mask=mask)
        assert_tensor(out, f"generate of a padded batch (use_cache={use_cache})", shape=(3, 14), dtype=torch.long,
                      hint="(B, S + n).")
        for row in range(3):
            assert_close(out[row, 6:], alone[row], f"row {row}'s new tokens (prompt of {len(prompts[row])}) vs alone, "
                         f"use_cache={use_cache}", atol=0, hint=HINT_MASK)
