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
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.sublayers = nn.ModuleList(SublayerConnection(d_model, dropout, norm_first) for _ in range(3))

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
        x = self.sublayers[0](x, lambda y: self.self_attn(y, y, y, tgt_mask))
        x = self.sublayers[1](x, lambda y: self.cross_attn(y, memory, memory, src_mask))
        return self.sublayers[2](x, self.feed_forward)


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
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D): every layer in order, then the norm. Arguments as in DecoderLayer."""
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.norm(x)
