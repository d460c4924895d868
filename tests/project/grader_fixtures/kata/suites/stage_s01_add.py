"""Fixture suite for s01_add."""

import torch

from checks import assert_close


def test_add_matches_torch(stage):
    a, b = torch.randn(3), torch.randn(3)
    expected = torch.add(a, b)
    assert_close(stage.add(a, b), expected, "add(a, b)", atol=0.0, hint="Is it a + b, elementwise?")


def test_add_of_zeros_is_zero(stage):
    zeros = torch.zeros(2, 2)
    assert_close(stage.add(zeros, zeros), zeros, "add(0, 0)", atol=0.0, hint="Adding zeros gives zeros.")
