"""Stage 5: multi-head attention.

The oracle is torch.nn.MultiheadAttention holding copies of the learner's weights:
in_proj_weight is the three projections stacked [W_q; W_k; W_v], out_proj is the output
projection. Its boolean masks mean the OPPOSITE of ours (True = NOT allowed), so the oracle is
given ~mask. split_heads and merge_heads are checked against slow loops written here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

HINT_SPLIT = ("split_heads: view (B, S, D) as (B, S, H, Dh), THEN transpose(1, 2) to (B, H, S, Dh). Viewing "
              "straight as (B, H, S, Dh), with no transpose, mixes positions between heads.")
HINT_MERGE = ("merge_heads undoes split_heads in reverse order: transpose(1, 2) back to (B, S, H, Dh) first, then "
              "reshape to (B, S, D). Reshaping without the transpose, or transposing the wrong axes, scrambles "
              "positions and heads.")
HINT_ORACLE = ("Project, split, attend, merge, then the output projection. Are q, k and v projected from "
               "query, key and value respectively, and is the mask passed to the attention?")


def make(stage, d_model=8, n_heads=2, dropout=0.0, bias=True):
    module = stage.MultiHeadAttention(d_model, n_heads, dropout=dropout, bias=bias)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            fail(f"MultiHeadAttention.{name}: expected an nn.Linear, got {type(layer).__name__}",
                 "Create q_proj, k_proj, v_proj and out_proj as nn.Linear(d_model, d_model, bias=bias).")
    return module


def attend(module, query, key, value, mask=None):
    """Call the learner's module; a shape error inside it becomes a failure that says where to look."""
    __tracebackhide__ = True
    return call(module, query, key, value, mask,
                what=f"MultiHeadAttention(query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)})",
                hint="A shape mismatch inside forward. Are keys and values projected from `key` and `value` "
                     "(k_proj(key), v_proj(value), not k_proj(query)), and do split_heads and merge_heads take the "
                     "length from the tensor they are given (Sq for queries, Sk for keys)?")


def torch_oracle(module, d_model, n_heads, bias=True, value_layer="v_proj", out_layer="out_proj"):
    """nn.MultiheadAttention with the learner's weights copied in (kept in train mode with dropout 0:
    the slow, exact path; the fast path is an inference kernel with its own rounding).

    value_layer / out_layer pick other weights for the values and the output (None = identity),
    to compute what a known mistake would give.
    """
    mha = nn.MultiheadAttention(d_model, n_heads, dropout=0.0, bias=bias, batch_first=True)
    value, out = getattr(module, value_layer), getattr(module, out_layer) if out_layer else None
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([module.q_proj.weight, module.k_proj.weight, value.weight]))
        mha.out_proj.weight.copy_(out.weight if out else torch.eye(d_model))
        if bias:
            mha.in_proj_bias.copy_(torch.cat([module.q_proj.bias, module.k_proj.bias, value.bias]))
            mha.out_proj.bias.copy_(out.bias if out else torch.zeros(d_model))
    return mha.train()


def known_mistakes(module, d_model, n_heads, query, key, value):
    """What two classic mistakes give on these inputs, each with its cause (see checks.assert_close)."""
    return {
        "your output equals the merged heads before the output projection": (
            run_oracle(torch_oracle(module, d_model, n_heads, out_layer=None), query, key, value),
            "The merged heads must go through the output projection, out_proj, last."),
        "your output equals attention with the values projected by k_proj": (
            run_oracle(torch_oracle(module, d_model, n_heads, value_layer="k_proj"), query, key, value),
            "The values are v_proj(value): each of the three inputs has its own projection."),
    }


def run_oracle(mha, query, key, value, attn_mask=None, key_padding_mask=None):
    """Our masks say True = may attend; torch's say True = blocked, hence the ~."""
    out, _ = mha(query, key, value,
                 attn_mask=None if attn_mask is None else ~attn_mask,
                 key_padding_mask=None if key_padding_mask is None else ~key_padding_mask,
                 need_weights=False)
    return out


# ---------------------------------------------------------------------------------------------
# construction and shapes


def test_projections_and_sizes(stage):
    module = make(stage, d_model=12, n_heads=3)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer = getattr(module, name)
        assert_tensor(layer.weight, f"{name}.weight", shape=(12, 12), dtype=torch.float32,
                      hint="Each projection is nn.Linear(d_model, d_model).")
        if layer.bias is None:
            fail(f"{name}.bias is None with bias=True", "Pass bias=bias to nn.Linear.")
    assert_equal(module.n_heads, 3, "MultiHeadAttention(12, 3).n_heads", hint="Store n_heads.")
    assert_equal(module.head_size, 4, "MultiHeadAttention(12, 3).head_size", hint="head_size = d_model // n_heads.")
    no_bias = make(stage, d_model=8, n_heads=2, bias=False)
    names = sorted(name for name, _ in no_bias.named_parameters())
    assert_equal(names, ["k_proj.weight", "out_proj.weight", "q_proj.weight", "v_proj.weight"],
                 "parameters with bias=False", hint="Pass bias=bias to all four nn.Linear layers.")


def test_d_model_not_divisible_by_heads_raises_value_error(stage):
    try:
        stage.MultiHeadAttention(10, 3)
    except ValueError:
        return
    fail("MultiHeadAttention(d_model=10, n_heads=3) did not raise ValueError",
         "10 features cannot be split into 3 equal heads: check d_model % n_heads in __init__ and raise ValueError.")


@pytest.mark.parametrize("batch, sq, sk", [(2, 5, 5), (3, 2, 6), (1, 1, 1), (1, 1, 4)])
def test_output_shape(stage, batch, sq, sk):
    module = make(stage, d_model=8, n_heads=4).eval()
    out = attend(module, torch.randn(batch, sq, 8), torch.randn(batch, sk, 8), torch.randn(batch, sk, 8))
    assert_tensor(out, f"MultiHeadAttention(query ({batch}, {sq}, 8), key/value ({batch}, {sk}, 8))",
                  shape=(batch, sq, 8), dtype=torch.float32,
                  hint="The output has one vector per QUERY position: (B, Sq, D). " + HINT_MERGE)


def test_leaves_its_inputs_unchanged_and_trains_twice_in_a_row(stage):
    module = make(stage, d_model=8, n_heads=2).eval()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    assert_in_place_safe(module, query, memory, memory, torch.ones(2, 1, 1, 4, dtype=torch.bool),
                         what="MultiHeadAttention(query, key, value, mask)")


# ---------------------------------------------------------------------------------------------
# split and merge


def test_split_heads_matches_a_slow_loop(stage):
    """Head h of position s holds features h*Dh .. (h+1)*Dh - 1 of x[b, s]."""
    module = make(stage, d_model=6, n_heads=3)
    x = torch.randn(2, 4, 6)
    got = call(module.split_heads, x, what="split_heads(x)")
    assert_tensor(got, "split_heads(x (2, 4, 6)) with 3 heads", shape=(2, 3, 4, 2), dtype=torch.float32,
                  hint="(B, S, D) -> (B, H, S, Dh).")
    expected = torch.zeros(2, 3, 4, 2)
    for b in range(2):
        for h in range(3):
            for s in range(4):
                for d in range(2):
                    expected[b, h, s, d] = x[b, s, h * 2 + d]
    assert_close(got, expected, "split_heads(x)", atol=0, hint=HINT_SPLIT)


def test_merge_heads_matches_a_slow_loop(stage):
    module = make(stage, d_model=6, n_heads=3)
    y = torch.randn(2, 3, 4, 2)
    got = call(module.merge_heads, y, what="merge_heads(y)")
    assert_tensor(got, "merge_heads(y (2, 3, 4, 2))", shape=(2, 4, 6), dtype=torch.float32,
                  hint="(B, H, S, Dh) -> (B, S, D).")
    expected = torch.zeros(2, 4, 6)
    for b in range(2):
        for h in range(3):
            for s in range(4):
                for d in range(2):
                    expected[b, s, h * 2 + d] = y[b, h, s, d]
    assert_close(got, expected, "merge_heads(y)", atol=0, hint=HINT_MERGE)


def test_merge_is_the_inverse_of_split(stage):
    module = make(stage, d_model=8, n_heads=2)
    x = torch.randn(3, 5, 8)
    split = call(module.split_heads, x, what="split_heads(x)")
    assert_tensor(split, "split_heads(x)", shape=(3, 2, 5, 4), dtype=torch.float32, hint="(B, H, S, Dh).")
    assert_close(call(module.merge_heads, split, what="merge_heads(split_heads(x))"), x, "merge_heads(split_heads(x))", atol=0,
                 hint="merge_heads must undo split_heads exactly. " + HINT_MERGE)


# ---------------------------------------------------------------------------------------------
# against torch.nn.MultiheadAttention


def test_self_attention_matches_torch(stage):
    module = make(stage, d_model=8, n_heads=2).eval()
    x = torch.randn(2, 5, 8)
    expected = run_oracle(torch_oracle(module, 8, 2), x, x, x)
    got = attend(module, x, x, x)
    # atol 1e-5: two matrix products, a softmax and two more matrix products in float32.
    assert_close(got, expected, "self-attention vs torch.nn.MultiheadAttention", atol=1e-5,
                 hint=HINT_ORACLE + " " + HINT_SPLIT, suspects=known_mistakes(module, 8, 2, x, x, x))


def test_self_attention_with_padding_mask_matches_torch(stage):
    module = make(stage, d_model=8, n_heads=4).eval()
    x = torch.randn(2, 5, 8)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    expected = run_oracle(torch_oracle(module, 8, 4), x, x, x, key_padding_mask=keep)
    got = attend(module, x, x, x, keep.view(2, 1, 1, 5))
    assert_close(got, expected, "self-attention with a (B, 1, 1, S) padding mask vs torch", atol=1e-5,
                 hint="The padding mask must reach the attention, and broadcast over heads and queries. " + HINT_ORACLE)


def test_self_attention_with_causal_and_padding_masks_matches_torch(stage):
    module = make(stage, d_model=8, n_heads=2).eval()
    x = torch.randn(2, 4, 8)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    mha = torch_oracle(module, 8, 2)
    assert_close(attend(module, x, x, x, causal), run_oracle(mha, x, x, x, attn_mask=causal),
                 "self-attention with an (S, S) causal mask vs torch", atol=1e-5,
                 hint="Pass the mask to the attention unchanged: True = may attend. " + HINT_ORACLE)
    assert_close(attend(module, x, x, x, keep.view(2, 1, 1, 4) & causal),
                 run_oracle(mha, x, x, x, attn_mask=causal, key_padding_mask=keep),
                 "self-attention with a combined (B, 1, S, S) mask vs torch", atol=1e-5, hint=HINT_ORACLE)


def test_cross_attention_matches_torch(stage):
    module = make(stage, d_model=12, n_heads=3).eval()
    target, memory = torch.randn(2, 3, 12), torch.randn(2, 6, 12)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    expected = run_oracle(torch_oracle(module, 12, 3), target, memory, memory, key_padding_mask=keep)
    got = attend(module, target, memory, memory, keep.view(2, 1, 1, 6))
    assert_tensor(got, "cross-attention output", shape=(2, 3, 12), dtype=torch.float32, hint="(B, Sq, D).")
    assert_close(got, expected, "cross-attention (Sq=3, Sk=6) vs torch", atol=1e-5,
                 hint="In cross-attention the queries come from `query` and the keys and values from `key` and "
                      "`value`: k_proj(key), v_proj(value), not k_proj(query). " + HINT_ORACLE)


def test_without_bias_matches_torch(stage):
    module = make(stage, d_model=8, n_heads=2, bias=False).eval()
    query, memory = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    expected = run_oracle(torch_oracle(module, 8, 2, bias=False), query, memory, memory)
    assert_close(attend(module, query, memory, memory), expected, "bias=False vs torch", atol=1e-5, hint=HINT_ORACLE)


def test_output_projection_is_applied_last(stage):
    """With out_proj.weight = 0 every output vector must be exactly out_proj.bias."""
    module = make(stage, d_model=8, n_heads=2).eval()
    with torch.no_grad():
        module.out_proj.weight.zero_()
        module.out_proj.bias.copy_(torch.arange(8.0))
    x = torch.randn(2, 3, 8)
    got = attend(module, x, x, x)
    assert_tensor(got, "output", shape=(2, 3, 8), dtype=torch.float32, hint="(B, Sq, D).")
    assert_close(got, torch.arange(8.0).expand(2, 3, 8), "output with a zero out_proj weight", atol=0,
                 hint="The merged heads must go through the output projection, out_proj, last.")


# ---------------------------------------------------------------------------------------------
# training behaviour


def test_gradients_reach_every_parameter_and_match_torch(stage):
    module = make(stage, d_model=8, n_heads=2).train()
    mha = torch_oracle(module, 8, 2)
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    upstream = torch.randn(2, 3, 8)
    (run_oracle(mha, query, memory, memory) * upstream).sum().backward()
    (attend(module, query, memory, memory) * upstream).sum().backward()
    expected = {
        "q_proj": (mha.in_proj_weight.grad[:8], mha.in_proj_bias.grad[:8]),
        "k_proj": (mha.in_proj_weight.grad[8:16], mha.in_proj_bias.grad[8:16]),
        "v_proj": (mha.in_proj_weight.grad[16:], mha.in_proj_bias.grad[16:]),
        "out_proj": (mha.out_proj.weight.grad, mha.out_proj.bias.grad),
    }
    for name in expected:
        layer = getattr(module, name)
        if layer.weight.grad is None or layer.bias.grad is None:
            fail(f"{name} got no gradient after backward", "Every projection must be used in forward "
                 "(q_proj on query, k_proj on key, v_proj on value, out_proj last), with differentiable "
                 "operations only (no .detach(), no .data).", "v_proj(value) is never computed" if name == "v_proj" else "")
    for name, (weight_grad, bias_grad) in expected.items():
        layer = getattr(module, name)
        assert_close(layer.weight.grad, weight_grad, f"{name}.weight.grad", atol=1e-5, hint=HINT_ORACLE)
        assert_close(layer.bias.grad, bias_grad, f"{name}.bias.grad", atol=1e-5, hint=HINT_ORACLE)


def test_dropout_is_active_in_training_and_off_in_eval_mode(stage):
    module = make(stage, d_model=8, n_heads=2, dropout=0.5)
    x = torch.randn(2, 6, 8)
    module.eval()
    first, second = attend(module, x, x, x), attend(module, x, x, x)
    assert_close(second, first, "two calls in eval mode with dropout=0.5", atol=0,
                 hint="Dropout must be off in eval mode: pass self.dropout if self.training else 0.0.")
    assert_close(first, run_oracle(torch_oracle(module, 8, 2), x, x, x), "eval mode with dropout=0.5 vs torch",
                 atol=1e-5, hint="In eval mode the dropout probability must not matter (pass 0.0 when not training).")
    module.train()
    if torch.allclose(attend(module, x, x, x), first, atol=1e-6):
        fail("in training mode with dropout=0.5 the output equals the eval-mode output",
             "Pass the dropout probability to the attention while self.training is True.")


def test_does_not_call_torch_attention(stage, monkeypatch):
    module = make(stage, d_model=8, n_heads=2).eval()
    x = torch.randn(2, 3, 8)

    def forbidden(*args, **kwargs):
        raise AssertionError("a torch attention function was called\n  Likely cause: use your own "
                             "scaled_dot_product_attention from stage 3, not torch's or nn.MultiheadAttention.")

    monkeypatch.setattr(F, "scaled_dot_product_attention", forbidden)
    monkeypatch.setattr(F, "multi_head_attention_forward", forbidden)
    got = attend(module, x, x, x)
    assert_tensor(got, "output", shape=(2, 3, 8), dtype=torch.float32, hint="(B, Sq, D).")
