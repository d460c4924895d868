"""Stage 3: scaled dot-product attention as a pure function.

The oracle is torch.nn.functional.scaled_dot_product_attention (its boolean attn_mask has our
meaning: True = may attend), plus one example worked out by hand. Masking is tested by
behaviour: masked keys get exactly zero weight, and changing them changes nothing.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from checks import assert_close, assert_in_place_safe, assert_tensor, backward, call as call_checked, fail

HINT_SCALE = ("Divide the scores by sqrt(d_k), where d_k = query.size(-1) is the size of one query vector: "
              "not by d_k itself, not by the model width, and not left unscaled.")
HINT_MASK = ("Is the mask applied BEFORE the softmax, with -inf (not 0) in the masked scores, and with "
             "masked_fill(~mask, ...) (True = may attend)?")
HINT_SOFTMAX = "The softmax runs over the last dimension, the keys (dim=-1): each query's weights sum to one."


def call(stage, query, key, value, mask=None, dropout=0.0):
    """Run the learner's function and check it returns a pair (output, weights)."""
    __tracebackhide__ = True
    result = call_checked(
        stage.scaled_dot_product_attention, query, key, value, mask, dropout,
        what=f"scaled_dot_product_attention(q {tuple(query.shape)}, k {tuple(key.shape)}, v {tuple(value.shape)}, "
             f"mask {None if mask is None else tuple(mask.shape)})",
        hint="A shape mismatch: the scores are the queries times the keys with their last two axes swapped. "
             "Transpose the last two axes only (.T reverses all of them), and let the mask broadcast to (..., Sq, Sk).")
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"scaled_dot_product_attention returned {type(result).__name__}, expected a tuple (output, weights)",
             "Return two tensors: the output and the attention weights.")
    return result


def inverted(query, key, mask):
    """The weights a mask read the wrong way round gives (True taken as 'blocked'), fully masked rows zeroed."""
    return torch.nan_to_num(oracle(query, key, key, ~mask)[1].masked_fill(mask, 0.0))


INVERTED = ("The mask is read inverted: True = may attend, so the scores to blank out with -inf are "
            "where the mask is False.")


def oracle(query, key, value, mask=None):
    """torch's attention and the weights it implies, computed without the learner's code."""
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return output, torch.softmax(scores, dim=-1)


# ---------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("lead, sq, sk, dk, dv", [
    ((), 3, 3, 4, 4),
    ((2,), 3, 5, 4, 6),
    ((2, 3), 4, 2, 8, 3),
    ((1, 2, 2), 5, 5, 2, 7),
])
def test_output_and_weight_shapes(stage, lead, sq, sk, dk, dv):
    q, k, v = torch.randn(*lead, sq, dk), torch.randn(*lead, sk, dk), torch.randn(*lead, sk, dv)
    output, weights = call(stage, q, k, v)
    assert_tensor(output, f"output for q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}",
                  shape=(*lead, sq, dv), dtype=torch.float32,
                  hint="output is weights @ value: (..., Sq, Sk) @ (..., Sk, Dv) -> (..., Sq, Dv).")
    assert_tensor(weights, f"weights for q {tuple(q.shape)}, k {tuple(k.shape)}",
                  shape=(*lead, sq, sk), dtype=torch.float32,
                  hint="Scores are query @ key.transpose(-2, -1): (..., Sq, Dk) @ (..., Dk, Sk) -> (..., Sq, Sk). "
                       "Transpose the last two axes only (.T reverses all of them).")


def test_batch_one_and_length_one(stage):
    q, k, v = torch.randn(1, 1, 4), torch.randn(1, 1, 4), torch.randn(1, 1, 3)
    output, weights = call(stage, q, k, v)
    assert_tensor(output, "output for one query and one key", shape=(1, 1, 3), dtype=torch.float32,
                  hint="Keep every axis, even when it is 1 (no squeeze).")
    assert_tensor(weights, "weights for one query and one key", shape=(1, 1, 1), dtype=torch.float32,
                  hint="(B, Sq, Sk) = (1, 1, 1).")
    assert_close(weights, torch.ones(1, 1, 1), "the weight of the only key", atol=1e-6, hint=HINT_SOFTMAX)
    assert_close(output, v, "output with a single key", atol=1e-6,
                 hint="With one key its weight is 1, so the output is that key's value.")


def test_leaves_its_inputs_unchanged_and_trains_twice_in_a_row(stage):
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 2:] = False
    assert_in_place_safe(lambda q, k, v, m: stage.scaled_dot_product_attention(q, k, v, m, 0.0),
                         torch.randn(2, 3, 4), torch.randn(2, 4, 4), torch.randn(2, 4, 5), mask,
                         what="scaled_dot_product_attention(q, k, v, mask)")


# ---------------------------------------------------------------------------------------------
# invariants


def test_weights_are_positive_and_each_row_sums_to_one(stage):
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    _, weights = call(stage, q, k, v)
    assert_tensor(weights, "weights", shape=(2, 4, 6), dtype=torch.float32, hint="(B, Sq, Sk).")
    if (weights < 0).any():
        fail("weights: some are negative, expected softmax weights in [0, 1]", HINT_SOFTMAX)
    assert_close(weights.sum(-1), torch.ones(2, 4), "weights.sum(-1) (each query's weights over the keys)",
                 atol=1e-6, hint=HINT_SOFTMAX + " Do the rows sum to one, or the columns?")


def test_rows_still_sum_to_one_with_a_mask(stage):
    q, k, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()  # every row allows at least key 0
    _, weights = call(stage, q, k, v, mask)
    assert_tensor(weights, "weights with a (S, S) mask", shape=(2, 5, 5), dtype=torch.float32, hint="(B, Sq, Sk).")
    assert_close(weights.sum(-1), torch.ones(2, 5), "weights.sum(-1) with a causal mask", atol=1e-6,
                 hint="The allowed weights of each row must sum to one. " + HINT_MASK,
                 suspects={"the row sums are those of the inverted mask": (inverted(q, k, mask).sum(-1), INVERTED)})


def test_masked_keys_get_exactly_zero_weight(stage):
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.rand(2, 1, 4, 6) > 0.4
    mask[..., 0] = True  # no fully masked row here (that edge case has its own test)
    _, weights = call(stage, q, k, v, mask)
    assert_tensor(weights, "weights", shape=(2, 2, 4, 6), dtype=torch.float32, hint="(..., Sq, Sk).")
    blocked = ~mask.expand(2, 2, 4, 6)
    assert_close(weights[blocked], torch.zeros(int(blocked.sum())), "the weights of masked keys", atol=0,
                 hint="Masked keys must get EXACTLY zero weight. " + HINT_MASK,
                 suspects={"the weights are those of the inverted mask": (inverted(q, k, mask)[blocked], INVERTED)})


def test_changing_a_masked_key_or_value_changes_nothing(stage):
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([True, True, False, True, False]).expand(4, 5)  # keys 2 and 4 are never allowed
    output, _ = call(stage, q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, [2, 4]] = 100 * torch.randn(2, 2, 8)
    v2[:, [2, 4]] = 100 * torch.randn(2, 2, 8)
    output2, _ = call(stage, q, k2, v2, mask)
    assert_tensor(output2, "output", shape=(2, 4, 8), dtype=torch.float32, hint="(B, Sq, Dv).")
    assert_close(output2, output, "output after changing the keys and values of masked positions", atol=1e-6,
                 hint="A masked key must have no influence at all. " + HINT_MASK)


# ---------------------------------------------------------------------------------------------
# oracles


def test_hand_worked_example(stage):
    """q = [1, 0]; keys [1, 0] and [0, 1]; values [1, 2] and [3, 4]; d_k = 2.
    scores = [1, 0] / sqrt(2) = [0.707107, 0]
    weights = [e^0.707107, 1] / (e^0.707107 + 1) = [0.669762, 0.330238]
    output = 0.669762 * [1, 2] + 0.330238 * [3, 4] = [1.660477, 2.660477]
    """
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w0 = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    output, weights = call(stage, q, k, v)
    assert_close(weights, torch.tensor([[w0, 1 - w0]]), "weights of the hand-worked example", atol=1e-6,
                 hint=HINT_SCALE)
    assert_close(output, torch.tensor([[w0 * 1 + (1 - w0) * 3, w0 * 2 + (1 - w0) * 4]]),
                 "output of the hand-worked example", atol=1e-6, hint="output = weights @ value. " + HINT_SCALE)


@pytest.mark.parametrize("lead, sq, sk, dk, dv", [
    ((), 4, 4, 8, 8),
    ((3,), 2, 7, 4, 5),
    ((2, 2), 5, 3, 16, 2),
    ((2, 1, 3), 3, 3, 8, 4),
])
def test_matches_torch_without_a_mask(stage, lead, sq, sk, dk, dv):
    q, k, v = torch.randn(*lead, sq, dk), torch.randn(*lead, sk, dk), torch.randn(*lead, sk, dv)
    expected_output, expected_weights = oracle(q, k, v)
    output, weights = call(stage, q, k, v)
    # atol 1e-5: a chain of float32 ops (dot products, softmax, weighted sum) whose order torch's kernel
    # is free to choose; the reference is within 5e-7 of it over 300 seeds.
    assert_close(weights, expected_weights, "weights", atol=1e-5, hint=HINT_SCALE + " " + HINT_SOFTMAX)
    assert_close(output, expected_output, "output vs torch.nn.functional.scaled_dot_product_attention",
                 atol=1e-5, hint=HINT_SCALE)


@pytest.mark.parametrize("mask_kind", ["causal (S, S)", "padding (B, 1, 1, S)", "full (B, H, S, S)"])
def test_matches_torch_with_a_boolean_mask(stage, mask_kind):
    batch, heads, length, dk = 2, 3, 5, 8
    q, k, v = (torch.randn(batch, heads, length, dk) for _ in range(3))
    if mask_kind.startswith("causal"):
        mask = torch.ones(length, length, dtype=torch.bool).tril()
    elif mask_kind.startswith("padding"):
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool).view(batch, 1, 1, length)
    else:
        mask = torch.rand(batch, heads, length, length) > 0.5
        mask[..., 2] = True
    expected_output, expected_weights = oracle(q, k, v, mask)
    output, weights = call(stage, q, k, v, mask)
    assert_close(weights, expected_weights, f"weights with a {mask_kind} mask", atol=1e-5, hint=HINT_MASK)
    assert_close(output, expected_output, f"output with a {mask_kind} mask vs torch", atol=1e-5, hint=HINT_MASK)


def test_matches_torch_with_cross_attention_shapes_and_a_mask(stage):
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 5)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool).view(2, 1, 6)
    expected_output, expected_weights = oracle(q, k, v, mask)
    output, weights = call(stage, q, k, v, mask)
    assert_close(weights, expected_weights, "weights with Sq != Sk and a (B, 1, Sk) mask", atol=1e-5, hint=HINT_MASK)
    assert_close(output, expected_output, "output with Sq != Sk, Dv != Dk", atol=1e-5,
                 hint="The output has the VALUE size Dv, and the mask broadcasts over the queries.")


def test_large_scores_do_not_overflow(stage):
    """Integer q and k in [-12, 12] with d_k = 4: every score is an exact integer / 2, up to 288 in size,
    and exp(89) already overflows float32. softmax subtracts the row maximum first; exp(x) / sum does not."""
    q = torch.randint(-12, 13, (2, 4, 4)).float()
    k = torch.randint(-12, 13, (2, 4, 4)).float()
    v = torch.randn(2, 4, 4)
    scores = q @ k.transpose(-2, -1) / 2  # exact: small integers, and d_k = 4 has sqrt 2
    expected_weights = torch.softmax(scores, dim=-1)
    output, weights = call(stage, q, k, v)
    hint = "Use torch.softmax: a hand-written exp(x) / exp(x).sum() overflows to inf / inf = NaN."
    assert_close(weights, expected_weights, "weights with scores of size up to 288", atol=1e-6, hint=hint)
    assert_close(output, expected_weights @ v, "output with scores of size up to 288", atol=1e-6, hint=hint)


def test_gradients_flow_to_query_key_and_value(stage):
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    upstream = torch.randn(2, 3, 6)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    (F.scaled_dot_product_attention(*leaves, attn_mask=mask) * upstream).sum().backward()
    expected = [t.grad for t in leaves]
    mine = [t.clone().requires_grad_() for t in (q, k, v)]
    output, _ = call(stage, *mine, mask)
    assert_tensor(output, "output", shape=(2, 3, 6), dtype=torch.float32, hint="(B, Sq, Dv).")
    backward((output * upstream).sum(), "scaled_dot_product_attention")
    for name, tensor, grad in zip(("query", "key", "value"), mine, expected):
        if tensor.grad is None:
            fail(f"{name}.grad is None after backward: no gradient reached the {name}",
                 "Do not detach, call .item(), or rebuild tensors from .data inside the function.")
        assert_close(tensor.grad, grad, f"gradient of the {name}", atol=1e-5,
                     hint="Use differentiable torch operations only (masked_fill, softmax, @). " + HINT_SCALE)


# ---------------------------------------------------------------------------------------------
# edge cases


def test_fully_masked_row_gives_zero_weights_and_zero_output_not_nan(stage):
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0, 1, :] = False  # query 1 of batch 0 may attend to nothing
    output, weights = call(stage, q, k, v, mask)
    assert_tensor(weights, "weights", shape=(2, 4, 4), dtype=torch.float32, hint="(B, Sq, Sk).")
    assert_tensor(output, "output", shape=(2, 4, 8), dtype=torch.float32, hint="(B, Sq, Dv).")
    hint = ("A fully masked row is softmax of all -inf, which is NaN. After the softmax, "
            "weights.masked_fill(~mask, 0.0) turns that row to zeros and changes nothing else.")
    assert_close(weights[0, 1], torch.zeros(4), "the weights of a fully masked query", atol=0, hint=hint)
    assert_close(output[0, 1], torch.zeros(8), "the output of a fully masked query", atol=0, hint=hint)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = False
    expected_output, expected_weights = oracle(q, k, v, mask)
    assert_close(output[keep], expected_output[keep], "the other queries' outputs", atol=1e-5,
                 hint="Only the fully masked row may change: " + hint)


def test_does_not_call_torch_attention(stage, monkeypatch):
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.nn.functional.scaled_dot_product_attention was called\n  Likely cause: "
                             "this stage is about writing it yourself: scores, scale, mask, softmax, weighted sum.")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", forbidden)
    output, weights = call(stage, q, k, v, torch.ones(3, 3, dtype=torch.bool).tril())
    assert_tensor(output, "output", shape=(2, 3, 4), dtype=torch.float32, hint="(B, Sq, Dv).")
    assert_tensor(weights, "weights", shape=(2, 3, 3), dtype=torch.float32, hint="(B, Sq, Sk).")


def test_no_dropout_is_deterministic(stage):
    q, k, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    first, _ = call(stage, q, k, v, None, 0.0)
    second, _ = call(stage, q, k, v, None, 0.0)
    assert_tensor(first, "output", shape=(2, 5, 4), dtype=torch.float32, hint="(B, Sq, Dv).")
    assert_close(second, first, "a second call with dropout=0.0", atol=0,
                 hint="With dropout=0.0 nothing is random: apply dropout only when its probability is above 0.")


def test_dropout_zeroes_weights_and_rescales_the_rest(stage):
    """With value = identity (Dv = Sk), output = dropout(weights): each entry is 0 or weight / (1 - p)."""
    sq, sk = 6, 8
    q, k = torch.randn(3, sq, 4), torch.randn(3, sk, 4)
    v = torch.eye(sk).expand(3, sk, sk)
    output, weights = call(stage, q, k, v, None, 0.5)
    assert_tensor(output, "output with dropout=0.5", shape=(3, sq, sk), dtype=torch.float32, hint="(B, Sq, Dv).")
    assert_tensor(weights, "weights with dropout=0.5", shape=(3, sq, sk), dtype=torch.float32, hint="(B, Sq, Sk).")
    assert_close(weights.sum(-1), torch.ones(3, sq), "the returned weights' row sums with dropout=0.5", atol=1e-6,
                 hint="Return the weights from BEFORE dropout; drop only the copy multiplied with the values.")
    dropped = output == 0
    if not dropped.any():
        fail(f"dropout=0.5 zeroed none of the {output.numel()} attention weights",
             "Apply dropout to the weights before multiplying with the values: F.dropout(weights, p=dropout).")
    assert_close(output[~dropped], 2 * weights[~dropped], "kept weights after dropout=0.5", atol=1e-6,
                 hint="Dropout acts on the softmax weights, and scales the kept ones by 1 / (1 - p).")
