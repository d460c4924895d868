"""Stage 6: the position-wise feed-forward network.

    FFN(x) = W_2 dropout(ReLU(W_1 x + b_1)) + b_2

The same two-layer network is applied to every position separately: positions do not mix here
(that was attention's job). The hidden width d_ff is usually 4 * d_model.

Shapes: B batch, S sequence length, D = d_model, F = d_ff.
"""

from __future__ import annotations

import torch
from torch import nn


class FeedForward(nn.Module):
    """linear (D -> F), ReLU, dropout, linear (F -> D)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1) -> None:
        """Create the two layers.

        Args:
            d_model: D.
            d_ff: F, the hidden width.
            dropout: dropout on the hidden activation.
        Attributes:
            linear1: nn.Linear(D, F); linear2: nn.Linear(F, D); dropout: nn.Dropout(dropout).
        """
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, S, D), each position on its own."""
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))
