"""Stage 2: token embeddings scaled by sqrt(d_model), and the fixed sinusoidal positional encoding.

Attention has no notion of order, so the model adds to each token's vector a vector that depends
only on its position ("Attention Is All You Need", section 3.5). For position ``pos`` and pair
index ``i`` (0 <= i < d_model / 2):

    PE[pos, 2i]     = sin(pos / 10000^(2i / d_model))
    PE[pos, 2i + 1] = cos(pos / 10000^(2i / d_model))

Example, d_model = 4: PE[0] = [0, 1, 0, 1] and PE[1] = [sin 1, cos 1, sin 0.01, cos 0.01].

Shapes: B batch, S sequence length, D = d_model, V vocabulary size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """Look up each token's vector and multiply it by sqrt(d_model) (section 3.4 of the paper)."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        """Create the lookup table.

        Args:
            vocab_size: V, the number of token ids.
            d_model: D, the width of each vector.
        Attributes:
            embedding: an nn.Embedding(V, D); its weight is the one a later stage ties to the
                output projection, so keep this name.
        """
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.d_model = d_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed and scale.

        Args:
            tokens: (B, S) torch.long ids.
        Returns:
            (B, S, D) float: embedding(tokens) * sqrt(D).
        """
        return self.embedding(tokens) * math.sqrt(self.d_model)


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed positional-encoding table.

    Args:
        max_len: the number of positions, 0 .. max_len - 1.
        d_model: D, which must be even (sin and cos come in pairs).
    Returns:
        (max_len, D) float32: sin of the angle in even columns, cos in odd columns (formula above).
    Raises:
        ValueError: if d_model is odd.
    """
    if d_model % 2:
        raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    pair = torch.arange(0, d_model, 2, dtype=torch.float32)  # 2i for each pair, (D/2,)
    inverse_frequency = torch.exp(-math.log(10000.0) * pair / d_model)  # 10000^(-2i/D), (D/2,)
    angle = position * inverse_frequency  # (max_len, D/2)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table


class PositionalEncoding(nn.Module):
    """Add the sinusoidal table to a batch of embeddings, then apply dropout."""

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.1) -> None:
        """Precompute the table.

        Args:
            d_model: D.
            max_len: the longest sequence this module accepts.
            dropout: the dropout probability applied after the addition.
        Attributes:
            table: a (max_len, D) buffer from sinusoidal_table, registered with
                register_buffer(..., persistent=False): it moves with .to(device) but is not
                learned and not saved.
            dropout: an nn.Dropout(dropout).
        """
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add positions 0 .. S-1.

        Args:
            x: (B, S, D) embeddings, S <= max_len.
        Returns:
            (B, S, D): dropout(x + table[:S]).
        """
        length = x.size(1)
        if length > self.table.size(0):
            raise ValueError(f"sequence length {length} exceeds max_len {self.table.size(0)}")
        return self.dropout(x + self.table[:length])
