"""Stage 10: the Noam learning-rate schedule and the label-smoothed loss.

Oracles: hand-worked schedule values (arithmetic in the docstrings), torch.optim.lr_scheduler.LambdaLR
driving a real optimizer, slow loops that build the smoothed target distribution, and
torch.nn.functional.cross_entropy (with ignore_index, and with probability targets).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from checks import assert_close, assert_in_place_safe, assert_tensor, call, fail

HINT_FORMULA = "lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), the formula of the docstring."
HINT_WARMUP = ("During warm-up (step <= warmup) the second term, step * warmup^-1.5, is the smaller one: the rate "
               "rises linearly. Is the min(...) with the warm-up term missing, or the exponent on warmup not -1.5? "
               + HINT_FORMULA)
HINT_DECAY = ("After warm-up the rate decays as step^-0.5: four times the step, half the rate. Is the exponent on "
              "step -0.5, and on warmup -1.5? " + HINT_FORMULA)
HINT_STEP0 = "LambdaLR asks for step 0 first, and 0**-0.5 divides by zero: treat step 0 as step 1."
HINT_SPREAD = ("The smoothing mass is spread over V - 2 classes: every class except the true one and padding. "
               "The padding column must be exactly 0.")
HINT_PAD_ROWS = ("Positions whose target is padding do not count: their rows are all zero, and the loss is averaged "
                 "over the non-padding positions only.")
HINT_EMPTY = ("With no counted positions the loss is 0.0, not 0/0 = NaN: divide by the count clamped to at "
              "least 1.")


def formula(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The oracle, written from the paper."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def lr_of(stage, step, d_model, warmup, factor=1.0) -> float:
    """Call the learner's noam_lr; a crash becomes a failure that names the likely cause."""
    try:
        value = stage.noam_lr(step, d_model, warmup, factor)
    except ZeroDivisionError as error:
        fail(f"noam_lr(step={step}, d_model={d_model}, warmup={warmup}) raised ZeroDivisionError: {error}", HINT_STEP0)
    if not isinstance(value, float):
        fail(f"noam_lr(step={step}, ...): expected a Python float, got {type(value).__name__} ({value!r})",
             "Return a plain float (use ** on Python numbers, or .item() on a tensor).")
    if not math.isfinite(value):
        fail(f"noam_lr(step={step}, d_model={d_model}, warmup={warmup}): expected a finite rate, got {value}",
             HINT_STEP0)
    return value


def check_value(got: float, expected: float, what: str, hint: str, rel: float = 1e-9) -> None:
    if not math.isclose(got, expected, rel_tol=rel, abs_tol=0.0):
        fail(f"{what}: expected {expected:.10g}, got {got:.10g}", hint)


# --- the Noam schedule -------------------------------------------------------------------------------------


def test_noam_small_example_with_exact_values(stage):
    """d_model = 16, warmup = 4, factor = 2: 16**-0.5 = 1/4 and 4**-1.5 = 1/8, so
    lr(1) = 2 * 1/4 * min(1, 1/8) = 1/16,  lr(2) = 2 * 1/4 * min(0.707, 2/8) = 1/8,
    lr(4) = 2 * 1/4 * min(1/2, 4/8) = 1/4 (the peak),  lr(16) = 2 * 1/4 * min(1/4, 16/8) = 1/8."""
    for step, expected in [(1, 0.0625), (2, 0.125), (4, 0.25), (16, 0.125)]:
        check_value(lr_of(stage, step, 16, 4, 2.0), expected, f"noam_lr(step={step}, d_model=16, warmup=4, factor=2)",
                    HINT_WARMUP if step < 4 else HINT_DECAY)


def test_noam_paper_example(stage):
    """d_model = 512, warmup = 4000, factor = 1: 512**-0.5 = 0.0441942 and 4000**-1.5 = 3.95285e-6, so
    lr(1) = 0.0441942 * 3.95285e-6 = 1.746928e-7; lr(100) = 100 * lr(1) = 1.746928e-5;
    lr(4000) = 0.0441942 * 4000**-0.5 = 0.0441942 * 0.0158114 = 6.987712e-4 = 1 / sqrt(512 * 4000);
    lr(16000) = 0.0441942 * 0.00790569 = 3.493856e-4, half the peak."""
    for step, expected in [(1, 1.746928107e-7), (100, 1.746928107e-5), (4000, 6.987712430e-4), (16000, 3.493856215e-4)]:
        check_value(lr_of(stage, step, 512, 4000), expected, f"noam_lr(step={step}, d_model=512, warmup=4000)",
                    HINT_WARMUP if step < 4000 else HINT_DECAY, rel=1e-8)


def test_noam_rises_linearly_during_warmup(stage):
    first = lr_of(stage, 1, 64, 50)
    for step in (2, 10, 25, 50):
        check_value(lr_of(stage, step, 64, 50) / first, float(step), f"lr({step}) / lr(1) with warmup=50",
                    HINT_WARMUP, rel=1e-9)


def test_noam_peaks_at_the_end_of_warmup(stage):
    rates = [lr_of(stage, step, 64, 50) for step in range(1, 151)]
    best = max(range(len(rates)), key=rates.__getitem__) + 1
    if best != 50:
        fail(f"the schedule with warmup=50 peaks at step {best}, expected step 50", HINT_WARMUP + " " + HINT_DECAY)
    check_value(rates[49], 64**-0.5 * 50**-0.5, "peak lr(50) = (d_model * warmup)**-0.5", HINT_DECAY)


def test_noam_decays_as_inverse_square_root_after_warmup(stage):
    for step in (50, 60, 200):
        ratio = lr_of(stage, 4 * step, 64, 50) / lr_of(stage, step, 64, 50)
        check_value(ratio, 0.5, f"lr({4 * step}) / lr({step}) after warmup=50", HINT_DECAY, rel=1e-9)


def test_noam_factor_scales_the_whole_schedule(stage):
    for step in (1, 30, 300):
        check_value(lr_of(stage, step, 64, 50, 3.0), 3.0 * formula(step, 64, 50), f"noam_lr(step={step}, factor=3)",
                    "The factor multiplies the whole rate. " + HINT_FORMULA)


def test_noam_step_zero_is_finite_and_equals_step_one(stage):
    check_value(lr_of(stage, 0, 512, 4000), lr_of(stage, 1, 512, 4000), "noam_lr(step=0) vs noam_lr(step=1)",
                HINT_STEP0)


def test_noam_lambda_drives_a_real_optimizer_through_lambda_lr(stage):
    """SGD(lr=1.0) under LambdaLR(noam_lambda(...)): the optimizer's rate is the schedule, step by step."""
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    try:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, stage.noam_lambda(16, 4, 2.0))
    except ZeroDivisionError as error:
        fail(f"LambdaLR(optimizer, noam_lambda(16, 4, 2.0)) raised ZeroDivisionError at step 0: {error}", HINT_STEP0)
    for step in range(0, 12):
        got = optimizer.param_groups[0]["lr"]
        check_value(got, formula(step, 16, 4, 2.0), f"optimizer lr at scheduler step {step}",
                    "noam_lambda(d_model, warmup, factor) must return a function step -> noam_lr(step, d_model, "
                    "warmup, factor); LambdaLR multiplies it by the base lr of 1.0. " + HINT_STEP0)
        weight.grad = torch.zeros(3)
        optimizer.step()
        scheduler.step()


# --- label smoothing ---------------------------------------------------------------------------------------

V = 7


def target_probs_by_loop(target: torch.Tensor, vocab: int, pad: int, smoothing: float) -> torch.Tensor:
    """The smoothed distribution, one row and one class at a time."""
    rows = []
    for t in target.tolist():
        row = []
        for v in range(vocab):
            if t == pad or v == pad:
                row.append(0.0)
            elif v == t:
                row.append(1.0 - smoothing)
            else:
                row.append(smoothing / (vocab - 2))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("pad", [0, 3])
def test_smoothed_targets_match_a_slow_loop(stage, pad):
    target = torch.tensor([1, pad, 4, 6, pad, 2, 0 if pad else 5])
    loss_fn = stage.LabelSmoothingLoss(V, pad, smoothing=0.3)
    got = assert_tensor(loss_fn.smoothed_targets(target), "smoothed_targets", shape=(len(target), V),
                        dtype=torch.float32, hint="One row of V probabilities per target position.")
    expected = target_probs_by_loop(target, V, pad, 0.3)
    assert_close(got[:, pad], torch.zeros(len(target)), f"the padding column (pad_id={pad})", atol=0.0,
                 hint=HINT_SPREAD)
    assert_close(got[target == pad], torch.zeros(int((target == pad).sum()), V), "rows whose target is padding",
                 atol=0.0, hint=HINT_PAD_ROWS)
    assert_close(got, expected, "smoothed_targets vs the slow loop", atol=1e-7,
                 hint="1 - smoothing on the target id, smoothing / (V - 2) elsewhere. " + HINT_SPREAD)


def test_smoothed_target_rows_sum_to_one(stage):
    target = torch.tensor([1, 2, 3, 4, 5, 6])
    got = stage.LabelSmoothingLoss(V, 0, smoothing=0.2).smoothed_targets(target)
    got = assert_tensor(got, "smoothed_targets", shape=(6, V), dtype=torch.float32)
    assert_close(got.sum(dim=-1), torch.ones(6), "row sums of the smoothed targets", atol=1e-6, hint=HINT_SPREAD)


def test_loss_leaves_its_inputs_unchanged_and_trains_twice_in_a_row(stage):
    target = torch.tensor([[1, 2, 0], [5, 0, 3]])
    assert_in_place_safe(stage.LabelSmoothingLoss(V, 0, smoothing=0.1), torch.randn(2, 3, V), target,
                         what="LabelSmoothingLoss(logits, target)")


def test_no_smoothing_is_cross_entropy_that_ignores_padding(stage):
    logits = torch.randn(3, 5, V)
    target = torch.randint(1, V, (3, 5))
    target[1, 3:] = 0
    target[2, 1:] = 0
    expected = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), ignore_index=0)
    got = stage.LabelSmoothingLoss(V, 0, smoothing=0.0)(logits, target)
    assert_close(got, expected, "loss with smoothing=0 vs F.cross_entropy(ignore_index=pad)", atol=1e-6,
                 hint="Log-softmax over the last dimension, then the mean over the counted positions. " + HINT_PAD_ROWS)


@pytest.mark.parametrize("pad", [0, 3])
def test_smoothed_loss_matches_cross_entropy_with_probability_targets(stage, pad):
    logits = torch.randn(2, 6, V) * 2.0
    target = torch.randint(0, V, (2, 6))
    target[0, 4:] = pad
    target[1, 0] = pad
    flat_logits, flat_target = logits.reshape(-1, V), target.reshape(-1)
    keep = flat_target != pad
    probs = target_probs_by_loop(flat_target, V, pad, 0.1)
    expected = F.cross_entropy(flat_logits[keep], probs[keep])
    got = stage.LabelSmoothingLoss(V, pad, smoothing=0.1)(logits, target)
    got = assert_tensor(got, "the loss", shape=(), dtype=torch.float32, hint="Return a scalar tensor (shape ()).")
    assert_close(got, expected, "smoothed loss vs F.cross_entropy(logits[keep], target_probs[keep])", atol=1e-6,
                 hint=HINT_SPREAD + " " + HINT_PAD_ROWS)


def test_padded_positions_do_not_change_the_loss(stage):
    """Appending padded positions (with any logits at all) must leave the mean over real positions unchanged."""
    loss_fn = stage.LabelSmoothingLoss(V, 0, smoothing=0.1)
    logits = torch.randn(1, 4, V)
    target = torch.tensor([[4, 1, 6, 2]])
    padded_logits = torch.cat([logits, 10.0 * torch.randn(1, 3, V)], dim=1)
    padded_target = torch.cat([target, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    assert_close(loss_fn(padded_logits, padded_target), loss_fn(logits, target),
                 "the loss with three padded positions appended vs without them", atol=1e-6, hint=HINT_PAD_ROWS)


def test_all_padding_batch_gives_zero_not_nan(stage):
    logits = torch.randn(2, 3, V, requires_grad=True)
    got = stage.LabelSmoothingLoss(V, 0, smoothing=0.1)(logits, torch.zeros(2, 3, dtype=torch.long))
    got = assert_tensor(got, "the loss of an all-padding batch", shape=(), dtype=torch.float32,
                        hint="Return a scalar tensor.")
    if not torch.isfinite(got):
        fail(f"the loss of an all-padding batch: expected 0.0, got {got.item()}", HINT_EMPTY)
    assert_close(got.detach(), torch.tensor(0.0), "the loss of an all-padding batch", atol=0.0, hint=HINT_EMPTY)


def test_loss_has_a_gradient_for_the_logits(stage):
    logits = torch.randn(2, 3, V, requires_grad=True)
    target = torch.tensor([[1, 2, 0], [5, 0, 0]])
    stage.LabelSmoothingLoss(V, 0, smoothing=0.1)(logits, target).backward()
    grad = assert_tensor(logits.grad, "logits.grad", shape=(2, 3, V),
                         hint="The loss must be built from torch operations on the logits (no .item(), no .detach()).")
    assert_close(grad[target == 0], torch.zeros(3, V), "gradient at padded positions", atol=0.0, hint=HINT_PAD_ROWS)
    if not grad[target != 0].abs().sum() > 0:
        fail("gradient at real positions: expected non-zero, got all zeros", "Is the loss computed from the logits?")
