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

Batches of prompts of different lengths. Prompts are LEFT-padded to one length, so that every
row's next token is generated at the same column, and an attention_mask (B, offset + S) marks the
real tokens (1) and the padding (0) of everything seen so far. Two things change:

    positions  each row counts its own: position = (number of real tokens up to here) - 1, so a
               row's first real token is at position 0 however much padding precedes it
    mask       a key that is padding is blocked for every query (-inf); a padding query may see
               itself only, so that no row of the softmax is all -inf (that would give NaN)

With both, every row's logits at its real positions are those of the row run alone.

Weight tying. The embedding matrix (V, D) and the head's weight (V, D) have the same shape; many
small models share ONE Parameter between them, saving V * D parameters.

The checkpoint layout. Small Llama-architecture models (TinyLlama, SmolLM2, Qwen2.5, ...) are
published as a state dict with Hugging Face names; this model's modules map onto them one to one:

    embed_tokens.weight             model.embed_tokens.weight                     (V, D)
    layers.{i}.attn_norm.weight     model.layers.{i}.input_layernorm.weight       (D,)
    layers.{i}.attn.q_proj.weight   model.layers.{i}.self_attn.q_proj.weight      (H * Dh, D)
    layers.{i}.attn.k_proj.weight   model.layers.{i}.self_attn.k_proj.weight      (Hkv * Dh, D)
    layers.{i}.attn.v_proj.weight   model.layers.{i}.self_attn.v_proj.weight      (Hkv * Dh, D)
    layers.{i}.attn.o_proj.weight   model.layers.{i}.self_attn.o_proj.weight      (D, H * Dh)
    layers.{i}.attn.q_proj.bias     model.layers.{i}.self_attn.q_proj.bias        (H * Dh,)    qkv_bias only
    layers.{i}.attn.k_proj.bias     model.layers.{i}.self_attn.k_proj.bias        (Hkv * Dh,)  qkv_bias only
    layers.{i}.attn.v_proj.bias     model.layers.{i}.self_attn.v_proj.bias        (Hkv * Dh,)  qkv_bias only
    layers.{i}.ffn_norm.weight      model.layers.{i}.post_attention_layernorm.weight  (D,)
    layers.{i}.ffn.gate_proj.weight model.layers.{i}.mlp.gate_proj.weight         (F, D)
    layers.{i}.ffn.up_proj.weight   model.layers.{i}.mlp.up_proj.weight           (F, D)
    layers.{i}.ffn.down_proj.weight model.layers.{i}.mlp.down_proj.weight         (D, F)
    norm.weight                     model.norm.weight                             (D,)
    lm_head.weight                  lm_head.weight                                (V, D)

Hugging Face's Llama uses the same rotate-half RoPE as stage 14, so no weight is permuted (a
checkpoint with interleaved pairs needs stage 14's half_split_order on q_proj and k_proj first).

config.json comes in two layouts. Before transformers 5.0 the RoPE settings are top-level keys,
"rope_theta": 500000.0 and "rope_scaling": {"rope_type": "llama3", "factor": 8.0, ...} or null;
from 5.0 they move into one dict, "rope_parameters": {"rope_type": "default" or "llama3",
"rope_theta": 500000.0, "factor": ...}. Read the base from wherever it is: a base silently left at
10000 runs a 500000 model with every position wrong. "default" means no scaling; "llama3" is
stage 14's RopeScaling; any other type (linear, dynamic, yarn, ...) is refused.

Three families share this layout; config.json's "model_type" says which:

    llama    Llama 2 and 3, TinyLlama, SmolLM2: everything above.
    mistral  Llama's layout, plus "sliding_window": W (7B v0.1: 4096; null from v0.2 on): a token
             attends to the last W positions only (itself included). Up to W positions that IS
             causal attention, so this model caps max_seq_len at W: every position it runs is exact.
    qwen2    Qwen2 and Qwen2.5: q_proj, k_proj and v_proj have biases, o_proj has none
             (LlamaConfig.qkv_bias); rope_theta 1000000; the small ones tie the head. Their
             "use_sliding_window" is false (true is refused), so "sliding_window" and
             "max_window_layers" are ignored.

Any other model_type (gemma, phi3, qwen3, ...) is refused in one line: running it as a Llama
would give wrong logits without any error.

To run real weights: download a small model of one of these families (config.json,
tokenizer.json and model.safetensors, or its shards with model.safetensors.index.json, or
pytorch_model.bin) into a directory, and call load_pretrained(directory).

Shapes: B batch, S sequence length (new tokens in this call), D = d_model, H heads, Hkv key/value
heads, Dh = D / H, F = d_ff, V vocabulary size, L layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .s14_rope import RopeScaling, rope_tables
from .s15_causal_mask import additive_causal_mask
from .s16_gqa import KVCache
from .s18_rmsnorm import DecoderBlock, RMSNorm

# config.json's "model_type" values this model runs (see "Three families" above).
FAMILIES = ("llama", "mistral", "qwen2")

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
    rope_scaling: RopeScaling | None = None  # Llama 3's long-context stretch of the slow frequencies
    norm_eps: float = 1e-5  # RMSNorm epsilon ("rms_norm_eps")
    n_experts: int = 0  # 0: dense SwiGLU feed-forward; > 0: mixture of experts with E experts
    top_k: int = 2  # experts per token, when n_experts > 0
    tie_weights: bool = False  # share one Parameter between embed_tokens and lm_head
    qkv_bias: bool = False  # biases on q_proj, k_proj, v_proj (Qwen2); o_proj never has one
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
            layers: nn.ModuleList of L DecoderBlock(D, H, Hkv, F, norm_eps, n_experts, top_k, dropout,
                qkv_bias).
            norm: RMSNorm(D, norm_eps), applied after the last block.
            lm_head: nn.Linear(D, V, bias=False); when config.tie_weights, its weight IS
                embed_tokens.weight (one Parameter, not a copy).
            rope_cos, rope_sin: (max_seq_len, Dh) buffers from rope_tables(Dh, max_seq_len,
                rope_base, rope_scaling), registered with persistent=False (they are not weights: a state dict
                does not hold them).
        Every nn.Linear and nn.Embedding weight is initialised from N(0, 0.02^2), as in Llama
        (nn.Embedding's default N(0, 1) would make the tied head's logits huge).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")

    def forward(
        self,
        tokens: torch.Tensor,
        caches: list[KVCache] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits for every position.

        Args:
            tokens: (B, S) torch.long ids: the whole sequence, or (with caches) only the new tokens.
            caches: None, or one KVCache per layer (from new_caches()); each layer appends the new
                keys and values to its cache. The new tokens' first position is
                offset = caches[0].length (0 without caches).
            attention_mask: None (every token is real), or (B, offset + S), 1 or True for a real
                token and 0 or False for padding, covering the cached positions and the new ones
                (see "Batches of prompts" above). Each row's positions then count its real
                tokens only, and padding keys are blocked: padded_positions gives the RoPE rows
                and the mask to use instead. It is not modified.
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

    def padded_positions(
        self, attention_mask: torch.Tensor, length: int, causal: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The RoPE rows and the additive mask of the last `length` positions of a padded batch.

        Example, one row [pad, pad, a, b] (attention_mask [0, 0, 1, 1]): positions [0, 0, 0, 1]
        (padding takes position 0; it is never seen), and query 2 (a) may see key 2 only.

        Args:
            attention_mask: (B, St), 1/True = real token; St = offset + length.
            length: S, the new positions (the last S columns).
            causal: (S, St) the additive causal mask of those positions.
        Returns:
            ((cos, sin), mask): cos and sin (B, S, Dh), rows of rope_cos/rope_sin at each token's
            own position; mask (B, 1, S, St), additive: causal, plus -inf at padding keys, except
            that a padding query keeps its own key.
        """
        # 1) a token's position counts the real tokens before it; padding clamps to 0
        # TODO
        # 2) block padding keys; the diagonal stays open so that a padding query sees one key
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
    """A LlamaConfig from the dict of a Hugging Face config.json (llama, mistral or qwen2), in either layout.

    Keys read: model_type (default "llama"), vocab_size, hidden_size (D), num_hidden_layers (L),
    num_attention_heads (H), num_key_value_heads (Hkv; default H), intermediate_size (F),
    max_position_embeddings, rms_norm_eps (default 1e-6), tie_word_embeddings (default False), and
    the RoPE settings: "rope_parameters" (transformers >= 5.0) when present, else the top-level
    "rope_theta" and "rope_scaling" (older). rope_theta defaults to 10000.0; rope_type "default" (or
    no scaling) means none; "llama3" reads factor, low_freq_factor, high_freq_factor and
    original_max_position_embeddings into a RopeScaling. An old file may say "type" for "rope_type".
    The families differ in two fields: qwen2 gives qkv_bias=True; a mistral "sliding_window" W
    that is not null makes max_seq_len min(W, max_position_embeddings). qwen2's sliding_window and
    max_window_layers are ignored (use_sliding_window is false). Other keys (pretraining_tp,
    torch_dtype, bos_token_id ...) change nothing here.

    Args:
        d: the parsed config.json.
    Returns:
        The LlamaConfig (dense, no dropout).
    Raises:
        ValueError: when the checkpoint needs something this model lacks, in one line naming it:
            a model_type other than llama, mistral or qwen2 ("config.json: model_type 'gemma' is not
            supported (llama, mistral, qwen2)"); else, all named in one line, a "head_dim" (not null)
            other than hidden_size / num_attention_heads, attention_bias or mlp_bias true,
            use_sliding_window true, a hidden_act other than "silu", a rope_type other than
            "default" or "llama3".
    """
    # 1) the family: mistral is Llama's layout, qwen2 adds biases; any other would run wrongly
    # TODO
    # 2) the RoPE settings: one dict from 5.0 on, top-level keys before
    # TODO
    # 3) Llama 3's stretch of the slow frequencies
    # TODO
    # 4) Mistral's sliding window changes nothing up to W positions: run those only, exactly
    # TODO
    raise NotImplementedError("s19_llama: not written yet — python -m grader hint s19_llama")


# kata: given
def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory, in the dtype it is stored in, whatever file layout it uses.

    Looked for in this order: model.safetensors; model.safetensors.index.json (its "weight_map"
    names the shard of every tensor); pytorch_model.bin (read with torch.load(weights_only=True):
    a pickle can run code, so never without it). bfloat16 and float16 stay as they are: copying
    them into a float32 model casts each tensor on the way, so no float32 copy of the whole
    checkpoint is ever held beside the model (for SmolLM2-135M that copy is 540 MB).

    Args:
        directory: the checkpoint directory.
    Returns:
        {name: tensor}, float32, bfloat16 or float16.
    Raises:
        FileNotFoundError: when none of the three is there (the message names them).
    """
    single, index, pickled = directory / "model.safetensors", directory / "model.safetensors.index.json", directory / "pytorch_model.bin"
    if single.is_file() or index.is_file():
        from safetensors.torch import load_file

        shards = [single] if single.is_file() else sorted(
            {directory / name for name in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()}
        )
        state_dict = {name: tensor for shard in shards for name, tensor in load_file(shard).items()}
    elif pickled.is_file():
        state_dict = torch.load(pickled, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    return state_dict


# kata: given
def load_pretrained(directory: str | Path) -> Llama:
    """Load a llama, mistral or qwen2 checkpoint directory: config.json plus its weights (read_weights).

    Args:
        directory: holds config.json and the weights.
    Returns:
        The Llama, in eval mode, float32.
    Raises:
        FileNotFoundError: no config.json or no weights; ValueError: a config the model cannot run.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a model directory?)")
    config = config_from_llama_json(json.loads((directory / "config.json").read_text(encoding="utf-8")))
    model = from_llama_state_dict(config, read_weights(directory))  # bfloat16 weights are cast as they are copied
    return model.float().eval()  # float(): float32 even where the weights were assigned, not copied
