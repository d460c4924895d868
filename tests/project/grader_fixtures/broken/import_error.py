"""A deliberately broken s02_scale: imports a module that does not exist."""

import torch
import a_module_that_does_not_exist  # noqa: F401


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor
