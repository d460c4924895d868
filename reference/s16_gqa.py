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
    if n_rep == 1:
        return x
    batch, n_kv_heads, length, head_size = x.shape
    # insert a repeat axis right after the head axis, expand it, and fold it into the heads
    x = x[:, :, None].expand(batch, n_kv_heads, n_rep, length, head_size)  # (B, Hkv, n_rep, S, Dh)
    return x.reshape(batch, n_kv_heads * n_rep, length, head_size)  # (B, H, S, Dh)


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
        return 0 if self.keys is None else self.keys.size(-2)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys and values after the cached ones, and return everything cached.

        Args:
            k: (B, Hkv, S, Dh), the new positions' keys (already rotated if RoPE is used).
            v: (B, Hkv, S, Dh), their values.
        Returns:
            (keys, values): each (B, Hkv, St, Dh), the cached positions first, then the new ones;
            St = old length + S.
        """
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = torch.cat([self.keys, k], dim=-2)  # along the sequence axis
            self.values = torch.cat([self.values, v], dim=-2)
        return self.keys, self.values


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
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads})")
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_size = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, n_heads * self.head_size, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_size, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_size, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * self.head_size, d_model, bias=False)

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
        batch, length, _ = x.shape
        # 1) project, and split into heads
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_size).transpose(1, 2)  # (B, H, S, Dh)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_size).transpose(1, 2)  # (B, Hkv, S, Dh)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_size).transpose(1, 2)  # (B, Hkv, S, Dh)
        # 2) rotate queries and keys by their positions; values carry content, not position
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos, sin, layout="BHSD")
            k = apply_rope(k, cos, sin, layout="BHSD")
        # 3) the cache stores the Hkv heads (that is the memory saving), before repetition
        if cache is not None:
            k, v = cache.update(k, v)  # (B, Hkv, St, Dh)
        # 4) each group of n_rep query heads reads the same K/V head
        n_rep = self.n_heads // self.n_kv_heads
        k = repeat_kv(k, n_rep)  # (B, H, St, Dh)
        v = repeat_kv(v, n_rep)  # (B, H, St, Dh)
        # 5) attend: the additive mask is simply added to the scores
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)  # (B, H, S, St)
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights, p=self.dropout, training=self.training)
        attended = weights @ v  # (B, H, S, Dh)
        # 6) merge the heads and mix them
        attended = attended.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_size)  # (B, S, H * Dh)
        return self.o_proj(attended)  # (B, S, D)
