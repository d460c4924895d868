"""Stage 18: RMSNorm and the pre-norm decoder block.

Oracles: torch.nn.RMSNorm (and torch.nn.functional.rms_norm) with copied weights; a hand-worked
RMSNorm example; and a decoder block assembled here from torch ops on the block's copied weights:
rms_norm, q/k/v projections (with their biases, if any), RoPE written out,
scaled_dot_product_attention with enable_gqa=True, SwiGLU with z * sigmoid(z). The learner's
RMSNorm must not call torch's (patched to raise).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_in_place_safe, assert_tensor, call, fail

B, S, D, H, HKV, FF = 2, 5, 16, 4, 2, 24
DH = D // H

HINT_RMS = ("RMSNorm is x / sqrt(mean(x²) + eps) * weight over the last axis: no mean is subtracted (that "
            "would be LayerNorm) and there is no bias.")
HINT_EPS = "eps goes INSIDE the square root: sqrt(mean(x²) + eps), not sqrt(mean(x²)) + eps."
HINT_PRE_NORM = ("Pre-norm: each sub-layer reads its NORMALISED input (attn_norm before attention, ffn_norm "
                 "before the feed-forward), the skip adds the raw, un-normalised x (and then h), and there "
                 "is no norm after the sum.")
HINT_NORMS = ("Two different RMSNorms: attn_norm before attention and ffn_norm before the feed-forward; "
              "each has its own weight.")
HINT_AUX = ("forward returns (out, aux): aux is the MixtureOfExperts' load-balancing loss, or a 0-dim zero "
            "tensor (x.new_zeros(())) for the dense SwiGLU.")
HINT_QKV_BIAS = ("Pass qkv_bias through to GroupedQueryAttention: with qkv_bias=True (Qwen2) its q_proj, k_proj and "
                 "v_proj carry biases, and o_proj never has one.")
HINT_CAUSAL = ("Pass the mask (and rope, and cache) through to self.attn: with the causal mask a later token "
               "must not change an earlier position's output.")


def forbid_torch_rms_norm(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        fail("your RMSNorm called torch's rms_norm", "Write the formula yourself: torch.nn.RMSNorm is the test's oracle.")

    monkeypatch.setattr(F, "rms_norm", forbidden)


def causal(length: int) -> torch.Tensor:
    return torch.zeros(length, length).masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))


def rope_tables(head_size: int, length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    half = head_size // 2
    angles = torch.tensor([[p * base ** (-2 * (j % half) / head_size) for j in range(head_size)] for p in range(length)])
    return angles.cos(), angles.sin()


def randomise_norms_(block) -> None:
    """Give both norms distinct, non-trivial gains, so a missing or swapped norm shows."""
    with torch.no_grad():
        block.attn_norm.weight.copy_(1.0 + 0.5 * torch.randn(D))
        block.ffn_norm.weight.copy_(1.0 + 0.5 * torch.randn(D))


def w(module) -> torch.Tensor:
    return module.weight.detach().clone()


def b(module) -> torch.Tensor | float:
    """A projection's bias, copied, or 0.0 without one."""
    return 0.0 if module.bias is None else module.bias.detach().clone()


def attention_oracle(attn, x, mask, rope) -> torch.Tensor:
    batch, length, _ = x.shape
    q = (x @ w(attn.q_proj).T + b(attn.q_proj)).view(batch, length, H, DH).transpose(1, 2)
    k = (x @ w(attn.k_proj).T + b(attn.k_proj)).view(batch, length, HKV, DH).transpose(1, 2)
    v = (x @ w(attn.v_proj).T + b(attn.v_proj)).view(batch, length, HKV, DH).transpose(1, 2)
    if rope is not None:
        cos, sin = rope

        def rotate(t):
            return t * cos + torch.cat([-t[..., DH // 2:], t[..., :DH // 2]], dim=-1) * sin

        q, k = rotate(q), rotate(k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return out.transpose(1, 2).reshape(batch, length, D) @ w(attn.o_proj).T


def swiglu_oracle(ffn, x) -> torch.Tensor:
    gate = x @ w(ffn.gate_proj).T
    return (gate * torch.sigmoid(gate) * (x @ w(ffn.up_proj).T)) @ w(ffn.down_proj).T


def block_oracle(block, x, mask=None, rope=None, eps=1e-5, ffn=None) -> torch.Tensor:
    """h = x + attn(rms(x)); out = h + ffn(rms(h)), every piece from torch ops on copied weights."""
    with torch.no_grad():
        h = x + attention_oracle(block.attn, F.rms_norm(x, (D,), w(block.attn_norm), eps), mask, rope)
        normed = F.rms_norm(h, (D,), w(block.ffn_norm), eps)
        return h + (ffn(normed) if ffn is not None else swiglu_oracle(block.ffn, normed))


def call_block(block, x, **kwargs):
    __tracebackhide__ = True
    with torch.no_grad():
        result = call(block, x, what="DecoderBlock(x)", **kwargs)
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"DecoderBlock.forward: expected a tuple (out, aux), got {type(result).__name__}", HINT_AUX)
    return result


# ----------------------------------------------------------------------------- RMSNorm

def test_rmsnorm_has_a_ones_weight_and_keeps_the_shape(stage):
    norm = stage.RMSNorm(D)
    if not isinstance(norm.weight, nn.Parameter):
        fail(f"RMSNorm.weight: expected an nn.Parameter, got {type(norm.weight).__name__}",
             "The gain is a learnable nn.Parameter of d_model ones.")
    assert_close(norm.weight.detach(), torch.ones(D), "RMSNorm.weight at initialisation", atol=0.0, hint=HINT_RMS)
    with torch.no_grad():
        out = call(norm, torch.randn(B, S, D), what="RMSNorm(x)")
    assert_tensor(out, "RMSNorm(x)", shape=(B, S, D), dtype=torch.float32, hint=HINT_RMS)


def test_rmsnorm_hand_worked_example(stage):
    """x = [1, 2, 3, 4], eps = 0: mean(x²) = 30 / 4 = 7.5, sqrt(7.5) = 2.7386128.

    RMSNorm(x) = [0.3651484, 0.7302967, 1.0954451, 1.4605935]. (Subtracting the mean first would give
    LayerNorm's [-1.3416, -0.4472, 0.4472, 1.3416].)
    """
    norm = stage.RMSNorm(4, eps=0.0)
    with torch.no_grad():
        out = call(norm, torch.tensor([1.0, 2.0, 3.0, 4.0]), what="RMSNorm([1, 2, 3, 4])")
    assert_close(out, torch.tensor([0.3651484, 0.7302967, 1.0954451, 1.4605935]), "RMSNorm([1, 2, 3, 4])",
                 atol=1e-6, hint=HINT_RMS)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_rmsnorm_equals_torch_rmsnorm_with_the_same_weight(stage, monkeypatch, eps):
    """Inputs with a non-zero mean (a mean subtraction shows) and small entries (eps = 0.1 is then
    comparable to mean(x²), so where eps sits shows)."""
    x = 0.3 * torch.randn(B, S, D) + 0.4
    theirs = nn.RMSNorm(D, eps=eps)
    mine = stage.RMSNorm(D, eps=eps)
    with torch.no_grad():
        theirs.weight.copy_(1.0 + 0.5 * torch.randn(D))
        mine.weight.copy_(theirs.weight)
        expected = theirs(x)
    forbid_torch_rms_norm(monkeypatch)
    with torch.no_grad():
        out = call(mine, x, what="RMSNorm(x)")
    assert_close(out, expected, f"RMSNorm(x), eps={eps}", atol=1e-6, hint=HINT_RMS + " " + HINT_EPS)


def test_rmsnorm_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    assert_in_place_safe(stage.RMSNorm(D), torch.randn(B, S, D), what="RMSNorm(x)")


# ----------------------------------------------------------------------------- DecoderBlock: structure

def test_block_has_two_norms_attention_and_a_swiglu_or_experts(stage):
    block = stage.DecoderBlock(D, H, HKV, FF)
    for name, cls in (("attn_norm", stage.RMSNorm), ("attn", stage.GroupedQueryAttention),
                      ("ffn_norm", stage.RMSNorm), ("ffn", stage.SwiGLU)):
        if not isinstance(getattr(block, name, None), cls):
            fail(f"DecoderBlock.{name}: expected a {cls.__name__}, got {type(getattr(block, name, None)).__name__}",
                 HINT_PRE_NORM)
    if block.attn_norm is block.ffn_norm:
        fail("attn_norm and ffn_norm are the same module", HINT_NORMS)
    moe_block = stage.DecoderBlock(D, H, HKV, FF, n_experts=4, top_k=2)
    if not isinstance(moe_block.ffn, stage.MixtureOfExperts):
        fail(f"DecoderBlock(n_experts=4).ffn: expected a MixtureOfExperts, got {type(moe_block.ffn).__name__}",
             "n_experts > 0 selects MixtureOfExperts(d_model, d_ff, n_experts, top_k) as the feed-forward.")


def test_dense_block_returns_the_output_and_a_zero_scalar_aux(stage):
    out, aux = call_block(stage.DecoderBlock(D, H, HKV, FF), torch.randn(B, S, D), mask=causal(S))
    assert_tensor(out, "block output", shape=(B, S, D), dtype=torch.float32, hint=HINT_PRE_NORM)
    assert_tensor(aux, "aux of a dense block", shape=(), dtype=torch.float32, hint=HINT_AUX)
    assert_close(aux, torch.tensor(0.0), "aux of a dense block", atol=0.0, hint=HINT_AUX)


def test_block_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    """As in training: the block's input is an activation that requires grad, used by the norm AND the skip,
    so adding into it in place (x += ...) breaks the backward pass (or changes the caller's tensor)."""
    block = stage.DecoderBlock(D, H, HKV, FF).eval()
    assert_in_place_safe(lambda x: block(x, mask=causal(S), rope=rope_tables(DH, S)), torch.randn(B, S, D),
                         what="DecoderBlock(x, mask, rope)")


# ----------------------------------------------------------------------------- DecoderBlock: invariants

def test_with_zeroed_sub_layers_the_skips_return_the_input_unchanged(stage):
    """o_proj and down_proj all zero: both sub-layers add nothing, so a pre-norm block is the identity.
    A post-norm block (norm after the sum), or a skip that carries norm(x), would change x."""
    block = stage.DecoderBlock(D, H, HKV, FF)
    randomise_norms_(block)
    with torch.no_grad():
        block.attn.o_proj.weight.zero_()
        block.ffn.down_proj.weight.zero_()
    x = 3.0 * torch.randn(B, S, D) + 1.0
    out, _ = call_block(block, x, mask=causal(S))
    assert_close(out, x, "block output with zeroed sub-layers", atol=0.0, hint=HINT_PRE_NORM)


def test_a_later_token_does_not_change_earlier_outputs(stage):
    block = stage.DecoderBlock(D, H, HKV, FF)
    x = torch.randn(1, S, D)
    changed = x.clone()
    changed[0, -1] = torch.randn(D)
    rope = rope_tables(DH, S)
    out, _ = call_block(block, x, mask=causal(S), rope=rope)
    out_changed, _ = call_block(block, changed, mask=causal(S), rope=rope)
    assert_close(out_changed[:, :-1], out[:, :-1], "outputs at positions 0..S-2 after changing the last token",
                 atol=1e-6, hint=HINT_CAUSAL)
    if torch.allclose(out_changed[:, -1], out[:, -1]):
        fail("changing the last token did not change the last output", HINT_PRE_NORM)


# ----------------------------------------------------------------------------- DecoderBlock: the oracle

def test_dense_block_equals_pre_norm_attention_and_swiglu_from_torch_ops(stage):
    block = stage.DecoderBlock(D, H, HKV, FF, norm_eps=1e-5)
    randomise_norms_(block)
    x, mask, rope = 2.0 * torch.randn(B, S, D), causal(S), rope_tables(DH, S)
    expected = block_oracle(block, x, mask, rope)
    out, _ = call_block(block, x, mask=mask, rope=rope)
    assert_close(out, expected, "DecoderBlock output", atol=1e-5, hint=HINT_PRE_NORM + " " + HINT_NORMS)


def test_norm_eps_reaches_both_norms(stage):
    block = stage.DecoderBlock(D, H, HKV, FF, norm_eps=0.5)
    randomise_norms_(block)
    x, mask = 0.5 * torch.randn(B, S, D), causal(S)
    expected = block_oracle(block, x, mask, eps=0.5)
    out, _ = call_block(block, x, mask=mask)
    assert_close(out, expected, "DecoderBlock output with norm_eps=0.5", atol=1e-5,
                 hint="Pass norm_eps to both RMSNorm(d_model, norm_eps). " + HINT_EPS)


def test_qkv_bias_reaches_the_attention_and_its_biases_are_used(stage):
    """qkv_bias=True makes a Qwen2 layer: biases on q, k and v (set here to about 1), none on o_proj."""
    block = stage.DecoderBlock(D, H, HKV, FF, qkv_bias=True)
    biased = [name for name in ("q_proj", "k_proj", "v_proj", "o_proj") if getattr(block.attn, name).bias is not None]
    if biased != ["q_proj", "k_proj", "v_proj"]:
        fail(f"DecoderBlock(..., qkv_bias=True): the attention's projections with a bias are {biased}, expected "
             "['q_proj', 'k_proj', 'v_proj']", HINT_QKV_BIAS)
    randomise_norms_(block)
    with torch.no_grad():
        for name in biased:
            getattr(block.attn, name).bias.normal_(0.0, 1.0)
    x, mask, rope = torch.randn(B, S, D), causal(S), rope_tables(DH, S)
    expected = block_oracle(block, x, mask, rope)
    out, _ = call_block(block, x, mask=mask, rope=rope)
    assert_close(out, expected, "DecoderBlock output with q, k, v biases", atol=1e-5, hint=HINT_QKV_BIAS)


def test_expert_block_with_every_expert_chosen_matches_a_dense_mixture_and_aux_is_one(stage):
    """n_experts = top_k = 4: every token uses every expert, weighted by softmax(router logits); then
    every f_e = 1/4, so aux = E * sum_e P_e / E = 1 exactly."""
    block = stage.DecoderBlock(D, H, HKV, FF, n_experts=4, top_k=4)
    randomise_norms_(block)
    moe = block.ffn

    def mixture(normed):
        probs = torch.softmax(normed @ w(moe.router).T, dim=-1)
        return sum(probs[..., e:e + 1] * swiglu_oracle(moe.experts[e], normed) for e in range(4))

    x, mask = torch.randn(B, S, D), causal(S)
    expected = block_oracle(block, x, mask, ffn=mixture)
    out, aux = call_block(block, x, mask=mask)
    assert_close(out, expected, "expert block output", atol=1e-5, hint=HINT_PRE_NORM)
    assert_tensor(aux, "aux of an expert block", shape=(), dtype=torch.float32, hint=HINT_AUX)
    assert_close(aux, torch.tensor(1.0), "aux with every expert chosen", atol=1e-6,
                 hint="Return the MixtureOfExperts' aux loss as the block's aux. " + HINT_AUX)


# ----------------------------------------------------------------------------- edge cases

def test_chunks_through_a_cache_equal_the_whole_sequence(stage):
    """Positions 0..2 then 3..4 through one KVCache, with mask (n, start + n) and rope rows for the chunk."""
    block = stage.DecoderBlock(D, H, HKV, FF)
    randomise_norms_(block)
    x, (cos, sin) = torch.randn(B, S, D), rope_tables(DH, S)
    expected = block_oracle(block, x, causal(S), (cos, sin))
    cache = stage.KVCache()
    first, _ = call_block(block, x[:, :3], mask=causal(3), rope=(cos[:3], sin[:3]), cache=cache)
    tail_mask = torch.zeros(2, 5).masked_fill(torch.tensor([[False] * 4 + [True], [False] * 5]), float("-inf"))
    second, _ = call_block(block, x[:, 3:], mask=tail_mask, rope=(cos[3:], sin[3:]), cache=cache)
    assert_close(torch.cat([first, second], dim=1), expected, "chunked block outputs vs all at once", atol=1e-5,
                 hint=HINT_CAUSAL)


def test_a_single_position_batch_of_one(stage):
    block = stage.DecoderBlock(D, H, HKV, FF)
    randomise_norms_(block)
    x = torch.randn(1, 1, D)
    expected = block_oracle(block, x, causal(1), rope_tables(DH, 1))
    out, _ = call_block(block, x, mask=causal(1), rope=rope_tables(DH, 1))
    assert_close(out, expected, "block output for one position", atol=1e-5, hint=HINT_PRE_NORM)
