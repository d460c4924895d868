"""Stage 10: the Noam learning-rate schedule and the label-smoothed loss.

The schedule (section 5.3 of the paper) rises linearly for ``warmup`` steps, then decays as the
inverse square root of the step:

    lr(step) = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

The two terms are equal at step = warmup, where the rate peaks at factor * (d_model * warmup)^-0.5.
Example: d_model = 512, warmup = 4000, factor = 1: lr(4000) = 1 / sqrt(512 * 4000) ≈ 6.99e-4.

Label smoothing (section 5.4): instead of putting all the target probability on the true token,
put 1 - smoothing there and spread ``smoothing`` evenly over the other V - 2 tokens (every token
except the true one and padding, which must never be predicted). Positions whose target is
padding do not count at all. The loss is the cross-entropy against that smoothed distribution,
averaged over the counted positions. With smoothing = 0 it is the ordinary cross-entropy
that ignores padding.

Shapes: N positions (any leading shape flattened), V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The Noam learning rate at ``step``; step 0 is treated as step 1 (0^-0.5 is infinite).

    Args:
        step: the optimizer step, starting at 0.
        d_model: D.
        warmup: the number of warm-up steps (> 0).
        factor: a constant multiplier.
    Returns:
        The learning rate, a float.
    """
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def noam_lambda(d_model: int, warmup: int, factor: float = 1.0) -> Callable[[int], float]:
    """A function of the step for torch.optim.lr_scheduler.LambdaLR.

    LambdaLR multiplies the optimizer's base learning rate by this function's value, so build
    the optimizer with lr=1.0 to get exactly noam_lr.
    """
    return lambda step: noam_lr(step, d_model, warmup, factor)


class LabelSmoothingLoss(nn.Module):
    """Cross-entropy against a label-smoothed target distribution that ignores padding."""

    def __init__(self, vocab_size: int, pad_id: int, smoothing: float = 0.1) -> None:
        """Args: vocab_size: V (> 2). pad_id: the padding id. smoothing: in [0, 1)."""
        super().__init__()
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.smoothing = smoothing

    def smoothed_targets(self, target: torch.Tensor) -> torch.Tensor:
        """The target distribution for each position.

        Args:
            target: (N,) torch.long ids.
        Returns:
            (N, V) float32: 1 - smoothing at the target id, 0 at pad_id, smoothing / (V - 2)
            everywhere else. Rows whose target is pad_id are all zero.
        """
        distribution = torch.full(
            (target.size(0), self.vocab_size), self.smoothing / (self.vocab_size - 2), device=target.device
        )
        distribution.scatter_(1, target.unsqueeze(1), 1.0 - self.smoothing)
        distribution[:, self.pad_id] = 0.0
        distribution[target == self.pad_id] = 0.0
        return distribution

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean smoothed cross-entropy over the non-padding positions.

        Args:
            logits: (..., V) unnormalised scores.
            target: (...) torch.long ids, the same leading shape as logits.
        Returns:
            A scalar: sum over counted positions of -sum_v q(v) log_softmax(logits)(v), divided by
            the number of counted positions (0.0 if there are none).
        """
        logits = logits.reshape(-1, self.vocab_size)  # (N, V)
        target = target.reshape(-1)  # (N,)
        log_probs = torch.log_softmax(logits, dim=-1)
        per_position = -(self.smoothed_targets(target).to(log_probs) * log_probs).sum(dim=-1)  # (N,)
        counted = target != self.pad_id
        return per_position[counted].sum() / counted.sum().clamp(min=1)
