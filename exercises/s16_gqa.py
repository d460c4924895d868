"""Stage 16: grouped-query attention (GQA) and the KV cache.

Multi-head attention (stage 5) gives every query head its own key and value head. When a model
generates text it must keep every past key and value of every layer in memory (the KV cache),
and that cache, not the weights, is what fills the accelerator. Grouped-query attention keeps H
query heads but only Hkv key/value heads, Hkv dividing H: each GROUP of n_rep = H / Hkv
consecutive query heads shares one K/V head.

    query head h  reads  key/value head  h // n_rep

    Hkv = H   multi-head attention (MHA), every query head has its own K/V
    Hkv = 1   multi-query attention (MQA), all query heads share a single K/V
    between   GQA: Llama 2 70B uses H = 64, Hkv = 8, an 8x smaller cache

The K and V projections shrink by the same factor: D -> Hkv * Dh instead of D -> H * Dh. To
attend, the K/V heads are repeated so that each query head finds its own copy -- with
repeat_interleave semantics: heads [a, b] with n_rep = 2 become [a, a, b, b], never [a, b, a, b].

Worked shape example: d_model = 512, H = 4, so Dh = 128. A batch of one
sequence of 10 tokens projects to q of shape (1, 10, 512) = (B, S, H * Dh); viewed as
(1, 10, 4, 128) it is (batch, sequence, heads, head size), and transposed to (1, 4, 10, 128)
it is ready for attention, one (10, 128) matrix per head.

Rotary embeddings (stage 14) rotate queries and keys, never values: the rotation encodes where
a token is, which matters for who attends to whom, not for what is read. Keys are rotated
BEFORE they enter the cache, so a cached key keeps the rotation of its own position.

With a KV cache, a forward call sees only the new tokens x; their keys and values are appended to
the cache, and the queries attend to every cached position. The caller passes the rope rows and
the additive mask (stage 15) for those positions: rope[start:start + S], mask (S, start + S).

Shapes: B batch, S new positions, St = total positions in the cache (St = S without one),
D = d_model, H query heads, Hkv key/value heads, Dh = D / H head size, n_rep = H / Hkv.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .s14_rope import apply_rope


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head n_rep times in place: heads [a, b] -> [a, a, b, b].

    Output head h is input head h // n_rep (torch.repeat_interleave on the head axis, not
    torch.repeat / tile, which would give [a, b, a, b] and pair query heads with the wrong K/V).

    Args:
        x: (B, Hkv, S, Dh).
        n_rep: how many query heads share each K/V head (H / Hkv), >= 1.
    Returns:
        (B, Hkv * n_rep, S, Dh); x itself when n_rep == 1.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s16_gqa: not written yet — python -m grader hint s16_gqa")


class KVCache:
    """One layer's cache of keys and values, grown along the sequence axis by every forward."""

    # kata: given
    def __init__(self) -> None:
        """An empty cache.

        Attributes:
            keys, values: None until the first update, then (B, Hkv, St, Dh) tensors.
        """
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """St, the number of cached positions (0 when empty)."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s16_gqa: not written yet — python -m grader hint s16_gqa")

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys and values after the cached ones, and return everything cached.

        Args:
            k: (B, Hkv, S, Dh), the new positions' keys (already rotated if RoPE is used).
            v: (B, Hkv, S, Dh), their values.
        Returns:
            (keys, values): each (B, Hkv, St, Dh), the cached positions first, then the new ones;
            St = old length + S.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s16_gqa: not written yet — python -m grader hint s16_gqa")


class GroupedQueryAttention(nn.Module):
    """Self-attention with H query heads sharing Hkv key/value heads in groups."""

    def __init__(
        self, d_model: int, n_heads: int, n_kv_heads: int, dropout: float = 0.0, qkv_bias: bool = False
    ) -> None:
        """Create the four projections (the names of Llama checkpoints).

        Args:
            d_model: D; must be divisible by n_heads.
            n_heads: H, the number of query heads.
            n_kv_heads: Hkv, the number of key/value heads; must divide n_heads.
            dropout: dropout on the attention weights, in training only.
            qkv_bias: biases on q_proj, k_proj and v_proj (Qwen2: True; Llama, Mistral: False);
                o_proj never has a bias.
        Attributes:
            q_proj: nn.Linear(D, H * Dh, bias=qkv_bias); k_proj, v_proj: nn.Linear(D, Hkv * Dh,
            bias=qkv_bias); o_proj: nn.Linear(H * Dh, D, bias=False); n_heads, n_kv_heads,
            head_size (Dh), dropout (the float).
        Raises:
            ValueError: if n_heads does not divide d_model or n_kv_heads does not divide n_heads.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s16_gqa: not written yet — python -m grader hint s16_gqa")

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend from the S new positions of x to themselves and to every cached position.

        softmax(q kᵀ / sqrt(Dh) + mask) v in every query head, with dropout on the weights in
        training only. Do not call torch.nn.functional.scaled_dot_product_attention: the tests
        compare against it.

        Args:
            x: (B, S, D).
            mask: None (attend everywhere), or an ADDITIVE float mask broadcastable to
                (B, H, S, St): 0.0 where allowed, -inf where not (stage 15).
            rope: None, or (cos, sin), each (S, Dh), or (B, S, Dh) when every sequence has its
                own positions: the RoPE rows for the positions of x, applied with apply_rope
                (stage 14) to queries and keys (not values), before the keys enter the cache.
            cache: None, or this layer's KVCache: x's keys and values are appended to it and
                the queries attend to all St cached positions.
        Returns:
            (B, S, D).
        """
        # 1) project, and split into heads
        # TODO
        # 2) rotate queries and keys by their positions; values carry content, not position
        # TODO
        # 3) the cache stores the Hkv heads (that is the memory saving), before repetition
        # TODO
        # 4) each group of n_rep query heads reads the same K/V head
        # TODO
        # 5) attend: the additive mask is simply added to the scores
        # TODO
        # 6) merge the heads and mix them
        # TODO
        raise NotImplementedError("s16_gqa: not written yet — python -m grader hint s16_gqa")
