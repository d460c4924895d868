"""Stage 16: grouped-query attention and the KV cache.

Oracles, none of which call the learner's code: torch.nn.functional.scaled_dot_product_attention
with enable_gqa=True on q, k, v computed here from the module's copied projection weights and
q/k/v biases (and rotated here by RoPE written out in this file); torch.nn.MultiheadAttention with
the same weights when n_kv_heads = n_heads; a slow per-head loop when n_kv_heads = 1 (multi-query attention); and a
loop for repeat_kv. Masks are additive floats (0 allowed, -inf blocked), built here.

The learner's forward must not call scaled_dot_product_attention: the oracle tests patch it to
raise while the learner's module runs (after the oracle has been computed).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_tensor, fail

B, S, D, H, HKV = 2, 5, 16, 4, 2
DH = D // H

HINT_SHAPES = ("q_proj: D -> H * Dh, k_proj and v_proj: D -> Hkv * Dh, o_proj: H * Dh -> D; split into "
               "(B, H, S, Dh) and (B, Hkv, S, Dh), and merge back to (B, S, D) before o_proj.")
HINT_REPEAT = ("Each group of n_rep = H / Hkv CONSECUTIVE query heads shares one K/V head: query head h reads "
               "K/V head h // n_rep, so [a, b] becomes [a, a, b, b] (repeat_interleave). torch.repeat / tile "
               "gives [a, b, a, b] and pairs query heads with the wrong keys.")
HINT_ATTEND = ("Per query head: softmax(q kᵀ / sqrt(Dh) + mask) v, with Dh the head size (not D), the additive "
               "mask ADDED to the scores before the softmax, then heads merged as (B, S, H * Dh) and o_proj. "
               "Split heads with view(B, S, H, Dh).transpose(1, 2), not a direct view to (B, H, S, Dh).")
HINT_ROPE = ("RoPE rotates queries and keys by the rows it is given: apply_rope(q, cos, sin) and apply_rope(k, cos, "
             "sin) with the layout your tensors are in, before the keys go into the cache.")
HINT_ROPE_VALUES = ("The output is what rotating the VALUES too would give: RoPE rotates queries and keys only; "
                    "values carry content, not position.")
HINT_SCALE = ("The scores are divided by sqrt(Dh), with Dh the head size (not D): D is the model width, and each score "
              "is the dot product of one query head with one key head, two Dh-long vectors.")
HINT_MASK = ("The mask never reaches the scores: the additive mask ADDED to the scores before the softmax (0 where "
             "allowed, -inf where blocked) is what keeps a query from its future keys.")
HINT_NO_ROPE = ("The output is attention without any rotation: when rope = (cos, sin) is given, queries and keys are "
                "rotated by those rows (stage 14's apply_rope) before the scores.")
HINT_FOLLOW_ON = ("This follows from an earlier failure: without RoPE, cache or dropout the output already differs "
                  "from torch's attention (test_matches_torch_attention... names the cause). Fix that first.")
HINT_IN_PLACE = ("forward must not change its inputs: an operation in place (x += ..., scores.masked_fill_(...), "
                 "q.mul_(...), mask += ...) modifies the caller's tensors or ones autograd still needs.")
HINT_DROPOUT = ("Attention dropout must be off in eval mode: F.dropout(weights, p, training=self.training) or an "
                "nn.Dropout module. Is dropout left on in eval?")
HINT_CACHE = ("With a cache, x holds only the new positions: project and rotate them, append k and v to the "
              "cache (cache.update), and attend over everything it returns. The caller passes rope rows and "
              "an additive mask for those positions.")
HINT_CACHE_HEADS = ("The cache stores the Hkv key/value heads, rotated, BEFORE repeat_kv: storing H repeated heads "
                    "throws away the memory saving that is the point of GQA.")
HINT_KEYS_TWICE = ("cache.update already returns the cached keys WITH the new ones appended; do not concatenate k "
                   "again (nor v with the values): attend over exactly what it returns.")
HINT_ROPE_TWICE = ("rope holds the rows of the new positions already (the caller sliced them); slicing again by "
                   "cache.length offsets them twice. Apply cos and sin to q and k as they come.")
HINT_QKV_BIAS = ("qkv_bias=True is Qwen2's layout: q_proj, k_proj and v_proj each get a bias (nn.Linear's bias "
                 "argument), while o_proj never has a bias, whatever qkv_bias says. With qkv_bias=False no "
                 "projection has one (Llama, Mistral).")
HINT_BIAS_USED = ("Are the q, k and v biases added? A projection WITHOUT its bias gives other queries, keys or "
                  "values: call the nn.Linear modules themselves (q_proj(x), not x @ q_proj.weight.T).")
HINT_FORBIDDEN = ("Compute the attention yourself (scores, additive mask, softmax, dropout, weighted sum): "
                  "torch.nn.functional.scaled_dot_product_attention is the test's oracle.")


# ----------------------------------------------------------------------------- helpers (the oracle side)

def causal(q_len: int, kv_len: int) -> torch.Tensor:
    """Additive causal mask for the last q_len of kv_len positions, built by a loop."""
    allowed = torch.tensor([[j <= kv_len - q_len + i for j in range(kv_len)] for i in range(q_len)])
    return torch.zeros(q_len, kv_len).masked_fill(~allowed, float("-inf"))


def rope_tables(head_size: int, length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-split RoPE tables written out with math.cos / math.sin."""
    half = head_size // 2
    angles = [[p * base ** (-2 * (j % half) / head_size) for j in range(head_size)] for p in range(length)]
    return (torch.tensor([[math.cos(a) for a in row] for row in angles]),
            torch.tensor([[math.sin(a) for a in row] for row in angles]))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on (B, heads, S, Dh), written here: pairs (j, j + Dh/2)."""
    half = x.size(-1) // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def weights_of(module) -> dict[str, torch.Tensor]:
    return {name: getattr(module, name).weight.detach().clone() for name in ("q_proj", "k_proj", "v_proj", "o_proj")}


def bias_of(linear) -> torch.Tensor | float:
    """A projection's bias, copied, or 0.0 when it has none (o_proj's is never used: it has none)."""
    return 0.0 if linear.bias is None else linear.bias.detach().clone()


def projections(module, x: torch.Tensor, n_heads: int, n_kv_heads: int, rope=None, biases: bool = True):
    """q (B, H, S, Dh), k and v (B, Hkv, S, Dh) from copied weights (and q/k/v biases), rotated by the test's RoPE."""
    w = weights_of(module)
    b = {name: bias_of(getattr(module, name)) if biases else 0.0 for name in ("q_proj", "k_proj", "v_proj")}
    batch, length, d_model = x.shape
    head_size = d_model // n_heads
    q = (x @ w["q_proj"].T + b["q_proj"]).view(batch, length, n_heads, head_size).transpose(1, 2)
    k = (x @ w["k_proj"].T + b["k_proj"]).view(batch, length, n_kv_heads, head_size).transpose(1, 2)
    v = (x @ w["v_proj"].T + b["v_proj"]).view(batch, length, n_kv_heads, head_size).transpose(1, 2)
    if rope is not None:
        q, k = rotate(q, *rope), rotate(k, *rope)
    return q, k, v, w["o_proj"]


def oracle(module, x: torch.Tensor, n_heads: int = H, n_kv_heads: int = HKV, mask=None, rope=None) -> torch.Tensor:
    """torch's scaled_dot_product_attention with enable_gqa=True on the module's copied weights."""
    q, k, v, w_o = projections(module, x, n_heads, n_kv_heads, rope)
    with torch.no_grad():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (B, H, S, Dh)
    batch, _, length, _ = out.shape
    return out.transpose(1, 2).reshape(batch, length, -1) @ w_o.T


def attention(q, k, v, w_o, mask=None, scale=None, tile=False) -> torch.Tensor:
    """torch's attention on q (B, H, S, Dh) and k, v (B, Hkv, St, Dh), heads merged and projected by w_o.

    tile=True pairs the query heads with the K/V heads as torch.repeat would ([a, b] -> [a, b, a, b]): a known mistake.
    """
    n_rep = q.size(1) // k.size(1)
    k, v = (k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)) if tile else (
        k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1))
    with torch.no_grad():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, H, S, Dh)
    batch, _, length, _ = out.shape
    return out.transpose(1, 2).reshape(batch, length, -1) @ w_o.T


def known_mistakes(module, x, n_heads: int = H, n_kv_heads: int = HKV, mask=None, rope=None) -> dict:
    """What classic mistakes output on these inputs, each with its cause (checks.assert_close's ``suspects``).

    A mistake that makes no difference on these inputs (tiling with one K/V head, a mask of zeros) is left out.
    """
    q, k, v, w_o = projections(module, x, n_heads, n_kv_heads, rope)
    right = attention(q, k, v, w_o, mask)
    d_model = x.size(-1)
    mistakes = {
        "your output equals attention with the K/V heads tiled [a, b, a, b]":
            (attention(q, k, v, w_o, mask, tile=True), HINT_REPEAT),
        f"your output equals attention with the scores divided by sqrt(D) = sqrt({d_model})":
            (attention(q, k, v, w_o, mask, scale=1 / math.sqrt(d_model)), HINT_SCALE),
    }
    if mask is not None:
        mistakes["your output equals attention without the mask"] = (attention(q, k, v, w_o), HINT_MASK)
    if rope is not None:
        mistakes["your output equals attention with the values rotated too"] = (
            attention(q, k, rotate(v, *rope), w_o, mask), HINT_ROPE_VALUES)
        plain_q, plain_k, _, _ = projections(module, x, n_heads, n_kv_heads)
        mistakes["your output equals attention with no RoPE at all"] = (attention(plain_q, plain_k, v, w_o, mask),
                                                                         HINT_NO_ROPE)
    return {words: (wrong, why) for words, (wrong, why) in mistakes.items() if not torch.allclose(wrong, right, atol=1e-3)}


def plain_attention_is_off(module, monkeypatch) -> bool:
    """True when the module is already wrong without RoPE, cache or dropout: later failures follow from that."""
    try:
        probe = type(module)(module.q_proj.in_features, module.n_heads, module.n_kv_heads)  # no dropout
        x, mask = torch.randn(B, S, module.q_proj.in_features), causal(S, S)
        expected = oracle(probe, x, probe.n_heads, probe.n_kv_heads, mask=mask)
        out = run(probe, x, monkeypatch, mask=mask)
    except Exception:  # noqa: BLE001 - any failure here is the earlier failure
        return True
    return type(out) is not torch.Tensor or out.shape != expected.shape or not torch.allclose(out, expected, atol=1e-5)


def cause(module, monkeypatch, hint: str) -> str:
    """``hint``, unless the failure follows from plain attention being wrong."""
    return HINT_FOLLOW_ON if plain_attention_is_off(module, monkeypatch) else hint


def forbid_torch_attention(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        fail("your forward called torch.nn.functional.scaled_dot_product_attention", HINT_FORBIDDEN)

    monkeypatch.setattr(F, "scaled_dot_product_attention", forbidden)


def run(module, x, monkeypatch, **kwargs) -> torch.Tensor:
    """The learner's forward under no_grad, with torch's attention forbidden while it runs.

    With a cache, a shape error inside forward (scores and mask of different lengths) is reported
    as a failure with the cache hint rather than as a bare traceback.
    """
    cache = kwargs.get("cache")
    before = cache.length if cache is not None else 0
    forbid_torch_attention(monkeypatch)
    try:
        with torch.no_grad():
            out = module(x, **kwargs)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        if cache is None:
            raise
        monkeypatch.undo()  # torch's attention back for the check below
        observed, why = ("", HINT_FOLLOW_ON) if plain_attention_is_off(module, monkeypatch) else \
            cache_shape_error(error, kwargs.get("rope"), before, x.size(1), cache.length - before)
        if not why:
            check_growth(cache, before, x.size(1))
        fail(f"forward with a KVCache and x of shape {tuple(x.shape)} raised RuntimeError: "
             f"{str(error).splitlines()[0][:160]}", why or HINT_CACHE, observed)
    finally:
        monkeypatch.undo()
    if cache is not None:
        check_growth(cache, before, x.size(1))
    return out


def cache_shape_error(error: RuntimeError, rope, before: int, new: int, grown: int) -> tuple[str, str]:
    """(observed, cause) when the sizes a broadcast error names fit a known cache mistake, else ("", "")."""
    found = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)", str(error))
    sizes = sorted(int(n) for n in found.groups()) if found else []
    if sizes == [before + new, before + 2 * new]:  # the scores' keys against the mask's columns
        return (f"the attention saw {before + 2 * new} keys for {before} cached + {new} new positions: "
                "the new positions twice", HINT_KEYS_TWICE)
    if rope is None or not before:
        return "", ""
    left = max(0, min(new, rope[0].size(-2) - before))  # the rows passed, sliced again from row `before`
    if left not in (1, new) and sizes == sorted([left, new]):  # the rows against the new queries
        return (f"RoPE rows for {left} position(s) met {new} new position(s) at offset {before}: the {new} rows "
                f"passed, sliced again from row {before}", HINT_ROPE_TWICE)
    if left == 0 and new == 1 and grown == 0 and sizes == [before, before + new]:  # no row: an empty key went in
        return (f"the new position's key came out empty (the cache grew by 0; the attention saw only the {before} "
                f"cached keys): the 1 row passed, sliced again from row {before}, leaves none", HINT_ROPE_TWICE)
    return "", ""


def check_growth(cache, before: int, new: int) -> None:
    """The cache must grow by exactly the new positions: more means the keys went in twice."""
    grown = cache.length - before
    if grown != new:
        again = {before + new: f"the {before} cached position(s) went in again with the new ones",
                 2 * new: "the new positions went in twice"}.get(grown, "") if before != new else ""
        fail(f"the KVCache grew by {grown} positions during one forward with {new} new position(s) "
             f"(length {before} -> {cache.length})",
             "Call cache.update(k, v) exactly once per forward, with the new positions only, and attend over what "
             "it returns; appending twice (or re-appending the returned keys) duplicates positions."
             if grown > new else HINT_CACHE, again)


# ----------------------------------------------------------------------------- shapes and parameters

def test_forward_maps_batch_sequence_model_width_to_the_same_shape(stage, monkeypatch):
    module = stage.GroupedQueryAttention(D, H, HKV)
    out = run(module, torch.randn(B, S, D), monkeypatch)
    assert_tensor(out, "GroupedQueryAttention(x)", shape=(B, S, D), dtype=torch.float32, hint=HINT_SHAPES)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_projection_shapes_and_key_value_parameter_count_shrink_by_the_group_size(stage, n_kv_heads):
    """MHA's K and V have 2 * D * D weights; with Hkv heads they have 2 * D * Hkv * Dh: H / Hkv times fewer."""
    module = stage.GroupedQueryAttention(D, H, n_kv_heads)
    assert_equal((module.n_heads, module.n_kv_heads, module.head_size), (H, n_kv_heads, DH),
                 "(n_heads, n_kv_heads, head_size)", hint=HINT_SHAPES)
    assert_tensor(module.q_proj.weight, "q_proj.weight", shape=(H * DH, D), hint=HINT_SHAPES)
    assert_tensor(module.k_proj.weight, "k_proj.weight", shape=(n_kv_heads * DH, D), hint=HINT_SHAPES)
    assert_tensor(module.v_proj.weight, "v_proj.weight", shape=(n_kv_heads * DH, D), hint=HINT_SHAPES)
    assert_tensor(module.o_proj.weight, "o_proj.weight", shape=(D, H * DH), hint=HINT_SHAPES)
    kv_params = sum(p.numel() for name, p in module.named_parameters() if name.startswith(("k_proj", "v_proj")))
    assert_equal(kv_params, 2 * D * D // (H // n_kv_heads), f"K/V parameter count with Hkv={n_kv_heads}",
                 hint="qkv_bias=False by default (Llama has no projection biases); k_proj, v_proj map D -> Hkv * Dh.")


def test_qkv_bias_puts_biases_on_q_k_and_v_and_never_on_o_proj(stage):
    """Qwen2's layout: biases of H * Dh, Hkv * Dh and Hkv * Dh on q_proj, k_proj, v_proj; o_proj has none."""
    plain = stage.GroupedQueryAttention(D, H, HKV)
    biased = [name for name in ("q_proj", "k_proj", "v_proj", "o_proj") if getattr(plain, name).bias is not None]
    assert_equal(biased, [], "projections with a bias when qkv_bias=False", hint=HINT_QKV_BIAS)
    module = stage.GroupedQueryAttention(D, H, HKV, qkv_bias=True)
    for name, size in (("q_proj", H * DH), ("k_proj", HKV * DH), ("v_proj", HKV * DH)):
        bias = getattr(module, name).bias
        if bias is None:
            fail(f"GroupedQueryAttention(..., qkv_bias=True).{name} has no bias", HINT_QKV_BIAS)
        assert_tensor(bias, f"{name}.bias with qkv_bias=True", shape=(size,), dtype=torch.float32, hint=HINT_QKV_BIAS)
    if module.o_proj.bias is not None:
        fail("GroupedQueryAttention(..., qkv_bias=True).o_proj has a bias", HINT_QKV_BIAS)


def test_n_kv_heads_must_divide_n_heads_and_n_heads_must_divide_d_model(stage):
    for args, why in (((D, 4, 3), "n_kv_heads=3 does not divide n_heads=4"),
                      ((D, 6, 4), "n_kv_heads=4 does not divide n_heads=6"),
                      ((10, 4, 2), "n_heads=4 does not divide d_model=10")):
        with pytest.raises(ValueError):
            stage.GroupedQueryAttention(*args)
            fail(f"GroupedQueryAttention{args}: expected ValueError ({why}), but it was created",
                 "Check d_model % n_heads and n_heads % n_kv_heads in __init__ and raise ValueError.")


# ----------------------------------------------------------------------------- repeat_kv and the cache

def test_repeat_kv_has_repeat_interleave_semantics(stage):
    x = torch.randn(2, 3, 4, 5)  # (B, Hkv, S, Dh)
    out = stage.repeat_kv(x, 2)
    assert_tensor(out, "repeat_kv(x, 2)", shape=(2, 6, 4, 5), dtype=torch.float32, hint=HINT_REPEAT)
    expected = torch.stack([x[:, h // 2] for h in range(6)], dim=1)  # output head h is input head h // n_rep
    assert_close(out, expected, "repeat_kv(x, 2)", atol=0.0, hint=HINT_REPEAT)
    assert_close(stage.repeat_kv(x, 1), x, "repeat_kv(x, 1)", atol=0.0, hint="n_rep = 1 changes nothing.")


def test_kv_cache_appends_along_the_sequence_axis(stage):
    cache = stage.KVCache()
    assert_equal(cache.length, 0, "KVCache().length", hint="An empty cache has length 0.")
    k1, v1 = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    k2, v2 = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
    cache.update(k1, v1)
    keys, values = cache.update(k2, v2)
    assert_tensor(keys, "keys after two updates", shape=(2, 3, 5, 5), dtype=torch.float32, hint=HINT_CACHE)
    assert_close(keys, torch.cat([k1, k2], dim=2), "cached keys", atol=0.0,
                 hint="Append along the sequence axis (dim -2), old positions first.")
    assert_close(values, torch.cat([v1, v2], dim=2), "cached values", atol=0.0,
                 hint="Append along the sequence axis (dim -2), old positions first.")
    assert_equal(cache.length, 5, "cache.length after 4 + 1 positions", hint="length counts positions, not heads.")


# ----------------------------------------------------------------------------- the oracle

@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_matches_torch_attention_with_enable_gqa_and_a_causal_mask(stage, monkeypatch, n_kv_heads):
    module = stage.GroupedQueryAttention(D, H, n_kv_heads)
    x, mask = torch.randn(B, S, D), causal(S, S)
    expected = oracle(module, x, H, n_kv_heads, mask=mask)
    out = run(module, x, monkeypatch, mask=mask)
    assert_close(out, expected, f"GQA output (Hkv={n_kv_heads}) vs torch enable_gqa", atol=1e-5,
                 suspects=known_mistakes(module, x, H, n_kv_heads, mask=mask),
                 hint=HINT_REPEAT if n_kv_heads == 2 else HINT_ATTEND)


def test_without_a_mask_every_position_attends_everywhere(stage, monkeypatch):
    module = stage.GroupedQueryAttention(D, H, HKV)
    x = torch.randn(B, S, D)
    expected = oracle(module, x)
    assert_close(run(module, x, monkeypatch), expected, "GQA output, mask=None", atol=1e-5,
                 suspects=known_mistakes(module, x), hint=HINT_REPEAT)


def test_with_as_many_kv_heads_as_heads_it_is_torch_multi_head_attention(stage, monkeypatch):
    """Hkv = H: plain MHA. torch.nn.MultiheadAttention's in_proj_weight stacks W_q, W_k, W_v."""
    torch_mha = nn.MultiheadAttention(D, H, bias=False, batch_first=True)
    module = stage.GroupedQueryAttention(D, H, H)
    w_q, w_k, w_v = torch_mha.in_proj_weight.detach().chunk(3)
    with torch.no_grad():
        module.q_proj.weight.copy_(w_q)
        module.k_proj.weight.copy_(w_k)
        module.v_proj.weight.copy_(w_v)
        module.o_proj.weight.copy_(torch_mha.out_proj.weight)
        x, mask = torch.randn(B, S, D), causal(S, S)
        expected, _ = torch_mha(x, x, x, attn_mask=mask, need_weights=False)
    assert_close(run(module, x, monkeypatch, mask=mask), expected, "GQA(Hkv=H) vs nn.MultiheadAttention",
                 atol=1e-5, suspects=known_mistakes(module, x, H, H, mask=mask), hint=HINT_ATTEND)


def test_with_one_kv_head_every_query_head_reads_the_same_keys_and_values(stage, monkeypatch):
    """Hkv = 1 is multi-query attention; the oracle is a slow loop over heads sharing k[:, 0], v[:, 0]."""
    module = stage.GroupedQueryAttention(D, H, 1)
    x, mask = torch.randn(B, S, D), causal(S, S)
    q, k, v, w_o = projections(module, x, H, 1)
    heads = [torch.softmax(q[:, h] @ k[:, 0].transpose(-2, -1) / math.sqrt(DH) + mask, dim=-1) @ v[:, 0]
             for h in range(H)]  # each (B, S, Dh)
    expected = torch.cat(heads, dim=-1) @ w_o.T
    assert_close(run(module, x, monkeypatch, mask=mask), expected, "MQA output vs per-head loop", atol=1e-5,
                 suspects=known_mistakes(module, x, H, 1, mask=mask), hint=HINT_ATTEND)


def test_qkv_biases_are_added_to_the_projections_before_rope(stage, monkeypatch):
    """Biases of about 1 on q, k and v (set here): the oracle adds them to its projections, then rotates q and k."""
    module = stage.GroupedQueryAttention(D, H, HKV, qkv_bias=True)
    for name in ("q_proj", "k_proj", "v_proj"):
        if getattr(module, name).bias is None:
            fail(f"GroupedQueryAttention(..., qkv_bias=True).{name} has no bias", HINT_QKV_BIAS)
        with torch.no_grad():
            getattr(module, name).bias.normal_(0.0, 1.0)
    x, mask, rope = torch.randn(B, S, D), causal(S, S), rope_tables(DH, S)
    expected = oracle(module, x, mask=mask, rope=rope)
    q, k, v, w_o = projections(module, x, H, HKV, rope, biases=False)
    unbiased = attention(q, k, v, w_o, mask)
    suspects = {"your output equals attention without the q, k, v biases": (unbiased, HINT_BIAS_USED)}
    out = run(module, x, monkeypatch, mask=mask, rope=rope)
    assert_close(out, expected, "GQA output with q, k, v biases", atol=1e-5,
                 suspects=dict(known_mistakes(module, x, mask=mask, rope=rope), **suspects),
                 hint=cause(module, monkeypatch, HINT_BIAS_USED))


def test_rope_rotates_queries_and_keys_but_not_values(stage, monkeypatch):
    module = stage.GroupedQueryAttention(D, H, HKV)
    x, mask, rope = torch.randn(B, S, D), causal(S, S), rope_tables(DH, S)
    expected = oracle(module, x, mask=mask, rope=rope)
    out = run(module, x, monkeypatch, mask=mask, rope=rope)
    assert_close(out, expected, "GQA output with RoPE", atol=1e-5, suspects=known_mistakes(module, x, mask=mask, rope=rope),
                 hint=cause(module, monkeypatch, HINT_ROPE))


def test_a_1_10_512_input_with_4_heads_is_split_into_heads_of_size_128(stage, monkeypatch):
    """d_model = 512, H = 4: Dh = 128, so one sequence of 10 tokens gives q = (1, 10, 4, 128) viewed as
    (batch, sequence, heads, head size), or (1, 4, 10, 128) once the heads come first. With RoPE tables
    for Dh = 128 the output must be torch's attention on q and k rotated in that layout."""
    module = stage.GroupedQueryAttention(512, 4, 2)
    x, rope, mask = torch.randn(1, 10, 512), rope_tables(128, 10), causal(10, 10)
    expected = oracle(module, x, 4, 2, mask=mask, rope=rope)
    out = run(module, x, monkeypatch, mask=mask, rope=rope)
    assert_tensor(out, "output for x of shape (1, 10, 512)", shape=(1, 10, 512), dtype=torch.float32, hint=HINT_SHAPES)
    assert_close(out, expected, "output with D = 512, H = 4, Hkv = 2 and RoPE", atol=1e-5,
                 suspects=known_mistakes(module, x, 4, 2, mask=mask, rope=rope), hint=cause(module, monkeypatch,
                            "With D = 512 and H = 4 the head size is 128: view q as (1, 10, 4, 128) = (batch, sequence, "
                            "heads, head size), and rotate it with the layout argument matching the tensor you pass."))


def test_an_additive_padding_mask_broadcasts_over_heads_and_queries(stage, monkeypatch):
    """A (B, 1, 1, S) mask blocking the last two keys of row 1 and no key of row 0."""
    module = stage.GroupedQueryAttention(D, H, HKV)
    x = torch.randn(B, S, D)
    mask = torch.zeros(B, 1, 1, S)
    mask[1, ..., -2:] = float("-inf")
    expected = oracle(module, x, mask=mask)
    assert_close(run(module, x, monkeypatch, mask=mask), expected, "GQA output with a (B, 1, 1, S) mask", atol=1e-5,
                 suspects=known_mistakes(module, x, mask=mask), hint=cause(module, monkeypatch,
                            "The additive mask is added to the (B, H, S, St) scores and broadcasts; do not reshape it."))


def test_attention_dropout_is_off_in_eval_mode(stage, monkeypatch):
    module = stage.GroupedQueryAttention(D, H, HKV, dropout=0.5).eval()
    x, mask = torch.randn(B, S, D), causal(S, S)
    expected = oracle(module, x, mask=mask)
    assert_close(run(module, x, monkeypatch, mask=mask), expected, "eval-mode output with dropout=0.5", atol=1e-5,
                 hint=cause(module, monkeypatch, HINT_DROPOUT))


def test_attention_dropout_is_on_in_training_mode(stage, monkeypatch):
    module = stage.GroupedQueryAttention(D, H, HKV, dropout=0.5).train()
    x, mask = torch.randn(B, S, D), causal(S, S)
    expected = oracle(module, x, mask=mask)
    out = run(module, x, monkeypatch, mask=mask)
    assert_tensor(out, "training-mode output", shape=(B, S, D), dtype=torch.float32, hint=HINT_SHAPES)
    if torch.allclose(out, expected, atol=1e-4):
        fail("with dropout=0.5 in training mode the output equals the dropout-free attention",
             "Apply dropout to the attention weights (after the softmax) while self.training is True.")


# ----------------------------------------------------------------------------- the KV cache

def test_feeding_chunks_through_a_cache_equals_the_whole_sequence_at_once(stage, monkeypatch):
    """Chunks of 2, 1 and 2 positions with mask (n, start + n) and rope rows start .. start + n - 1."""
    module = stage.GroupedQueryAttention(D, H, HKV)
    x, (cos, sin) = torch.randn(B, S, D), rope_tables(DH, S)
    expected = oracle(module, x, mask=causal(S, S), rope=(cos, sin))
    _, k_all, v_all, _ = projections(module, x, H, HKV, rope=(cos, sin))
    cache = stage.KVCache()
    outs, start = [], 0
    for n in (2, 1, 2):
        rope = (cos[start:start + n], sin[start:start + n])
        out = run(module, x[:, start:start + n], monkeypatch, mask=causal(n, start + n), rope=rope, cache=cache)
        assert_tensor(out, f"output of the chunk at positions {start}..{start + n - 1}", shape=(B, n, D),
                      dtype=torch.float32, hint=HINT_CACHE)
        outs.append(out)
        start += n
    assert_close(torch.cat(outs, dim=1), expected, "chunked outputs vs all at once", atol=1e-5,
                 hint=cause(module, monkeypatch, HINT_CACHE))
    assert_equal(cache.length, S, "cache.length after 5 positions", hint=HINT_CACHE)
    assert_close(cache.keys, k_all, "cached keys (rotated, Hkv heads)", atol=1e-5, hint=HINT_CACHE_HEADS)
    assert_close(cache.values, v_all, "cached values (not rotated, Hkv heads)", atol=1e-5, hint=HINT_CACHE_HEADS)


def test_one_token_step_after_a_prompt_equals_the_last_row_of_the_full_pass(stage, monkeypatch):
    """Batch 1: a prompt of 4 positions, then one new token at position 4 (mask (1, 5) is all zeros)."""
    module = stage.GroupedQueryAttention(D, H, HKV)
    x, (cos, sin) = torch.randn(1, S, D), rope_tables(DH, S)
    expected = oracle(module, x, mask=causal(S, S), rope=(cos, sin))[:, -1:]
    cache = stage.KVCache()
    run(module, x[:, :4], monkeypatch, mask=causal(4, 4), rope=(cos[:4], sin[:4]), cache=cache)
    out = run(module, x[:, 4:], monkeypatch, mask=causal(1, 5), rope=(cos[4:], sin[4:]), cache=cache)
    assert_close(out, expected, "the generation step's output", atol=1e-5, hint=cause(module, monkeypatch, HINT_CACHE))


def test_without_a_mask_a_chunk_after_a_cached_prompt_sees_every_position_once(stage, monkeypatch):
    """A prompt of 1 position, then 2 new ones at offset 1, mask=None: the new queries attend to all 3 keys, each
    once, rotated by the rows the caller passes (positions 1 and 2). Two mistakes raise nothing here."""
    module = stage.GroupedQueryAttention(D, H, HKV)
    x, (cos, sin) = torch.randn(B, 3, D), rope_tables(DH, 3)
    expected = oracle(module, x, rope=(cos, sin))[:, 1:]
    q, k, v, w_o = projections(module, x, H, HKV, rope=(cos, sin))
    plain_q, plain_k, _, _ = projections(module, x, H, HKV)

    def rotated_by(rows):  # attention with the new queries and keys rotated by these (cos, sin) rows
        new_k = torch.cat([k[:, :, :1], rotate(plain_k[:, :, 1:], *rows)], dim=2)
        return attention(rotate(plain_q[:, :, 1:], *rows), new_k, v, w_o), HINT_ROPE_TWICE

    suspects = {  # rows 1..2 sliced again from row 1 leave row 2 alone, which broadcasts to both positions
        "your output equals attention over the 3 keys and the 2 new ones again (5 keys)":
            (attention(q[:, :, 1:], torch.cat([k, k[:, :, 1:]], dim=2), torch.cat([v, v[:, :, 1:]], dim=2), w_o),
             HINT_KEYS_TWICE),
        "your output equals attention with both new positions rotated as position 2 (the rows offset twice)":
            rotated_by((cos[2:], sin[2:])),
        "your output equals attention with the sin rows of position 2 for both new positions (offset twice)":
            rotated_by((cos[1:], sin[2:])),
    }
    cache = stage.KVCache()
    run(module, x[:, :1], monkeypatch, rope=(cos[:1], sin[:1]), cache=cache)
    out = run(module, x[:, 1:], monkeypatch, rope=(cos[1:], sin[1:]), cache=cache)
    assert_close(out, expected, "the chunk's output at offset 1, mask=None", atol=1e-5, suspects=suspects,
                 hint=cause(module, monkeypatch, HINT_CACHE))


# ----------------------------------------------------------------------------- in place

def test_forward_leaves_its_inputs_unchanged_and_backpropagates_twice(stage):
    module = stage.GroupedQueryAttention(D, H, HKV, dropout=0.1).train()  # training: dropout runs too
    x = torch.randn(B, S, D, requires_grad=True)
    mask, (cos, sin) = causal(S, S), rope_tables(DH, S)
    kept = [t.detach().clone() for t in (x, mask, cos, sin)]
    for attempt in (1, 2):
        try:
            out = module(x * 1.0, mask=mask, rope=(cos, sin))  # x * 1.0: an input autograd must keep
            assert_tensor(out, "GroupedQueryAttention(x)", shape=(B, S, D), dtype=torch.float32, hint=HINT_SHAPES)
            out.square().sum().backward()
        except RuntimeError as error:
            if "inplace" not in str(error):
                raise
            fail(f"forward, then backward (pass {attempt}): a tensor backward needs was modified in place: "
                 f"{str(error).splitlines()[0][:120]}", HINT_IN_PLACE)
    with torch.no_grad():
        module(x.detach(), mask=mask, rope=(cos, sin))
    for name, now, then in zip(("x", "mask", "cos", "sin"), (x, mask, cos, sin), kept):
        assert_close(now.detach(), then, f"{name} after forward", atol=0.0, hint=HINT_IN_PLACE)
