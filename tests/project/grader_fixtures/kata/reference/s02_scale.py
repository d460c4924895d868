"""Fixture stage 2: multiply by a number."""

from __future__ import annotations

import torch


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x * factor.

    Args:
        x: any shape.
        factor: a Python number.
    Returns:
        a tensor of x's shape.
    """
    return x * factor
