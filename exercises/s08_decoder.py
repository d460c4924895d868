"""Stage 8: the decoder layer and stack.

A decoder layer has three sub-layers, each inside a SublayerConnection (stage 7):

    1) masked self-attention over the target so far (the causal mask hides the future)
    2) cross-attention: queries from the decoder, keys and values from the encoder's output
       (the "memory"), with the source padding mask
    3) the feed-forward network

The decoder is N such layers and a final LayerNorm, as in torch.nn.Transformer.

Shapes: B batch, S source length, T target length, D = d_model, H heads, F = d_ff.
"""

from __future__ import annotations

import torch
from torch import nn

from .s05_multihead import MultiHeadAttention
from .s06_feedforward import FeedForward
from .s07_encoder import SublayerConnection


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the memory, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False) -> None:
        """Create the sub-layers.

        Args:
            d_model: D. n_heads: H. d_ff: F. dropout: used everywhere in the layer.
            norm_first: False = post-LN, True = pre-LN.
        Attributes:
            self_attn, cross_attn: MultiHeadAttention(D, H, dropout) each;
            feed_forward: FeedForward(D, F, dropout);
            sublayers: nn.ModuleList of three SublayerConnection, in the order above.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s08_decoder: not written yet — python -m grader hint s08_decoder")

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D).

        Args:
            x: (B, T, D), the target so far.
            memory: (B, S, D), the encoder's output.
            src_mask: None or (B, 1, 1, S): which memory positions are real tokens.
            tgt_mask: None or a mask broadcastable to (B, 1, T, T): causal, and padding if any.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s08_decoder: not written yet — python -m grader hint s08_decoder")


class Decoder(nn.Module):
    """N decoder layers, then a final LayerNorm."""

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
            n_layers: N. The others as in DecoderLayer.
        Attributes:
            layers: nn.ModuleList of N DecoderLayer; norm: nn.LayerNorm(D).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s08_decoder: not written yet — python -m grader hint s08_decoder")

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D): every layer in order, then the norm. Arguments as in DecoderLayer."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s08_decoder: not written yet — python -m grader hint s08_decoder")
