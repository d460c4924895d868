"""A deliberately broken s02_scale: calls sys.exit(0) as if all were well."""

import sys

import torch


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    sys.exit(0)
