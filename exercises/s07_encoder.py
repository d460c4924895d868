"""Stage 7: residual sub-layers with layer norm, the encoder layer, and the encoder stack.

Every sub-layer (attention, feed-forward) is wrapped in a residual connection with a layer norm.
Two placements are in use:

    post-LN (the paper, norm_first=False):  x = LayerNorm(x + dropout(sublayer(x)))
    pre-LN  (most models since, True):      x = x + dropout(sublayer(LayerNorm(x)))

Pre-LN keeps an un-normalised path from input to output and trains more stably without warm-up.

An encoder layer is self-attention then feed-forward, each in a sub-layer connection; the encoder
is N such layers and a final LayerNorm (as in torch.nn.Transformer, which applies it for both
placements).

Shapes: B batch, S source length, D = d_model, H heads, F = d_ff.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .s05_multihead import MultiHeadAttention
from .s06_feedforward import FeedForward


class SublayerConnection(nn.Module):
    """A residual connection around any sub-layer, with layer norm after (post-LN) or before (pre-LN)."""

    def __init__(self, d_model: int, dropout: float = 0.1, norm_first: bool = False) -> None:
        """Create the norm and the dropout.

        Args:
            d_model: D, the size the LayerNorm normalises over (the last dimension).
            dropout: dropout on the sub-layer's output, before it is added to the residual.
            norm_first: False = post-LN, True = pre-LN.
        Attributes:
            norm: nn.LayerNorm(D); dropout: nn.Dropout(dropout); norm_first: the bool.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s07_encoder: not written yet — python -m grader hint s07_encoder")

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply ``sublayer`` with its residual connection and norm.

        Args:
            x: (B, S, D).
            sublayer: a function from (B, S, D) to (B, S, D), such as lambda x: attention(x, x, x, mask).
        Returns:
            (B, S, D): post-LN norm(x + dropout(sublayer(x))), or pre-LN x + dropout(sublayer(norm(x))).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s07_encoder: not written yet — python -m grader hint s07_encoder")


class EncoderLayer(nn.Module):
    """Self-attention, then feed-forward, each inside a SublayerConnection."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False) -> None:
        """Create the sub-layers.

        Args:
            d_model: D. n_heads: H. d_ff: F. dropout: used everywhere in the layer.
            norm_first: False = post-LN, True = pre-LN.
        Attributes:
            self_attn: MultiHeadAttention(D, H, dropout); feed_forward: FeedForward(D, F, dropout);
            sublayers: nn.ModuleList of two SublayerConnection, for attention and feed-forward.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s07_encoder: not written yet — python -m grader hint s07_encoder")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, D) -> (B, S, D).

        Args:
            x: (B, S, D).
            mask: None or a (B, 1, 1, S) padding mask (True = real token).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s07_encoder: not written yet — python -m grader hint s07_encoder")


class Encoder(nn.Module):
    """N encoder layers, then a final LayerNorm."""

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = False,
    ) -> None:
        """Create the stack.

        Args:
            n_layers: N. The others as in EncoderLayer.
        Attributes:
            layers: nn.ModuleList of N EncoderLayer; norm: nn.LayerNorm(D).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s07_encoder: not written yet — python -m grader hint s07_encoder")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, D) -> (B, S, D): every layer in order, then the norm. mask as in EncoderLayer."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s07_encoder: not written yet — python -m grader hint s07_encoder")
