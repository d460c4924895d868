"""Fixture suite for s03_combo."""

import torch

from checks import assert_close


def test_combo_is_twice_the_sum(stage):
    a, b = torch.randn(3), torch.randn(3)
    expected = torch.mul(torch.add(a, b), 2.0)
    assert_close(stage.combo(a, b), expected, "combo(a, b)", atol=1e-6, hint="Is it scale(add(a, b), 2.0)?")


def test_combo_of_zeros_is_zero(stage):
    zeros = torch.zeros(3)
    assert_close(stage.combo(zeros, zeros), zeros, "combo(0, 0)", atol=0.0, hint="Twice zero is zero.")
