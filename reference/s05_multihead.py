"""Stage 5: multi-head attention.

Instead of one attention over D-wide vectors, project queries, keys and values, split them into
H heads of size Dh = D / H, let every head attend on its own, and concatenate the heads back:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_O,   head_h = Attention(Q W_Q^h, K W_K^h, V W_V^h)

Self-attention passes the same tensor as query, key and value; cross-attention (the decoder
reading the encoder) passes the decoder's states as query and the encoder's as key and value.

Shapes: B batch, Sq query length, Sk key length, D = d_model, H heads, Dh = D / H.
"""

from __future__ import annotations

import torch
from torch import nn

from .s03_attention import scaled_dot_product_attention


class MultiHeadAttention(nn.Module):
    """Project, split into heads, attend (stage 3), merge the heads, project."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.1, bias: bool = True) -> None:
        """Create the four projections.

        Args:
            d_model: D; must be divisible by n_heads.
            n_heads: H.
            dropout: dropout on the attention weights, in training only.
            bias: whether the four nn.Linear layers have biases.
        Attributes:
            q_proj, k_proj, v_proj, out_proj: nn.Linear(D, D, bias=bias) each.
            n_heads, head_size (Dh), dropout (the float).
        Raises:
            ValueError: if d_model is not divisible by n_heads.
        """
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_size = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, H, S, Dh): head h holds features h*Dh .. (h+1)*Dh - 1 of every position."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_size).transpose(1, 2)  # (B, H, S, Dh)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, S, Dh) -> (B, S, D): the exact inverse of split_heads."""
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_size)  # (B, S, D)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from every query position to the key positions, in H heads at once.

        Args:
            query: (B, Sq, D).
            key: (B, Sk, D).
            value: (B, Sk, D).
            mask: None, or torch.bool broadcastable to (B, H, Sq, Sk), True = may attend: a
                (Sq, Sk) causal mask, a (B, 1, 1, Sk) padding mask, or their combination.
        Returns:
            (B, Sq, D).
        """
        # 1) project, and split into heads
        q = self.split_heads(self.q_proj(query))  # (B, H, Sq, Dh)
        k = self.split_heads(self.k_proj(key))  # (B, H, Sk, Dh)
        v = self.split_heads(self.v_proj(value))  # (B, H, Sk, Dh)
        # 2) attend in every head at once; dropout only while training
        attended, _ = scaled_dot_product_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        # 3) concatenate the heads, and mix them with the output projection
        return self.out_proj(self.merge_heads(attended))  # (B, Sq, D)
