"""Stage 21: sampling, and generation with a KV cache.

A language model gives, for the last position, V logits: a distribution over the next token.
Generation picks one, appends it, and asks again. How it picks shapes the text:

- greedy (temperature 0): always the argmax. Deterministic, and prone to loops.
- temperature T: sample from softmax(logits / T). T < 1 sharpens the distribution, T > 1 flattens it.
- top-k: keep only the k largest logits (the rest -> -inf), then sample among them.
- top-p (nucleus): keep the smallest set of most likely tokens whose total probability reaches
  p, then sample among them. The token that crosses p is kept.

Worked example, probabilities [0.5, 0.3, 0.15, 0.05] (already sorted):

    top-k, k = 2  -> keep 0.5, 0.3            -> renormalised [0.625, 0.375, 0, 0]
    top-p, p = 0.7: cumulative [0.5, 0.8, 0.95, 1.0]; 0.5 < 0.7, the second token brings it to
                    0.8 >= 0.7 -> keep the first two (a token is kept when the probability BEFORE
                    it is still below p)

Filters work on logits (setting dropped entries to -inf), so they compose: temperature, then
top-k, then top-p, then one softmax and one draw. A torch.Generator makes the draws reproducible.

The loop. With the KV cache (stage 19) the prompt is fed once, and then only the newest token:
each call costs one position instead of the whole sequence. Without the cache the whole
sequence is fed every step. Both give the same logits, so with the same seeded generator they
give the same tokens. A row that has produced eos is finished: it gets eos from then on, and the
loop stops when every row is finished.

Prompts of different lengths go in one batch LEFT-padded, with an attention_mask (B, S) that is
0 at the padding (stage 19): the mask grows by a column of ones with every generated token, and
each row then generates exactly what it would generate alone.

Shapes: B batch, S prompt length, V vocabulary size, n new tokens.
"""

from __future__ import annotations

import torch

from .s19_llama import Llama


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by the temperature.

    Args:
        logits: (..., V).
        temperature: > 0.
    Returns:
        logits / temperature, same shape.
    Raises:
        ValueError: if temperature <= 0 (temperature 0 means greedy: sample_next handles it).
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s21_generation: not written yet — python -m grader hint s21_generation")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row; set the others to -inf.

    Example: [1.0, 3.0, 2.0, 0.5], k = 2 -> [-inf, 3.0, 2.0, -inf]. Entries equal to the k-th
    largest value are all kept (a tie may keep more than k).

    Args:
        logits: (..., V).
        k: >= 1; k >= V keeps everything.
    Returns:
        A new tensor, same shape; the input is not modified.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s21_generation: not written yet — python -m grader hint s21_generation")


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability sums to at least p.

    Sort each row's probabilities in decreasing order; a token is kept when the cumulative
    probability of the tokens BEFORE it is below p (so the token that crosses p is kept, and the
    most likely token always is). Example: probabilities [0.5, 0.3, 0.15, 0.05], p = 0.7 -> the
    first two are kept.

    Args:
        logits: (..., V).
        p: in (0, 1]; 1 keeps everything.
    Returns:
        A new tensor, same shape, -inf at the dropped tokens, the original logits elsewhere.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s21_generation: not written yet — python -m grader hint s21_generation")


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token of every row.

    temperature 0: the argmax (greedy; top_k, top_p and the generator are not used). Otherwise:
    apply_temperature, then top_k_filter if top_k, then top_p_filter if top_p, then softmax and
    one torch.multinomial draw per row with the generator.

    Args:
        logits: (B, V), the last position's logits.
        temperature: >= 0.
        top_k: None or k >= 1.
        top_p: None or p in (0, 1].
        generator: makes the draws reproducible.
    Returns:
        (B,) torch.long token ids.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s21_generation: not written yet — python -m grader hint s21_generation")


@torch.no_grad()
def generate(
    model: Llama,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Extend every prompt row by up to max_new_tokens sampled tokens.

    Each step takes the LAST position's logits, sample_next, and appends the token. With
    use_cache, the first call feeds the prompt through model(prompt, caches) with caches =
    model.new_caches(), and every later call feeds only the newest token (B, 1) with the same
    caches; without, every call feeds the whole sequence so far, model(tokens). Once a row has
    produced eos_id it is finished and every later token of that row is eos_id; when every row is
    finished the loop stops early. The model's mode is not changed (call model.eval() first).

    Args:
        model: a Llama (forward(tokens, caches, attention_mask=...) -> (logits, aux), and new_caches()).
        prompt: (B, S) torch.long, S >= 1.
        max_new_tokens: n >= 0.
        temperature, top_k, top_p, generator: as in sample_next.
        eos_id: the end-of-sequence id, or None (then exactly n tokens are added).
        use_cache: feed only the new token each step through the KV cache.
        attention_mask: None, or (B, S) with 0 at the left padding of each prompt and 1 at its
            real tokens; passed to every model call as attention_mask, one column of ones longer
            per generated token (None is passed as None). It is not modified.
    Returns:
        (B, S + m) torch.long: the prompt followed by the m <= n generated tokens; m < n only when
        every row has produced eos.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s21_generation: not written yet — python -m grader hint s21_generation")
