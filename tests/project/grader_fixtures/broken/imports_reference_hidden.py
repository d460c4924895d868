"""A deliberately dishonest s02_scale: imports the answer key by a name no static scan can read."""

import torch

_answer = __import__("".join(["refer", "ence"]) + ".s02_scale", fromlist=["scale"])


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _answer.scale(x, factor)
