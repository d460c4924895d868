"""Stage 18: RMSNorm, and the pre-norm decoder block of Llama.

RMSNorm. LayerNorm (Part I) subtracts the mean and divides by the standard deviation. RMSNorm
skips the centring and divides by the root mean square alone, then applies a learned gain:

    RMSNorm(x) = x / sqrt(mean(x²) + eps) * weight        (mean over the last axis, D)

It is cheaper and works as well; eps sits INSIDE the square root (torch.nn.RMSNorm's formula).
Worked example, x = [1, 2, 3, 4], eps = 0, weight = 1: mean(x²) = (1 + 4 + 9 + 16) / 4 = 7.5,
sqrt = 2.7386, so RMSNorm(x) = [0.3651, 0.7303, 1.0954, 1.4606]. (LayerNorm would centre first
and give [-1.3416, -0.4472, 0.4472, 1.3416].)

The decoder block. Part I's paper normalised AFTER each residual sum (post-norm); Llama, like
GPT-2 onwards, normalises the INPUT of each sub-layer and leaves the residual stream untouched
(pre-norm), which trains deeper stacks stably:

    h   = x + attn(attn_norm(x), mask, rope, cache)      grouped-query attention (stage 16)
    out = h + ffn(ffn_norm(h))                           SwiGLU or mixture of experts (stage 17)

The block returns (out, aux): aux is the mixture of experts' load-balancing loss, or a zero
scalar for the dense SwiGLU, so that a model can sum the aux of its blocks either way.

Shapes: B batch, S sequence, St cached + new positions, D = d_model, H query heads,
Hkv key/value heads, Dh head size, F = d_ff.
"""

from __future__ import annotations

import torch
from torch import nn

from .s16_gqa import GroupedQueryAttention, KVCache
from .s17_swiglu_moe import MixtureOfExperts, SwiGLU


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight over the last axis; no mean subtraction, no bias."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        """Create the gain.

        Do not use torch.nn.RMSNorm or torch.nn.functional.rms_norm: the tests compare against them.

        Args:
            d_model: D, the size of the last axis.
            eps: added to mean(x²) inside the square root.
        Attributes:
            weight: nn.Parameter of shape (D,), initialised to ones; eps.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s18_rmsnorm: not written yet — python -m grader hint s18_rmsnorm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every position by its root mean square and scale by the gain.

        Args:
            x: (..., D).
        Returns:
            (..., D), same dtype.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s18_rmsnorm: not written yet — python -m grader hint s18_rmsnorm")


class DecoderBlock(nn.Module):
    """One Llama layer: pre-norm grouped-query attention and pre-norm feed-forward, each with a skip."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        d_ff: int,
        norm_eps: float = 1e-5,
        n_experts: int = 0,
        top_k: int = 2,
        dropout: float = 0.0,
        qkv_bias: bool = False,
    ) -> None:
        """Create the two norms and the two sub-layers.

        Args:
            d_model: D.
            n_heads: H, query heads.
            n_kv_heads: Hkv, key/value heads (divides H).
            d_ff: F, the feed-forward hidden width (of each expert, with experts).
            norm_eps: eps of both RMSNorms.
            n_experts: 0 for a dense SwiGLU feed-forward; E > 0 for a MixtureOfExperts.
            top_k: experts per token (used only when n_experts > 0).
            dropout: attention-weight dropout, in training only.
            qkv_bias: biases on the attention's q, k and v projections (Qwen2); never on o_proj.
        Attributes:
            attn_norm: RMSNorm(D); attn: GroupedQueryAttention(D, H, Hkv, dropout, qkv_bias);
            ffn_norm: RMSNorm(D); ffn: SwiGLU(D, F), or MixtureOfExperts(D, F, E, top_k).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s18_rmsnorm: not written yet — python -m grader hint s18_rmsnorm")

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-norm attention with a skip, then pre-norm feed-forward with a skip.

        Args:
            x: (B, S, D).
            mask: None or the ADDITIVE mask for attention, broadcastable to (B, H, S, St).
            rope: None or (cos, sin), each (S, Dh), for the positions of x.
            cache: None or this layer's KVCache.
        Returns:
            (out, aux): out (B, S, D); aux a scalar (0-dim) tensor, the experts' load-balancing
            loss, or 0.0 for the dense feed-forward.
        """
        # 1) attention on the normalised input; the skip carries the raw x
        # TODO
        # 2) feed-forward on the normalised h; the skip carries the raw h
        # TODO
        raise NotImplementedError("s18_rmsnorm: not written yet — python -m grader hint s18_rmsnorm")
