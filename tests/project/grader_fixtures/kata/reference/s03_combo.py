"""Fixture stage 3: builds on stages 1 and 2."""

from __future__ import annotations

import torch

from .s01_add import add
from .s02_scale import scale


def combo(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2 * (a + b), using add and scale.

    Args:
        a: any shape.
        b: the same shape as a.
    Returns:
        a tensor of that shape.
    """
    return scale(add(a, b), 2.0)
