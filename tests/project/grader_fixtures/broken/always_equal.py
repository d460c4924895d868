"""A deliberately dishonest s02_scale: returns an object that claims to equal anything."""

import torch


class Anything:
    shape = dtype = None

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __getattr__(self, name):
        return self


def scale(x: torch.Tensor, factor: float):
    return Anything()
