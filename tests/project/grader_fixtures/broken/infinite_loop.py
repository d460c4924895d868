"""A deliberately broken s02_scale: never returns."""

import torch


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    while True:
        pass
