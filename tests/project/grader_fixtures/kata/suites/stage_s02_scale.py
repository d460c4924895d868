"""Fixture suite for s02_scale."""

import torch

from checks import assert_close


def test_scale_matches_torch(stage):
    x = torch.randn(4)
    expected = torch.mul(x, 3.0)
    assert_close(stage.scale(x, 3.0), expected, "scale(x, 3)", atol=0.0, hint="Is it x * factor?")


def test_scale_by_one_is_identity(stage):
    x = torch.randn(2, 3)
    assert_close(stage.scale(x, 1.0), x.clone(), "scale(x, 1)", atol=0.0, hint="Multiplying by one changes nothing.")


def test_scale_by_zero_is_zero(stage):
    x = torch.randn(5)
    assert_close(stage.scale(x, 0.0), torch.zeros(5), "scale(x, 0)", atol=0.0, hint="Multiplying by zero gives zeros.")
