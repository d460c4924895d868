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
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s05_multihead: not written yet — python -m grader hint s05_multihead")

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, H, S, Dh): head h holds features h*Dh .. (h+1)*Dh - 1 of every position."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s05_multihead: not written yet — python -m grader hint s05_multihead")

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, S, Dh) -> (B, S, D): the exact inverse of split_heads."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s05_multihead: not written yet — python -m grader hint s05_multihead")

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
        # TODO
        # 2) attend in every head at once; dropout only while training
        # TODO
        # 3) concatenate the heads, and mix them with the output projection
        # TODO
        raise NotImplementedError("s05_multihead: not written yet — python -m grader hint s05_multihead")
