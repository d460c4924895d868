"""Stage 15: the causal mask as an additive float mask (0 where allowed, -inf where not).

Oracles: a loop over (i, j) written here; the hand-worked cache example of the module docstring;
Part I's boolean causal mask (torch.tril of ones, built here) through torch.softmax and through
torch.nn.functional.scaled_dot_product_attention, which accepts both mask forms.

Masks hold -inf, and -inf - -inf is NaN, so values are compared as two exact boolean patterns:
where the mask is exactly 0.0 and where it is exactly -inf.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from checks import assert_close, assert_tensor

NEG_INF = float("-inf")
HINT_CAUSAL = ("Query i may see key j when j <= i: 0.0 on and below the diagonal, -inf strictly above it. "
               "Is the diagonal blocked (>= instead of >), or the triangle upside down?")
HINT_OFFSET = ("With a cache the queries are the LAST q_len of kv_len positions: query i sits at position "
               "(kv_len - q_len) + i and may see keys 0 .. (kv_len - q_len) + i. Is the offset kv_len - q_len missing?")
HINT_INF = ("Blocked entries must be exactly -inf (float('-inf')), not a large negative number such as -1e9: "
            "exp(-inf) is exactly 0, and only -inf survives in every dtype.")
HINT_DTYPE = "Create the mask directly in the requested dtype (torch.zeros(..., dtype=dtype)), then fill it."
HINT_BOOL = ("bool_to_additive: True means 'may attend' and becomes 0.0; False becomes -inf. additive_to_bool is "
             "the inverse: finite (0.0) -> True, -inf -> False.")


def causal_loop(q_len: int, kv_len: int) -> torch.Tensor:
    """The oracle: allowed[i, j] is True when key j is not after query i's absolute position."""
    offset = kv_len - q_len
    return torch.tensor([[j <= offset + i for j in range(kv_len)] for i in range(q_len)])


def assert_additive(mask, allowed: torch.Tensor, what: str, dtype=torch.float32, hint: str = "") -> None:
    """mask is a float tensor of allowed's shape: exactly 0.0 where allowed, exactly -inf elsewhere."""
    __tracebackhide__ = True
    assert_tensor(mask, what, shape=allowed.shape, dtype=dtype, hint=hint)
    assert_close(mask == 0, allowed, f"{what}: where the mask is 0.0", atol=0.0, hint=hint)
    assert_close(torch.isneginf(mask), ~allowed, f"{what}: where the mask is -inf", atol=0.0,
                 hint=hint + " " + HINT_INF)


# ----------------------------------------------------------------------------- shapes

def test_square_mask_is_a_float32_q_len_by_q_len_tensor(stage):
    assert_tensor(stage.additive_causal_mask(5), "additive_causal_mask(5)", shape=(5, 5), dtype=torch.float32,
                  hint="kv_len defaults to q_len, and the default dtype is float32.")


def test_cache_mask_is_q_len_by_kv_len(stage):
    assert_tensor(stage.additive_causal_mask(2, 7), "additive_causal_mask(2, 7)", shape=(2, 7), dtype=torch.float32,
                  hint="The mask has one row per query (q_len) and one column per key (kv_len).")


# ----------------------------------------------------------------------------- values

def test_square_mask_is_zero_on_and_below_the_diagonal_and_minus_inf_above(stage):
    """q_len = 3:  [[0, -inf, -inf], [0, 0, -inf], [0, 0, 0]]."""
    expected = torch.tensor([[0.0, NEG_INF, NEG_INF], [0.0, 0.0, NEG_INF], [0.0, 0.0, 0.0]])
    assert_additive(stage.additive_causal_mask(3), expected == 0, "additive_causal_mask(3)", hint=HINT_CAUSAL)


@pytest.mark.parametrize("q_len", [1, 4, 6])
def test_square_mask_matches_a_loop(stage, q_len):
    assert_additive(stage.additive_causal_mask(q_len), causal_loop(q_len, q_len), f"additive_causal_mask({q_len})",
                    hint=HINT_CAUSAL)


def test_cache_case_worked_example(stage):
    """q_len = 2, kv_len = 4: two cached positions, two new ones (the module docstring's example).

    query 0 is position 2: keys 0, 1, 2 -> [0, 0, 0, -inf]; query 1 is position 3 -> [0, 0, 0, 0].
    """
    expected = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert_additive(stage.additive_causal_mask(2, 4), expected, "additive_causal_mask(2, 4)", hint=HINT_OFFSET)


@pytest.mark.parametrize("q_len, kv_len", [(3, 7), (1, 6), (4, 5)])
def test_cache_mask_matches_a_loop(stage, q_len, kv_len):
    assert_additive(stage.additive_causal_mask(q_len, kv_len), causal_loop(q_len, kv_len),
                    f"additive_causal_mask({q_len}, {kv_len})", hint=HINT_OFFSET)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_mask_is_created_in_the_requested_dtype(stage, dtype):
    mask = stage.additive_causal_mask(3, 5, dtype=dtype)
    assert_additive(mask, causal_loop(3, 5), f"additive_causal_mask(3, 5, dtype={dtype})", dtype=dtype, hint=HINT_DTYPE)


# ----------------------------------------------------------------------------- equivalence with Part I

def test_adding_the_mask_gives_the_same_softmax_as_masking_with_part_one_booleans(stage):
    """softmax(scores + additive) == softmax(scores.masked_fill(~tril, -inf)): the two forms are one mask."""
    scores = torch.randn(2, 3, 5, 5)
    causal = torch.tril(torch.ones(5, 5)).bool()  # Part I's boolean causal mask, True = may attend
    expected = torch.softmax(scores.masked_fill(~causal, NEG_INF), dim=-1)
    mask = stage.additive_causal_mask(5)
    assert_tensor(mask, "additive_causal_mask(5)", shape=(5, 5), dtype=torch.float32, hint=HINT_CAUSAL)
    assert_close(torch.softmax(scores + mask, dim=-1), expected, "softmax(scores + mask)", atol=1e-7,
                 hint=HINT_CAUSAL + " " + HINT_INF)


def test_torch_attention_gives_the_same_output_with_either_mask_form(stage):
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    allowed = causal_loop(3, 6)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    mask = stage.additive_causal_mask(3, 6)
    assert_tensor(mask, "additive_causal_mask(3, 6)", shape=(3, 6), dtype=torch.float32, hint=HINT_OFFSET)
    assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), expected,
                 "attention with the additive mask vs the boolean one", atol=1e-6, hint=HINT_OFFSET)


def test_bool_to_additive_matches_a_boolean_mask_elementwise(stage):
    allowed = torch.rand(2, 1, 3, 4) > 0.4  # any boolean mask, e.g. padding combined with causal
    assert_additive(stage.bool_to_additive(allowed), allowed, "bool_to_additive(random mask)", hint=HINT_BOOL)
    tril = torch.tril(torch.ones(4, 4)).bool()
    assert_additive(stage.bool_to_additive(tril), tril, "bool_to_additive(tril)", hint=HINT_BOOL)
    assert_additive(stage.bool_to_additive(tril, dtype=torch.float64), tril, "bool_to_additive(tril, float64)",
                    dtype=torch.float64, hint=HINT_DTYPE)


def test_additive_to_bool_inverts_bool_to_additive(stage):
    additive = torch.tensor([[0.0, NEG_INF, 0.0], [NEG_INF, NEG_INF, 0.0]])
    expected = torch.tensor([[True, False, True], [False, False, True]])
    back = stage.additive_to_bool(additive)
    assert_tensor(back, "additive_to_bool", shape=(2, 3), dtype=torch.bool, hint=HINT_BOOL)
    assert_close(back, expected, "additive_to_bool", atol=0.0, hint=HINT_BOOL)
    tril = torch.tril(torch.ones(5, 5)).bool()
    assert_close(stage.additive_to_bool(stage.additive_causal_mask(5)), tril,
                 "additive_to_bool(additive_causal_mask(5)) vs tril(ones)", atol=0.0, hint=HINT_CAUSAL)


# ----------------------------------------------------------------------------- edge cases

def test_single_query_over_a_long_cache_sees_every_key(stage):
    """The generation step: one new token attends to all kv_len positions, itself included."""
    assert_additive(stage.additive_causal_mask(1, 9), torch.ones(1, 9, dtype=torch.bool),
                    "additive_causal_mask(1, 9)", hint=HINT_OFFSET)


def test_fewer_keys_than_queries_is_a_value_error(stage):
    with pytest.raises(ValueError):
        stage.additive_causal_mask(4, 2)


# ----------------------------------------------------------------------------- in place

def test_conversions_leave_their_input_unchanged(stage):
    allowed = torch.rand(2, 3, 4) > 0.5
    additive = torch.zeros(2, 3, 4).masked_fill(~allowed, NEG_INF)
    kept_allowed, kept_additive = allowed.clone(), additive.clone()
    converted = stage.bool_to_additive(allowed)
    back = stage.additive_to_bool(additive)
    assert_additive(converted, kept_allowed, "bool_to_additive(mask)", hint=HINT_BOOL)
    assert_tensor(back, "additive_to_bool(mask)", shape=(2, 3, 4), dtype=torch.bool, hint=HINT_BOOL)
    hint = "Build a new tensor (torch.zeros(...).masked_fill(...), torch.isfinite(...)); never modify the mask in place."
    assert_close(allowed, kept_allowed, "the boolean mask after bool_to_additive", atol=0.0, hint=hint)
    assert_close(additive, kept_additive, "the additive mask after additive_to_bool", atol=0.0, hint=hint)
