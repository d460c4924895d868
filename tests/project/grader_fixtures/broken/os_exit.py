"""A deliberately broken s02_scale: leaves the process with os._exit(0), skipping pytest's report."""

import os

import torch


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    os._exit(0)
