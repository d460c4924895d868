"""Stage 19: the decoder-only model, its KV cache, and the Llama checkpoint layout.

The oracle is a forward pass rebuilt here from torch ops (F.embedding, F.rms_norm,
F.scaled_dot_product_attention with enable_gqa=True and is_causal=True, a rotate-half written in
this file, F.silu) that reads the weights by their Hugging Face Llama names. It never calls the
learner's code: the weights come either from the model's attributes or from a checkpoint this
file writes itself (config.json in the layouts before and after transformers 5.0, and as Qwen2.5,
Mistral and TinyLlama publish it; weights as pytorch_model.bin with torch.save, model.safetensors
and sharded safetensors with the safetensors package, in float32, bfloat16 and float16). Llama 3's
frequency scaling is written here as a loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from checks import assert_close, assert_equal, assert_raises, assert_tensor, fail
from test_s14_rope import llama3_loop  # the same hand-written oracle as stage 14's

try:
    from safetensors.torch import save_file
except ImportError:  # a dependency of the kata (requirements.txt): without it, say so in one line
    save_file = None

V, D, L, H, HKV, FF = 40, 32, 2, 4, 2, 48  # a tiny model: Dh = 8

HINT_CAUSAL = ("Is the additive causal mask built in forward and passed to every block? Logits at position t "
               "must not depend on tokens after t.")
HINT_OFFSET = ("With caches, the new tokens sit at positions offset .. offset + S - 1, offset = caches[0].length "
               "read BEFORE the blocks run: slice rope_cos/rope_sin[offset : offset + S] and build "
               "additive_causal_mask(S, offset + S). A wrong position offset rotates the new queries and keys "
               "as if they were at position 0.")
HINT_LAYOUT = ("config.json has two layouts: transformers >= 5.0 writes 'rope_parameters': {'rope_theta': ..., "
               "'rope_type': ...} and no top-level rope_theta; older files have top-level 'rope_theta' and "
               "'rope_scaling'. Read rope_parameters when present, else the top-level keys.")
HINT_SCALING = ("rope_type 'llama3' becomes a RopeScaling(factor, low_freq_factor, high_freq_factor, "
                "original_max_positions = original_max_position_embeddings) in config.rope_scaling, and Llama passes it "
                "to rope_tables; 'default' (or no scaling) means None.")
HINT_REFUSE = ("Refuse, with one ValueError line naming it, a rope_type the model does not implement (linear, dynamic, "
               "yarn, ...): running it unscaled gives wrong logits without any error.")
HINT_PADDING = ("With an attention_mask, each row's positions count its own real tokens only (cumsum of the mask - 1, "
                "padding clamped to 0), padding keys are blocked (-inf) for every query, and a padding query keeps "
                "its own key so that its softmax row is never all -inf (NaN would spread to the real tokens).")
HINT_IN_PLACE = ("forward must not change its inputs, and a second forward/backward must work: an operation in place "
                 "(x += ..., mask.masked_fill_, a table modified) breaks autograd or the caller's tensors.")
HINT_FOLLOW_ON = ("This follows from an earlier failure: the plain forward (no cache, no padding, no scaling) already "
                  "differs from the oracle, and test_forward_matches_the_llama_forward_built_from_torch_ops names the "
                  "cause. Fix that first.")
HINT_ATTENTION_CACHE = ("This follows from stage 16: one block's attention alone, fed 3 positions then 1 through a "
                        "KVCache with the right RoPE rows and mask, already goes wrong (against its own output without "
                        "a cache). python -m grader 16 names the cause.")
HINT_ROWS_TWICE = ("The RoPE rows were sliced twice: take rope_cos/rope_sin[offset : offset + S] once, in forward, and "
                   "pass those rows to every block as they are (the attention applies the rows it is given).")
HINT_QKV_BIAS = ("config.qkv_bias (Qwen2) goes to every DecoderBlock: q_proj, k_proj and v_proj get biases, o_proj "
                 "none, and the biases keep their modules' checkpoint names (model.layers.{i}.self_attn.q_proj.bias).")
HINT_QWEN2 = ("model_type 'qwen2' means biases on q_proj, k_proj and v_proj: qkv_bias=True. Its use_sliding_window is "
              "false, so sliding_window and max_window_layers are ignored (max_seq_len = max_position_embeddings); "
              "rope_theta and tie_word_embeddings are read as for Llama.")
HINT_MISTRAL = ("A Mistral sliding_window W lets each token see the last W positions only; up to W positions that is "
                "plain causal attention, so the window caps max_seq_len at min(W, max_position_embeddings); null means "
                "no window. Mistral has no projection biases.")
HINT_FAMILY_REFUSE = ("Refuse, in one ValueError line naming it, a model_type other than llama, mistral or qwen2, "
                      "and use_sliding_window true: run as a Llama, such a checkpoint gives wrong logits without any "
                      "error.")
HINT_ORACLE = ("The order is embed -> blocks (each with the causal mask and the RoPE rows of these positions) -> "
               "final norm -> lm_head. Is the final RMSNorm applied, and are cos/sin built for the head size "
               "Dh = d_model / n_heads with config.rope_base?")


def small_config(stage, **overrides):
    fields = dict(vocab_size=V, d_model=D, n_layers=L, n_heads=H, n_kv_heads=HKV, d_ff=FF, max_seq_len=32)
    fields.update(overrides)
    return stage.LlamaConfig(**fields)


def randomise(model) -> None:
    """Weights far from their init (norm weights too), so that a swapped or skipped weight shows."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.copy_(1.0 + 0.3 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, 0.3)


def hf_names(n_layers: int, qkv_bias: bool = False) -> list[str]:
    """The Hugging Face Llama parameter names, written out here from the published layout (Qwen2's: q/k/v biases)."""
    names = ["model.embed_tokens.weight"]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        names += [p + f"self_attn.{x}_proj.bias" for x in "qkv"] if qkv_bias else []
        names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return names + ["model.norm.weight", "lm_head.weight"]


def hf_shapes(vocab: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int,
              qkv_bias: bool = False) -> dict[str, tuple]:
    head = d_model // n_heads
    shapes = {}
    for name in hf_names(n_layers, qkv_bias):
        if name.endswith("q_proj.bias"):
            shape = (n_heads * head,)
        elif name.endswith(("k_proj.bias", "v_proj.bias")):
            shape = (n_kv_heads * head,)
        elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
            shape = (vocab, d_model)
        elif name.endswith("q_proj.weight"):
            shape = (n_heads * head, d_model)
        elif name.endswith(("k_proj.weight", "v_proj.weight")):
            shape = (n_kv_heads * head, d_model)
        elif name.endswith("o_proj.weight"):
            shape = (d_model, n_heads * head)
        elif name.endswith(("gate_proj.weight", "up_proj.weight")):
            shape = (d_ff, d_model)
        elif name.endswith("down_proj.weight"):
            shape = (d_model, d_ff)
        else:
            shape = (d_model,)
        shapes[name] = shape
    return shapes


def weights_by_attribute(model) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face names, read from the documented attributes (not from its mapping)."""
    w = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight,
         "lm_head.weight": model.lm_head.weight}
    for i, block in enumerate(model.layers):
        p = f"model.layers.{i}."
        for x in "qkvo":
            projection = getattr(block.attn, f"{x}_proj")
            w[p + f"self_attn.{x}_proj.weight"] = projection.weight
            if projection.bias is not None:
                w[p + f"self_attn.{x}_proj.bias"] = projection.bias
        for x in ("gate", "up", "down"):
            w[p + f"mlp.{x}_proj.weight"] = getattr(block.ffn, f"{x}_proj").weight
        w[p + "input_layernorm.weight"] = block.attn_norm.weight
        w[p + "post_attention_layernorm.weight"] = block.ffn_norm.weight
    return w


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def oracle_logits(w, tokens, n_layers, n_heads, n_kv_heads, base=10000.0, eps=1e-5, scaling=None) -> torch.Tensor:
    """Llama's forward from torch ops, on Hugging Face-named weights ``w`` (with q/k/v biases when ``w`` has them);
    scaling: llama3 (factor, low, high, original)."""
    batch, length = tokens.shape
    d_model = w["model.embed_tokens.weight"].size(1)
    head = d_model // n_heads
    inv_freq = 1.0 / (base ** (torch.arange(0, head, 2, dtype=torch.float32) / head))  # (Dh/2,)
    if scaling is not None:
        inv_freq = torch.tensor(llama3_loop(inv_freq.tolist(), *scaling))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (S, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (S, Dh): half-split pairing
    cos, sin = angles.cos(), angles.sin()
    x = F.embedding(tokens, w["model.embed_tokens.weight"])
    for i in range(n_layers):
        p = f"model.layers.{i}."
        h = F.rms_norm(x, (d_model,), w[p + "input_layernorm.weight"], eps)
        q, k, v = (h @ w[p + f"self_attn.{x}_proj.weight"].T + w.get(p + f"self_attn.{x}_proj.bias", 0.0)
                   for x in "qkv")  # Qwen2's biases, where the weights have them
        q = q.view(batch, length, n_heads, head).transpose(1, 2)
        k = k.view(batch, length, n_kv_heads, head).transpose(1, 2)
        v = v.view(batch, length, n_kv_heads, head).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + a.transpose(1, 2).reshape(batch, length, d_model) @ w[p + "self_attn.o_proj.weight"].T
        h = F.rms_norm(x, (d_model,), w[p + "post_attention_layernorm.weight"], eps)
        gate = F.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = F.rms_norm(x, (d_model,), w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T


def cause(stage, hint: str) -> str:
    """``hint``, unless the plain forward is already wrong: then the failure follows from that one."""
    with torch.random.fork_rng():  # the check draws its own numbers without changing the test's
        try:
            model = stage.Llama(small_config(stage)).eval()
            randomise(model)
            tokens = torch.randint(0, V, (2, 7))
            with torch.no_grad():
                expected = oracle_logits(weights_by_attribute(model), tokens, L, H, HKV)
                logits, _ = model(tokens)
            fine = type(logits) is torch.Tensor and logits.shape == expected.shape and \
                torch.allclose(logits, expected, atol=1e-4, rtol=1e-5)
        except Exception:  # noqa: BLE001 - any failure here is the earlier failure
            fine = False
    return hint if fine else HINT_FOLLOW_ON


def cache_cause(stage, model) -> str:
    """HINT_OFFSET, unless an earlier failure explains wrong cached logits: the plain forward, or stage 16's cache."""
    hint = cause(stage, HINT_OFFSET)
    if hint != HINT_OFFSET:
        return hint
    with torch.random.fork_rng():  # a prompt of 3 positions, then 1, through the first block's attention
        try:
            attention, x, rows = model.layers[0].attn, torch.randn(1, 4, D), (model.rope_cos[:4], model.rope_sin[:4])
            with torch.no_grad():
                whole = attention(x, mask=torch.full((4, 4), float("-inf")).triu(1), rope=rows)
                cache = stage.KVCache()
                attention(x[:, :3], mask=torch.full((3, 3), float("-inf")).triu(1),
                          rope=(rows[0][:3], rows[1][:3]), cache=cache)
                step = attention(x[:, 3:], mask=torch.zeros(1, 4), rope=(rows[0][3:], rows[1][3:]), cache=cache)
            fine = type(step) is torch.Tensor and torch.allclose(step, whole[:, 3:], atol=1e-5)
        except Exception:  # noqa: BLE001 - any failure here is stage 16's
            fine = False
    return hint if fine else HINT_ATTENTION_CACHE


# --- the config -------------------------------------------------------------------------------


def test_default_config_is_frozen_and_builds_a_model_with_the_llama_parameter_count(stage):
    if not dataclasses.is_dataclass(stage.LlamaConfig):
        fail("LlamaConfig is not a dataclass", "Decorate it with @dataclass(frozen=True).")
    config = stage.LlamaConfig(vocab_size=100)
    expected = dict(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=172, max_seq_len=256,
                    rope_base=10000.0, rope_scaling=None, norm_eps=1e-5, n_experts=0, top_k=2, tie_weights=False,
                    qkv_bias=False, dropout=0.0)
    assert_equal(dataclasses.asdict(config), expected, "LlamaConfig(vocab_size=100) fields",
                 hint="Keep the field names and defaults of the docstring.")
    assert_raises(lambda: setattr(config, "d_model", 8), dataclasses.FrozenInstanceError, "assigning config.d_model",
                 hint="A config is a frozen dataclass: @dataclass(frozen=True).")
    model = stage.Llama(config)
    if model.config is not config:
        fail("model.config is not the config the model was built with", "Store it: self.config = config.")
    # embedding + per layer (q, k, v, o, gate, up, down, two norms) + final norm + head; no biases
    per_layer = 64 * 64 + 2 * (32 * 64) + 64 * 64 + 3 * (172 * 64) + 2 * 64
    count = sum(p.numel() for p in model.parameters())
    assert_equal(count, 100 * 64 + 2 * per_layer + 64 + 64 * 100, "parameter count of Llama(LlamaConfig(vocab_size=100))",
                 hint="No biases anywhere; k_proj and v_proj are Hkv * Dh = 32 wide; one SwiGLU of width d_ff per block.")


# --- shapes and structure ---------------------------------------------------------------------


@pytest.mark.parametrize("batch, length", [(2, 7), (1, 5), (3, 1)])
def test_forward_returns_B_S_V_logits_and_a_scalar_aux_loss(stage, batch, length):
    model = stage.Llama(small_config(stage)).eval()
    output = model(torch.randint(0, V, (batch, length)))
    if not isinstance(output, tuple) or len(output) != 2:
        fail(f"forward returned {type(output).__name__}, expected a tuple (logits, aux_loss)",
             "Return the logits and the summed auxiliary loss of the blocks.")
    logits, aux = output
    assert_tensor(logits, "logits", shape=(batch, length, V), dtype=torch.float32,
                  hint="lm_head maps D to V for every position: (B, S, D) -> (B, S, V).")
    assert_tensor(aux, "aux_loss", shape=(), dtype=torch.float32,
                  hint="Sum the blocks' aux losses into one 0-dim tensor (zero for a dense model).")
    assert_close(aux, torch.tensor(0.0), "aux_loss of a dense model", atol=0.0,
                 hint="A dense SwiGLU block has no load-balancing loss.")


def test_model_has_the_documented_modules_and_non_persistent_rope_tables(stage):
    model = stage.Llama(small_config(stage))
    assert_tensor(model.embed_tokens.weight, "embed_tokens.weight", shape=(V, D),
                  hint="embed_tokens is nn.Embedding(vocab_size, d_model).")
    assert_tensor(model.lm_head.weight, "lm_head.weight", shape=(V, D),
                  hint="lm_head is nn.Linear(d_model, vocab_size, bias=False).")
    if model.lm_head.bias is not None:
        fail("lm_head has a bias", "Llama's head has none: nn.Linear(D, V, bias=False).")
    assert_equal(len(model.layers), L, "number of decoder blocks", hint="Build config.n_layers DecoderBlocks in an nn.ModuleList.")
    assert_tensor(model.norm.weight, "norm.weight", shape=(D,), hint="The final norm is RMSNorm(d_model).")
    assert_tensor(model.rope_cos, "rope_cos", shape=(32, D // H), dtype=torch.float32,
                  hint="rope_tables(Dh, max_seq_len, rope_base) with Dh = d_model / n_heads.")
    leaked = [name for name in model.state_dict() if "rope" in name]
    assert_equal(leaked, [], "RoPE tables in the state dict",
                 hint="register_buffer(..., persistent=False): the tables are computed, not weights.")


def test_new_caches_gives_one_fresh_empty_cache_per_layer(stage):
    model = stage.Llama(small_config(stage, n_layers=3))
    caches = model.new_caches()
    assert_equal(len(caches), 3, "number of caches", hint="One KVCache per layer.")
    assert_equal(len({id(c) for c in caches}), 3, "distinct cache objects",
                 hint="[KVCache()] * L repeats ONE object: every layer would write into the same cache.")
    assert_equal([c.length for c in caches], [0, 0, 0], "cache lengths", hint="New caches are empty.")


# --- invariants -------------------------------------------------------------------------------


def test_changing_later_tokens_leaves_earlier_logits_unchanged(stage):
    model = stage.Llama(small_config(stage)).eval()
    randomise(model)
    tokens = torch.randint(0, V, (2, 9))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1 + torch.randint(0, V - 1, (2, 4))) % V  # every later token differs
    with torch.no_grad():
        before, _ = model(tokens)
        after, _ = model(changed)
    assert_close(after[:, :5], before[:, :5], "logits at positions 0..4 after changing tokens 5..8", atol=1e-5,
                 hint=HINT_CAUSAL)


def test_weight_tying_shares_one_parameter_and_saves_V_times_D(stage):
    untied = stage.Llama(small_config(stage))
    tied = stage.Llama(small_config(stage, tie_weights=True))
    if untied.lm_head.weight is untied.embed_tokens.weight:
        fail("with tie_weights=False the head and the embedding are the same Parameter",
             "Tie only when config.tie_weights is True.")
    if tied.lm_head.weight is not tied.embed_tokens.weight:
        fail("with tie_weights=True, lm_head.weight is not the same Parameter as embed_tokens.weight",
             "lm_head's weight must BE the embedding's Parameter, the one object shared by both layers, not a "
             "copy of its values (a copy drifts apart in training); tie after initialising the weights.")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 - parameters() counts a shared one once
    assert_equal(count(untied) - count(tied), V * D, "parameters saved by tying",
                 hint="Tying shares one (V, D) matrix, so the tied model has exactly V * D fewer parameters.")


def test_moe_model_returns_the_sum_of_its_blocks_aux_losses(stage):
    model = stage.Llama(small_config(stage, n_experts=4, top_k=2))
    seen = []
    for block in model.layers:
        block.register_forward_hook(lambda module, args, output: seen.append(output[1]))
    _, aux = model(torch.randint(0, V, (2, 6)))
    assert_equal(len(seen), L, "blocks run", hint="Run every block once per forward.")
    assert_tensor(aux, "aux_loss", shape=(), dtype=torch.float32, hint="A 0-dim tensor.")
    assert_close(aux, sum(seen), "aux_loss", atol=1e-6,
                 hint="Add up the aux loss every block returns (not only the last block's).")
    if not aux.requires_grad:
        fail("aux_loss carries no gradient", "Sum the tensors the blocks return; do not call .item() or detach.")


# --- the oracle -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_heads", [2, 1, 4])
def test_forward_matches_the_llama_forward_built_from_torch_ops(stage, n_kv_heads):
    model = stage.Llama(small_config(stage, n_kv_heads=n_kv_heads, rope_base=100.0)).eval()
    randomise(model)
    tokens = torch.randint(0, V, (2, 11))
    with torch.no_grad():
        expected = oracle_logits(weights_by_attribute(model), tokens, L, H, n_kv_heads, base=100.0)
        logits, _ = model(tokens)
    assert_close(logits, expected, f"logits (n_kv_heads={n_kv_heads})", atol=1e-4, rtol=1e-5,  # 2 layers of float32
                 hint=HINT_ORACLE)


def test_qkv_bias_gives_every_layer_biased_q_k_v_under_their_checkpoint_names(stage):
    model = stage.Llama(small_config(stage, qkv_bias=True)).eval()
    for i, block in enumerate(model.layers):
        biased = [name for name in ("q_proj", "k_proj", "v_proj", "o_proj")
                  if getattr(block.attn, name).bias is not None]
        if biased != ["q_proj", "k_proj", "v_proj"]:
            fail(f"Llama(qkv_bias=True): layer {i}'s projections with a bias are {biased}, expected "
                 "['q_proj', 'k_proj', 'v_proj']", HINT_QKV_BIAS)
    state = stage.to_llama_state_dict(model)
    assert_equal(sorted(state), sorted(hf_shapes(V, D, L, H, HKV, FF, qkv_bias=True)), "checkpoint keys with qkv_bias",
                 hint=HINT_QKV_BIAS)
    randomise(model)  # biases of about 1
    tokens = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        expected = oracle_logits(weights_by_attribute(model), tokens, L, H, HKV)
        logits, _ = model(tokens)
    assert_close(logits, expected, "logits with q, k, v biases", atol=1e-4, rtol=1e-5, hint=cause(stage, HINT_QKV_BIAS))


# --- the KV cache -----------------------------------------------------------------------------


def test_cached_logits_equal_full_sequence_logits_at_every_step(stage):
    model = stage.Llama(small_config(stage)).eval()
    randomise(model)
    tokens = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        full, _ = model(tokens)
        caches = model.new_caches()
        pieces = [(0, 3), (3, 5)] + [(t, t + 1) for t in range(5, 10)]  # prefill 3, a chunk of 2, then one at a time
        for start, end in pieces:
            try:
                step, _ = model(tokens[:, start:end], caches)
            except RuntimeError as error:
                hint, left = cache_cause(stage, model), max(0, end - 2 * start)  # rows left if sliced again at start
                found = re.search(r"tensor a \((\d+)\) must match the size of tensor b \((\d+)\)", str(error))
                sizes = sorted(map(int, found.groups())) if found else []
                twice = hint == HINT_OFFSET and sizes == sorted([left, end - start])
                fail(f"model(tokens[:, {start}:{end}], caches) with {start} cached positions raised RuntimeError: "
                     f"{str(error).splitlines()[0][:160]}", HINT_ROWS_TWICE if twice else hint,
                     f"RoPE rows for {left} position(s) met {end - start} new ones: the rows of positions {start}.."
                     f"{end - 1}, sliced again from row {start}" if twice else "")
            assert_close(step, full[:, start:end], f"cached logits of positions {start}..{end - 1}", atol=1e-5,
                         hint=cache_cause(stage, model))
            assert_equal(caches[0].length, end, f"cache length after feeding positions up to {end - 1}",
                         hint="Pass caches[i] to block i: each layer appends its keys and values.")


def test_positions_past_max_seq_len_raise_value_error(stage):
    model = stage.Llama(small_config(stage, max_seq_len=8))
    model(torch.randint(0, V, (1, 8)))  # exactly max_seq_len positions fit
    hint = "Check offset + S against config.max_seq_len before slicing the RoPE tables (a slice past the end is silently short)."
    assert_raises(lambda: model(torch.randint(0, V, (1, 9))), ValueError, "9 tokens with max_seq_len 8", hint)
    caches = model.new_caches()
    model(torch.randint(0, V, (1, 6)), caches)
    assert_raises(lambda: model(torch.randint(0, V, (1, 3)), caches), ValueError,
                 "3 new tokens after 6 cached ones with max_seq_len 8", hint)


# --- the checkpoint layout --------------------------------------------------------------------


def test_to_llama_state_dict_uses_the_llama_names_and_shapes(stage):
    model = stage.Llama(small_config(stage))
    state = stage.to_llama_state_dict(model)
    expected = hf_shapes(V, D, L, H, HKV, FF)
    assert_equal(sorted(state), sorted(expected), "checkpoint keys",
                 hint="model.embed_tokens, model.layers.{i}.self_attn.{q,k,v,o}_proj, model.layers.{i}.mlp."
                      "{gate,up,down}_proj, input_layernorm (before attention), post_attention_layernorm (before "
                      "the MLP), model.norm, lm_head; no RoPE tables.")
    for name, shape in expected.items():
        assert_tensor(state[name], name, shape=shape, hint="Copy the tensor under its new name; do not transpose it.")
    attribute = weights_by_attribute(model)
    for name in expected:
        assert_close(state[name], attribute[name].detach(), name, atol=0.0,
                     hint="Each Llama name holds the weight of the module the table in the docstring pairs it with.")


# Qwen2.5-0.5B's config.json at this file's sizes, in the layout transformers 4.x wrote: q/k/v biases (no key says
# so: the family does), rope_theta 1e6, a tied head, and a sliding_window that use_sliding_window false switches off
QWEN25 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "attention_dropout": 0.0,
          "vocab_size": V, "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L, "num_attention_heads": H,
          "num_key_value_heads": HKV, "max_position_embeddings": 64, "max_window_layers": 1, "sliding_window": 16,
          "use_sliding_window": False, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
          "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "use_cache": True}
# Mistral 7B v0.1's: Llama's layout and a sliding window (head_dim = D / H, as transformers 5 writes it)
MISTRAL = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu", "vocab_size": V,
           "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": HKV, "head_dim": D // H, "max_position_embeddings": 64, "sliding_window": 16,
           "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# TinyLlama's (Llama 2's layout, transformers 4.31): no rope_theta (so 10000), rope_scaling null, pretraining_tp 1
TINYLLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "vocab_size": V,
             "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L, "num_attention_heads": H,
             "num_key_value_heads": HKV, "max_position_embeddings": 64, "pretraining_tp": 1, "rope_scaling": None,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "initializer_range": 0.02,
             "bos_token_id": 1, "eos_token_id": 2, "use_cache": True, "transformers_version": "4.31.0.dev0"}


def write_checkpoint(directory, tie: bool, files: str = "bin", dtype=torch.float32,
                     family: str = "llama") -> tuple[dict, dict[str, torch.Tensor]]:
    """A random Llama-layout checkpoint and its config.json (the older layout: top-level rope_theta).

    files: "bin" (torch.save), "safetensors" (one model.safetensors) or "sharded" (three shards and
    model.safetensors.index.json). family "qwen2": QWEN25's config (24 positions, sliding_window 4, switched
    off) and q/k/v biases. Returns the config and the weights as float32 (after the dtype's rounding).
    """
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": V, "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": HKV, "max_position_embeddings": 24,
        "rope_theta": 500.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": tie, "rope_scaling": None,
        "attention_bias": False, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
    }
    if family == "qwen2":
        config = dict(QWEN25, max_position_embeddings=24, sliding_window=4, tie_word_embeddings=tie)
    weights = {}
    for name, shape in hf_shapes(V, D, L, H, HKV, FF, qkv_bias=family == "qwen2").items():
        weights[name] = (1.0 + 0.3 * torch.randn(shape) if len(shape) == 1 else 0.3 * torch.randn(shape)).to(dtype)
    if tie:
        del weights["lm_head.weight"]  # tied checkpoints store the matrix once
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if files == "bin":
        torch.save(weights, directory / "pytorch_model.bin")
    elif save_file is None:
        fail("the safetensors package is not installed", "pip install -r requirements.txt")
    elif files == "safetensors":
        save_file(weights, str(directory / "model.safetensors"))
    else:
        names, weight_map = sorted(weights), {}
        for shard in range(3):
            file = f"model-{shard + 1:05d}-of-00003.safetensors"
            part = {name: weights[name] for name in names[shard::3]}
            save_file(part, str(directory / file))
            weight_map.update(dict.fromkeys(part, file))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return config, {name: tensor.float() for name, tensor in weights.items()}


@pytest.mark.parametrize("tie, files, dtype", [
    (False, "bin", torch.float32), (True, "bin", torch.float32), (False, "safetensors", torch.float32),
    (True, "sharded", torch.float32), (False, "sharded", torch.bfloat16), (True, "safetensors", torch.float16),
], ids=["untied-bin", "tied-bin", "untied-safetensors", "tied-sharded", "untied-sharded-bf16", "tied-safetensors-fp16"])
def test_a_checkpoint_written_here_loads_and_runs_like_the_oracle(stage, tmp_path, tie, files, dtype):
    config_json, weights = write_checkpoint(tmp_path, tie, files, dtype)
    config = stage.config_from_llama_json(json.loads((tmp_path / "config.json").read_text(encoding="utf-8")))
    expected_config = dict(vocab_size=V, d_model=D, n_layers=L, n_heads=H, n_kv_heads=HKV, d_ff=FF, max_seq_len=24,
                           rope_base=500.0, norm_eps=1e-6, tie_weights=tie)
    got = {key: getattr(config, key) for key in expected_config}
    assert_equal(got, expected_config, "LlamaConfig read from config.json",
                 hint="hidden_size -> d_model, num_hidden_layers -> n_layers, num_attention_heads -> n_heads, "
                      "num_key_value_heads -> n_kv_heads, intermediate_size -> d_ff, max_position_embeddings -> "
                      "max_seq_len, rope_theta -> rope_base, rms_norm_eps -> norm_eps, tie_word_embeddings -> tie_weights.")
    model = stage.load_pretrained(tmp_path)
    if tie and model.lm_head.weight is not model.embed_tokens.weight:
        fail("the tied checkpoint loaded into an untied model", "Keep the tie: load the embedding, the head IS it.")
    tokens = torch.randint(0, V, (2, 9))
    oracle_weights = dict(weights, **({"lm_head.weight": weights["model.embed_tokens.weight"]} if tie else {}))
    with torch.no_grad():
        expected = oracle_logits(oracle_weights, tokens, L, H, HKV, base=500.0, eps=1e-6)
        logits, _ = model(tokens)
    # 2 layers of float32: the reference uses at most 1/15 of this allowance (4 seeds, every file layout)
    assert_close(logits, expected, f"logits of the loaded checkpoint ({files}, {dtype})", atol=1e-4, rtol=1e-5,
                 hint=cause(stage, "Does every checkpoint tensor land in its module (input_layernorm is the norm BEFORE "
                                   "attention, post_attention_layernorm the one before the MLP), with rope_base and "
                                   "norm_eps from the config?"))


def test_a_qwen2_checkpoint_loads_its_biases_and_runs_like_the_oracle(stage, tmp_path):
    """Qwen2.5's layout: q/k/v biases, rope_theta 1e6, the head tied (absent from the file), and a sliding_window
    of 4 that use_sliding_window false switches off, so 9 tokens run with plain causal attention."""
    config_json, weights = write_checkpoint(tmp_path, tie=True, files="safetensors", family="qwen2")
    config = stage.config_from_llama_json(config_json)
    got = (config.qkv_bias, config.rope_base, config.tie_weights, config.max_seq_len)
    assert_equal(got, (True, 1e6, True, 24), "(qkv_bias, rope_base, tie_weights, max_seq_len) of a Qwen2.5 config.json",
                 hint=HINT_QWEN2)
    try:
        model = stage.load_pretrained(tmp_path)
    except RuntimeError as error:
        fail(f"load_pretrained of a Qwen2 checkpoint raised RuntimeError: {' '.join(str(error).split())[:200]}",
             HINT_QKV_BIAS)
    tokens = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        expected = oracle_logits(dict(weights, **{"lm_head.weight": weights["model.embed_tokens.weight"]}), tokens,
                                 L, H, HKV, base=1e6, eps=1e-6)
        logits, _ = model(tokens)
    assert_close(logits, expected, "logits of the loaded Qwen2 checkpoint", atol=1e-4, rtol=1e-5,
                 hint=cause(stage, HINT_QKV_BIAS))


def test_a_directory_without_weights_or_config_is_refused_by_name(stage, tmp_path):
    write_checkpoint(tmp_path, tie=False)
    (tmp_path / "pytorch_model.bin").unlink()
    for directory, missing in ((tmp_path, "pytorch_model.bin"), (tmp_path / "nothing", "config.json")):
        try:
            stage.load_pretrained(directory)
        except FileNotFoundError as error:
            assert_equal(missing in str(error), True, f"{missing!r} named in the error {str(error)!r}",
                         hint="load_pretrained is given: keep its checks as they are.")
        else:
            fail(f"load_pretrained({directory.name}) did not raise FileNotFoundError",
                 "load_pretrained is given: keep its checks as they are.")


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_round_trip_through_the_llama_layout_gives_identical_logits(stage, tie):
    config = small_config(stage, tie_weights=tie)
    model = stage.Llama(config).eval()
    randomise(model)
    state = {name: tensor.clone() for name, tensor in stage.to_llama_state_dict(model).items()}
    if tie:
        state.pop("lm_head.weight")  # a tied checkpoint may omit the head
    copy = stage.from_llama_state_dict(config, state).eval()
    tokens = torch.randint(0, V, (2, 8))
    with torch.no_grad():
        assert_close(copy(tokens)[0], model(tokens)[0], "logits after to_llama_state_dict -> from_llama_state_dict",
                     atol=0.0, hint="The two mappings must be exact inverses: same tensors, same places.")
    if tie and copy.lm_head.weight is not copy.embed_tokens.weight:
        fail("the round trip broke the tie", "from_llama_state_dict builds Llama(config), which ties; load into it.")


def test_config_from_llama_json_rejects_what_the_model_cannot_run(stage):
    base = {"vocab_size": V, "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L,
            "num_attention_heads": H, "max_position_embeddings": 24}
    config = stage.config_from_llama_json(base)
    assert_equal((config.n_kv_heads, config.rope_base, config.norm_eps, config.tie_weights), (H, 10000.0, 1e-6, False),
                 "defaults for missing keys (n_kv_heads, rope_base, norm_eps, tie_weights)",
                 hint="Without num_key_value_heads the model is multi-head (Hkv = H); Hugging Face's defaults are "
                      "rope_theta 10000.0, rms_norm_eps 1e-6, tie_word_embeddings false.")
    for extra in ({"head_dim": 16}, {"hidden_act": "gelu"}):
        assert_raises(lambda: stage.config_from_llama_json(dict(base, **extra)), ValueError, f"config.json with {extra}",
                     hint="Refuse a checkpoint the model would run wrongly: a head_dim other than "
                          "hidden_size / num_attention_heads, an activation other than silu.")
    for rope_type in ("linear", "dynamic", "yarn"):
        for extra in ({"rope_scaling": {"rope_type": rope_type, "factor": 2.0}},
                      {"rope_parameters": {"rope_type": rope_type, "rope_theta": 10000.0, "factor": 2.0}}):
            try:
                stage.config_from_llama_json(dict(base, **extra))
            except ValueError as error:
                message = str(error)
                if rope_type not in message or "\n" in message:
                    fail(f"the ValueError for {extra} says {message!r}", "One line that names the rope_type refused.")
            else:
                fail(f"config_from_llama_json accepted {extra}", HINT_REFUSE)


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


@pytest.mark.parametrize("layout", ["before-5.0", "5.x"])
@pytest.mark.parametrize("rope", ["default", "llama3"])
def test_config_json_in_either_layout_gives_the_rope_base_and_scaling(stage, layout, rope):
    """The same settings written both ways: base 500000, and Llama 3 scaling or none."""
    d = {"vocab_size": V, "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L,
         "num_attention_heads": H, "max_position_embeddings": 64}
    scaling = dict(LLAMA3) if rope == "llama3" else None
    if layout == "5.x":
        d["rope_parameters"] = dict(scaling or {"rope_type": "default"}, rope_theta=500000.0)
    else:
        d.update(rope_theta=500000.0, rope_scaling=scaling)
    config = stage.config_from_llama_json(d)
    assert_equal(config.rope_base, 500000.0, f"rope_base from a {layout} config.json", hint=HINT_LAYOUT)
    expected = None if scaling is None else stage.RopeScaling(8.0, 1.0, 4.0, 16)
    assert_equal(config.rope_scaling, expected, f"rope_scaling from a {layout} config.json ({rope})", hint=HINT_SCALING)


def test_model_type_qwen2_means_qkv_biases_and_its_switched_off_sliding_window_is_ignored(stage):
    config = stage.config_from_llama_json(dict(QWEN25))
    got = (config.qkv_bias, config.rope_base, config.tie_weights, config.max_seq_len, config.n_kv_heads)
    assert_equal(got, (True, 1e6, True, 64, HKV), "(qkv_bias, rope_base, tie_weights, max_seq_len, n_kv_heads) of a "
                 "Qwen2.5 config.json", hint=HINT_QWEN2)


@pytest.mark.parametrize("window, max_seq_len", [(16, 16), (4096, 64), (None, 64)])
def test_a_mistral_sliding_window_caps_max_seq_len(stage, window, max_seq_len):
    """Mistral 7B v0.1 has sliding_window 4096 (here 16, below max_position_embeddings 64); v0.2 on have null."""
    config = stage.config_from_llama_json(dict(MISTRAL, sliding_window=window))
    assert_equal((config.max_seq_len, config.qkv_bias), (max_seq_len, False),
                 f"(max_seq_len, qkv_bias) of a Mistral config.json with sliding_window {window}", hint=HINT_MISTRAL)


def test_a_tinyllama_config_in_the_llama_2_layout_loads(stage):
    config = stage.config_from_llama_json(dict(TINYLLAMA))
    got = (config.rope_base, config.rope_scaling, config.qkv_bias, config.max_seq_len, config.norm_eps)
    assert_equal(got, (10000.0, None, False, 64, 1e-5), "(rope_base, rope_scaling, qkv_bias, max_seq_len, norm_eps) "
                 "of a TinyLlama config.json", hint="An old file may lack rope_theta (10000) and say rope_scaling null "
                 "(no scaling); keys the model does not use (pretraining_tp, torch_dtype, ...) change nothing.")


@pytest.mark.parametrize("change", [{"model_type": "gemma"}, {"model_type": "phi3"}, {"model_type": "qwen3"},
                                    {"use_sliding_window": True}], ids=["gemma", "phi3", "qwen3", "use_sliding_window"])
def test_other_families_and_sliding_window_layers_are_refused_in_one_line(stage, change):
    (key, value), = change.items()
    try:
        stage.config_from_llama_json(dict(QWEN25, **change))
    except ValueError as error:
        message = str(error)
        named = key in message and (value is True or repr(value) in message)
        if not named or "\n" in message:
            fail(f"the ValueError for {change} says {message!r}", f"One line that names {key} (and {value!r}).")
    else:
        fail(f"config_from_llama_json accepted a Qwen2.5 config.json with {change}", HINT_FAMILY_REFUSE)


def test_a_llama3_scaled_model_matches_the_oracle_past_its_original_context(stage):
    """original_max_positions 16, 40 tokens: the slow pairs are stretched by 8, which the oracle does by a loop."""
    scaling = stage.RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_positions=16)
    model = stage.Llama(small_config(stage, max_seq_len=48, rope_base=500000.0, rope_scaling=scaling)).eval()
    randomise(model)
    tokens = torch.randint(0, V, (2, 40))
    with torch.no_grad():
        expected = oracle_logits(weights_by_attribute(model), tokens, L, H, HKV, base=500000.0, scaling=(8.0, 1.0, 4.0, 16))
        logits, _ = model(tokens)
    # 40 positions of float32 attention with large scores: the reference is up to 7e-5 off (5 seeds, 1 or 2
    # threads), and unscaled frequencies are off by more than 5, so 1e-3 decides with margin both ways
    assert_close(logits, expected, "logits with llama3 rope scaling", atol=1e-3, rtol=1e-5, hint=cause(stage, HINT_SCALING))


# --- batches of prompts of different lengths --------------------------------------------------


def test_padded_positions_count_each_rows_real_tokens(stage):
    """Rows [a b c d] and [pad pad a b]: positions [0 1 2 3] and [0 0 0 1]; the padded row's real
    queries see keys 2.. only, and its padding queries see their own key only."""
    model = stage.Llama(small_config(stage))
    real = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    causal = torch.zeros(4, 4).masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), float("-inf"))
    result = model.padded_positions(real, 4, causal)
    if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], tuple):
        fail(f"padded_positions returned {type(result).__name__}, expected ((cos, sin), mask)", HINT_PADDING)
    (cos, sin), mask = result
    positions = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 1]])
    assert_tensor(cos, "cos rows of a padded batch", shape=(2, 4, D // H), dtype=torch.float32, hint=HINT_PADDING)
    assert_close(cos, model.rope_cos[positions], "cos rows at each row's own positions", atol=0.0, hint=HINT_PADDING)
    assert_close(sin, model.rope_sin[positions], "sin rows at each row's own positions", atol=0.0, hint=HINT_PADDING)
    allowed = torch.tensor([[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
                            [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]]).bool()[:, None]
    assert_tensor(mask, "mask of a padded batch", shape=(2, 1, 4, 4), dtype=torch.float32, hint=HINT_PADDING)
    assert_close(mask == 0, allowed, "where the padded mask is 0 (allowed); padding keys must be blocked",
                 atol=0.0, hint=HINT_PADDING)


def test_a_left_padded_row_gives_the_logits_of_the_row_alone(stage):
    model = stage.Llama(small_config(stage)).eval()
    randomise(model)
    long, short = torch.randint(0, V, (1, 9)), torch.randint(0, V, (1, 5))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1)])  # row 1 left-padded
    real = torch.ones(2, 9, dtype=torch.long)
    real[1, :4] = 0
    kept = real.clone()
    w = weights_by_attribute(model)
    with torch.no_grad():
        want_long, want_short = oracle_logits(w, long, L, H, HKV), oracle_logits(w, short, L, H, HKV)
        logits, _ = model(batch, attention_mask=real)
    assert_tensor(logits, "logits of a padded batch", shape=(2, 9, V), dtype=torch.float32, hint=HINT_PADDING)
    assert_close(logits[1, 4:], want_short[0], "the padded row's logits at its real tokens vs the row alone",
                 atol=1e-4, rtol=1e-5, hint=cause(stage, HINT_PADDING))
    assert_close(logits[0], want_long[0], "the unpadded row's logits in the batch", atol=1e-4, rtol=1e-5,
                 hint=HINT_PADDING)
    assert_close(real, kept, "attention_mask after forward", atol=0, hint=HINT_IN_PLACE)


def test_a_left_padded_batch_through_the_cache_matches_the_rows_alone(stage):
    """Prefill the padded prompts, then 3 single tokens with the mask one column longer each time."""
    model = stage.Llama(small_config(stage)).eval()
    randomise(model)
    rows = [torch.randint(0, V, (1, 7)), torch.randint(0, V, (1, 3))]
    more = torch.randint(0, V, (2, 3))
    prompt = torch.zeros(2, 7, dtype=torch.long)
    prompt[0], prompt[1, 4:] = rows[0][0], rows[1][0]
    real = torch.ones(2, 7, dtype=torch.long)
    real[1, :4] = 0
    w = weights_by_attribute(model)
    with torch.no_grad():
        caches = model.new_caches()
        model(prompt, caches, attention_mask=real)
        for step in range(3):
            real = torch.cat([real, torch.ones(2, 1, dtype=torch.long)], dim=1)
            logits, _ = model(more[:, step:step + 1], caches, attention_mask=real)
            for b in range(2):
                whole = torch.cat([rows[b], more[b:b + 1, :step + 1]], dim=1)
                expected = oracle_logits(w, whole, L, H, HKV)[0, -1]
                assert_close(logits[b, 0], expected, f"row {b}'s logits for cached step {step}", atol=1e-4, rtol=1e-5,
                             hint=cause(stage, HINT_PADDING + " " + HINT_OFFSET))


# --- in place ---------------------------------------------------------------------------------


def test_forward_leaves_its_inputs_unchanged_and_backpropagates_twice(stage):
    model = stage.Llama(small_config(stage))
    tokens = torch.randint(0, V, (2, 6))
    kept, tables = tokens.clone(), model.rope_cos.clone()
    for attempt in (1, 2):
        try:
            logits, aux = model(tokens)
            assert_tensor(logits, "logits", shape=(2, 6, V), dtype=torch.float32, hint=HINT_ORACLE)
            (logits.square().mean() + aux).backward()
        except RuntimeError as error:
            if "inplace" not in str(error):
                raise
            fail(f"forward, then backward (pass {attempt}): a tensor backward needs was modified in place: "
                 f"{str(error).splitlines()[0][:120]}", HINT_IN_PLACE)
    assert_close(tokens, kept, "tokens after forward", atol=0, hint=HINT_IN_PLACE)
    assert_close(model.rope_cos, tables, "rope_cos after two passes", atol=0.0, hint=HINT_IN_PLACE)
