"""Stage 19: the decoder-only language model, and the Llama checkpoint layout.

Everything of Part II comes together: token embeddings, a stack of pre-norm decoder blocks
(RMSNorm, grouped-query attention with RoPE, SwiGLU or mixture of experts), a final RMSNorm, and a
linear head that turns each position's vector into V next-token logits:

    x = embed_tokens(tokens)                              (B, S, D)
    for each block:  x, aux = block(x, causal mask, RoPE, cache)
    logits = lm_head(norm(x))                             (B, S, V)

There is no positional embedding at the bottom: RoPE rotates queries and keys inside every
attention layer. The cos/sin tables are computed once, for max_seq_len positions, and sliced to
the positions of the tokens in the call.

The KV cache. Generating text means calling the model once per new token. Without a cache every
call re-reads the whole sequence; with one, each layer keeps the keys and values of the positions
it has already seen, and a call feeds only the NEW tokens. Those new tokens sit at positions
offset .. offset + S - 1, where offset = the number of cached positions, so

    cos, sin = tables[offset : offset + S]             (the rotation of their true positions)
    mask     = additive_causal_mask(S, offset + S)      (S queries over offset + S keys)

Feed [t0, t1, t2] in one call, or t0, then t1, then t2 with caches: the logits are the same.

Weight tying. The embedding matrix (V, D) and the head's weight (V, D) have the same shape; many
small models share ONE Parameter between them, saving V * D parameters.

The checkpoint layout. Small Llama-architecture models (TinyLlama, SmolLM, ...) are published as
a state dict with Hugging Face names; this model's modules map onto them one to one:

    embed_tokens.weight             model.embed_tokens.weight                     (V, D)
    layers.{i}.attn_norm.weight     model.layers.{i}.input_layernorm.weight       (D,)
    layers.{i}.attn.q_proj.weight   model.layers.{i}.self_attn.q_proj.weight      (H * Dh, D)
    layers.{i}.attn.k_proj.weight   model.layers.{i}.self_attn.k_proj.weight      (Hkv * Dh, D)
    layers.{i}.attn.v_proj.weight   model.layers.{i}.self_attn.v_proj.weight      (Hkv * Dh, D)
    layers.{i}.attn.o_proj.weight   model.layers.{i}.self_attn.o_proj.weight      (D, H * Dh)
    layers.{i}.ffn_norm.weight      model.layers.{i}.post_attention_layernorm.weight  (D,)
    layers.{i}.ffn.gate_proj.weight model.layers.{i}.mlp.gate_proj.weight         (F, D)
    layers.{i}.ffn.up_proj.weight   model.layers.{i}.mlp.up_proj.weight           (F, D)
    layers.{i}.ffn.down_proj.weight model.layers.{i}.mlp.down_proj.weight         (D, F)
    norm.weight                     model.norm.weight                             (D,)
    lm_head.weight                  lm_head.weight                                (V, D)

Hugging Face's Llama uses the same rotate-half RoPE as stage 14, so no weight is permuted. To run
real weights: download config.json and the weights of a small Llama-architecture model, and call
load_pretrained(directory).

Shapes: B batch, S sequence length (new tokens in this call), D = d_model, H heads, Hkv key/value
heads, Dh = D / H, F = d_ff, V vocabulary size, L layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .s14_rope import rope_tables
from .s15_causal_mask import additive_causal_mask
from .s16_gqa import KVCache
from .s18_rmsnorm import DecoderBlock, RMSNorm

# Inside a layer, our module names -> the Hugging Face Llama names.
LAYER_RENAMES = (
    (".attn_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
    (".attn.", ".self_attn."),
    (".ffn.", ".mlp."),
)


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of one decoder-only model. The defaults make a tiny model that trains on a CPU."""

    vocab_size: int  # V
    d_model: int = 64  # D, the width of every token's vector
    n_layers: int = 2  # L, decoder blocks
    n_heads: int = 4  # H, query heads; Dh = D / H
    n_kv_heads: int = 2  # Hkv, key/value heads; divides H (H: multi-head, 1: multi-query)
    d_ff: int = 172  # F, the SwiGLU hidden width (about 8/3 * D, as in Llama)
    max_seq_len: int = 256  # the most positions the RoPE tables (and so the model) can handle
    rope_base: float = 10000.0  # RoPE wavelength base ("rope_theta" in config.json)
    norm_eps: float = 1e-5  # RMSNorm epsilon ("rms_norm_eps")
    n_experts: int = 0  # 0: dense SwiGLU feed-forward; > 0: mixture of experts with E experts
    top_k: int = 2  # experts per token, when n_experts > 0
    tie_weights: bool = False  # share one Parameter between embed_tokens and lm_head
    dropout: float = 0.0  # attention-weight dropout, in training only


class Llama(nn.Module):
    """Embeddings, L pre-norm decoder blocks, a final RMSNorm and the output head."""

    def __init__(self, config: LlamaConfig) -> None:
        """Build the modules and the RoPE tables.

        Args:
            config: the LlamaConfig.
        Attributes:
            config: the config.
            embed_tokens: nn.Embedding(V, D).
            layers: nn.ModuleList of L DecoderBlock(D, H, Hkv, F, norm_eps, n_experts, top_k, dropout).
            norm: RMSNorm(D, norm_eps), applied after the last block.
            lm_head: nn.Linear(D, V, bias=False); when config.tie_weights, its weight IS
                embed_tokens.weight (one Parameter, not a copy).
            rope_cos, rope_sin: (max_seq_len, Dh) buffers from rope_tables(Dh, max_seq_len,
                rope_base), registered with persistent=False (they are not weights: a state dict
                does not hold them).
        Every nn.Linear and nn.Embedding weight is initialised from N(0, 0.02^2), as in Llama
        (nn.Embedding's default N(0, 1) would make the tied head's logits huge).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits for every position.

        Args:
            tokens: (B, S) torch.long ids: the whole sequence, or (with caches) only the new tokens.
            caches: None, or one KVCache per layer (from new_caches()); each layer appends the new
                keys and values to its cache. The new tokens' first position is
                offset = caches[0].length (0 without caches).
        Returns:
            (logits, aux_loss): logits (B, S, V) float32; aux_loss, a scalar tensor, the sum of the
            blocks' auxiliary (load-balancing) losses, zero for a dense model.
        Raises:
            ValueError: if offset + S > config.max_seq_len (the RoPE tables end there).
        """
        # 1) embed; no position vector is added: RoPE rotates q and k inside every layer
        # TODO
        # 2) the rotation of the TRUE positions of these tokens, and S queries over offset + S keys
        # TODO
        # 3) the blocks, each with its own cache
        # TODO
        # 4) final norm, then one score per vocabulary entry
        # TODO
        raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")

    def new_caches(self) -> list[KVCache]:
        """One empty KVCache per layer, for a fresh sequence.

        Returns:
            A list of L new KVCache objects (never the same object twice).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")


def llama_name(name: str) -> str:
    """This model's parameter name -> the Hugging Face Llama name (the table in the module docstring).

    Everything except "lm_head.weight" gets the prefix "model."; inside a layer the four module
    names of LAYER_RENAMES change (attn_norm -> input_layernorm, ffn_norm ->
    post_attention_layernorm, attn -> self_attn, ffn -> mlp).
    Examples: "layers.0.attn.q_proj.weight" -> "model.layers.0.self_attn.q_proj.weight";
    "norm.weight" -> "model.norm.weight"; "lm_head.weight" -> "lm_head.weight".

    Args:
        name: a key of Llama.state_dict().
    Returns:
        The checkpoint key.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")


def to_llama_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face Llama names, ready for torch.save.

    Args:
        model: a dense Llama (config.n_experts == 0).
    Returns:
        {llama_name(name): tensor} for every entry of model.state_dict(), detached. A tied model
        still lists "lm_head.weight" (equal to "model.embed_tokens.weight").
    Raises:
        ValueError: for a mixture-of-experts model (the Llama layout has no experts).
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")


def from_llama_state_dict(config: LlamaConfig, state_dict: dict[str, torch.Tensor]) -> Llama:
    """A Llama with weights from a Hugging Face-layout state dict.

    Args:
        config: the matching LlamaConfig (dense).
        state_dict: {Llama name: tensor}, as to_llama_state_dict returns or a checkpoint holds. It
            may omit "lm_head.weight" when config.tie_weights (tied checkpoints often do).
    Returns:
        A new Llama(config) holding exactly those values (copied with load_state_dict, strict),
        with the tie intact when config.tie_weights.
    Raises:
        ValueError: for a mixture-of-experts config. Missing or unexpected keys, or wrong shapes,
            raise load_state_dict's RuntimeError, which names them.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")


def config_from_llama_json(d: dict) -> LlamaConfig:
    """A LlamaConfig from the dict of a Hugging Face Llama config.json.

    Keys read: vocab_size, hidden_size (D), num_hidden_layers (L), num_attention_heads (H),
    num_key_value_heads (Hkv; default H), intermediate_size (F), max_position_embeddings,
    rope_theta (default 10000.0), rms_norm_eps (default 1e-6), tie_word_embeddings (default False).

    Args:
        d: the parsed config.json.
    Returns:
        The LlamaConfig (dense, no dropout).
    Raises:
        ValueError: when the checkpoint needs something this model lacks: "head_dim" other than
            hidden_size / num_attention_heads, attention_bias or mlp_bias true, a hidden_act other
            than "silu", or a "rope_scaling" entry that is not null.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")


# kata: given
def load_pretrained(directory: str | Path, weights: str = "pytorch_model.bin") -> Llama:
    """Load a Llama-architecture checkpoint directory: config.json plus a torch.save'd state dict.

    For a model published as model.safetensors, convert it first (with the safetensors package:
    torch.save(safetensors.torch.load_file(path), "pytorch_model.bin")).

    Args:
        directory: holds config.json and the weights file.
        weights: the weights file's name inside directory.
    Returns:
        The Llama, in eval mode, float32.
    """
    directory = Path(directory)
    config = config_from_llama_json(json.loads((directory / "config.json").read_text(encoding="utf-8")))
    state_dict = torch.load(directory / weights, map_location="cpu", weights_only=True)
    model = from_llama_state_dict(config, {name: tensor.float() for name, tensor in state_dict.items()})
    return model.eval()
