"""Fixture stage 1: elementwise addition."""

from __future__ import annotations

import torch


def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b, elementwise.

    Args:
        a: any shape.
        b: the same shape as a.
    Returns:
        a tensor of that shape.
    """
    return a + b
