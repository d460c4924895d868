"""A deliberately broken s02_scale: allocates memory without end."""

import torch


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    hoard = []
    while True:
        hoard.append(b"x" * 2**26)  # 64 MiB a step, every byte written
