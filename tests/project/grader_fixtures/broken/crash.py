"""A deliberately broken s02_scale: kills its own process (os.abort, like a segfault in an extension)."""

import os

import torch


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    os.abort()
