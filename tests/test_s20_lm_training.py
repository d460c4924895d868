"""Stage 20: the learning-rate schedule, the loss, the batches, one training step, and a real run.

Oracles: hand-worked schedule values and unigram cross-entropies (arithmetic in the docstrings),
F.cross_entropy, gradients computed here with autograd on a toy model, and a training run on the
bytes of the shipped book whose validation loss and unigram baseline this file computes itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

BOOK = Path(__file__).resolve().parent.parent / "data" / "frankenstein.txt"

HINT_SHIFT_ONCE = ("The targets are already shifted (targets[:, t] is the token after tokens[:, t]): compare "
                   "logits[:, t] with targets[:, t]. Shifting again inside the loss pairs each position with the token "
                   "two ahead.")


class Bigram(nn.Module):
    """A toy language model: logits = a learned row per input token; aux = the mean square of the table."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = nn.Parameter(3.0 * torch.randn(vocab, vocab))

    def forward(self, tokens, caches=None):
        return self.table[tokens], self.table.square().mean()


# --- the schedule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.2), (1, 0.4), (3, 0.8), (4, 1.0), (6, 0.1 + 0.45 * (1 + math.cos(0.2 * math.pi))), (9, 0.55), (14, 0.1), (20, 0.1)],
)
def test_warmup_cosine_matches_the_worked_example(stage, step, expected):
    """warmup 4, total 14, min_ratio 0.1:
    steps 0..3 -> (step + 1) / 5 = 0.2, 0.4, 0.6, 0.8; step 4 -> the peak 1.0;
    step 6 -> progress (6 - 4) / 10 = 0.2 -> 0.1 + 0.9 * (1 + cos(0.2 pi)) / 2 = 0.1 + 0.45 * 1.809017 = 0.914058;
    step 9 -> progress 0.5 -> 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55; step 14 and step 20 -> 0.1."""
    value = stage.warmup_cosine(step, 4, 14, 0.1)
    if not isinstance(value, float):
        fail(f"warmup_cosine returned {type(value).__name__}, expected a float", "Return a Python float for LambdaLR.")
    if abs(value - expected) > 1e-9:
        fail(f"warmup_cosine({step}, warmup=4, total=14, min_ratio=0.1): expected {expected:.6f}, got {value:.6f}",
             "Warm-up is (step + 1) / (warmup + 1) before the peak at step == warmup; the cosine runs over "
             "progress = (step - warmup) / (total - warmup) from 1 down to min_ratio, and stays at min_ratio after total.")


def test_warmup_cosine_without_warmup_starts_at_the_peak(stage):
    got = [stage.warmup_cosine(step, 0, 10, 0.0) for step in (0, 5, 10)]
    expected = [1.0, 0.5, 0.0]  # progress 0, 1/2, 1 -> (1 + cos(pi * progress)) / 2
    if any(abs(g - e) > 1e-9 for g, e in zip(got, expected)):
        fail(f"warmup_cosine(step, warmup=0, total=10, min_ratio=0) at steps 0, 5, 10: expected {expected}, got {got}",
             "With no warm-up, step 0 is already the peak; the cosine then reaches min_ratio at total.")


# --- the loss ---------------------------------------------------------------------------------


def test_lm_loss_leaves_its_inputs_unchanged_and_trains_twice_in_a_row(stage):
    targets = torch.tensor([[3, 0, 6, 0, 1], [2, 2, 0, 5, 4]])
    assert_in_place_safe(stage.lm_loss, torch.randn(2, 5, 7), targets, pad_id=0, what="lm_loss(logits, targets, pad_id=0)")


def test_lm_loss_equals_cross_entropy_ignoring_padding(stage):
    logits = torch.randn(2, 5, 7)
    targets = torch.tensor([[3, 0, 6, 0, 1], [2, 2, 0, 5, 4]])
    loss = call(stage.lm_loss, logits, targets, pad_id=0, what="lm_loss(logits, targets, pad_id=0)")
    assert_tensor(loss, "lm_loss", shape=(), dtype=torch.float32, hint="Return the mean as a 0-dim tensor.")
    expected = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), ignore_index=0)
    shifted_again = F.cross_entropy(logits[:, :-1].reshape(-1, 7), targets[:, 1:].reshape(-1), ignore_index=0)
    assert_close(loss, expected, "lm_loss with pad_id=0", atol=1e-6,
                 hint="Flatten to (B*S, V) and (B*S,), and leave the positions whose target is pad_id out of the mean.",
                 suspects={"your loss pairs logits[:, t] with targets[:, t + 1]": (shifted_again, HINT_SHIFT_ONCE)})
    everything = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    assert_close(call(stage.lm_loss, logits, targets, what="lm_loss(logits, targets)"), everything, "lm_loss with pad_id=None", atol=1e-6,
                 hint="With pad_id=None every position counts, id 0 included.")


def test_lm_loss_of_uniform_logits_is_log_V(stage):
    """All-zero logits are the uniform distribution over V = 5 tokens: -log(1/5) = ln 5 ≈ 1.6094 at every position."""
    loss = stage.lm_loss(torch.zeros(3, 4, 5), torch.randint(0, 5, (3, 4)))
    assert_close(loss, torch.tensor(math.log(5.0)), "lm_loss of zero logits", atol=1e-6,
                 hint="Cross-entropy is the mean of -log softmax(logits)[target].")


def test_lm_loss_pairs_each_position_with_its_own_target(stage):
    """Logits that put +20 on exactly the target of their own position: the loss is about 6 * e^-20 ≈ 1e-8."""
    targets = torch.randint(0, 7, (2, 6))
    logits = 20.0 * F.one_hot(targets, 7).float()
    loss = assert_tensor(call(stage.lm_loss, logits, targets, what="lm_loss(logits, targets)"), "lm_loss", shape=(),
                         dtype=torch.float32, hint="Return the mean as a 0-dim tensor.")
    if not loss.item() < 1e-5:
        fail(f"lm_loss of logits that predict their own position's target perfectly: expected about 0, got {loss.item():.4f}",
             HINT_SHIFT_ONCE)


# --- the batches ------------------------------------------------------------------------------


def test_random_batch_targets_are_the_inputs_shifted_by_one(stage):
    tokens = torch.arange(100, 112)  # token value - 100 = its index, so a window shows where it starts
    generator = torch.Generator().manual_seed(1)
    x, y = call(stage.random_batch, tokens, 400, 4, generator, what="random_batch(tokens, 400, 4, generator)")
    assert_tensor(x, "x", shape=(400, 4), dtype=torch.long, hint="x is (B, S) token ids.")
    assert_tensor(y, "y", shape=(400, 4), dtype=torch.long, hint="y is (B, S) token ids.")
    starts = x[:, :1]
    assert_close(x, starts + torch.arange(4), "x rows (consecutive tokens of the corpus)", atol=0,
                 hint="Each row is one window tokens[s : s + S].")
    assert_close(y, x + 1, "y (the token after each x)", atol=0,
                 hint="y = tokens[s + 1 : s + S + 1]: shifted by exactly one. y equal to x is not shifted; x + 2 is shifted twice.")
    seen = sorted(set((starts.flatten() - 100).tolist()))
    assert_equal(seen, list(range(8)), "window starts drawn (N = 12, S = 4)",
                 hint="Every start 0 .. N - S - 1 whose target fits can be drawn: torch.randint(0, N - S, (B,)).")


def test_random_batch_is_reproducible_under_a_seeded_generator(stage):
    tokens = torch.arange(1000)
    first = stage.random_batch(tokens, 8, 5, torch.Generator().manual_seed(3))
    again = stage.random_batch(tokens, 8, 5, torch.Generator().manual_seed(3))
    assert_close(again[0], first[0], "x drawn twice with the same seed", atol=0,
                 hint="Pass the generator to torch.randint.")


# --- the unigram baseline ---------------------------------------------------------------------


def test_unigram_baseline_matches_the_hand_worked_examples(stage):
    """V = 3, train [0, 0, 1]: counts + 1 = [3, 2, 1] over 6 -> p = [1/2, 1/3, 1/6];
    val [0, 2] -> (ln 2 + ln 6) / 2 = ln(12) / 2 ≈ 1.242453.
    V = 4, train [1, 1, 1, 2]: counts + 1 = [1, 4, 2, 1] over 8; val [3] (never seen) -> ln 8 ≈ 2.079442."""
    got = call(stage.unigram_baseline, torch.tensor([0, 0, 1]), torch.tensor([0, 2]), 3,
               what="unigram_baseline([0, 0, 1], [0, 2], 3)")
    if not isinstance(got, float) or abs(got - math.log(12) / 2) > 1e-6:
        fail(f"unigram_baseline(V=3, train [0, 0, 1], val [0, 2]): expected {math.log(12) / 2:.6f} (a float), got {got!r}",
             "p(v) = (count(v) + 1) / (N + V), and the baseline is the mean of -ln p over the validation tokens.")
    got = stage.unigram_baseline(torch.tensor([1, 1, 1, 2]), torch.tensor([3]), 4)
    if not isinstance(got, float) or abs(got - math.log(8)) > 1e-6:
        fail(f"unigram_baseline(V=4, train [1, 1, 1, 2], val [3]): expected {math.log(8):.6f}, got {got!r}",
             "Add one to EVERY count (minlength=V in torch.bincount), so a token never seen in training is not infinitely surprising.")


# --- one training step ------------------------------------------------------------------------


def expected_gradient(model: Bigram, x, y, aux_weight: float) -> torch.Tensor:
    table = model.table.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(table[x].reshape(-1, table.size(0)), y.reshape(-1)) + aux_weight * table.square().mean()
    loss.backward()
    return table.grad


def test_train_step_takes_one_sgd_step_along_the_gradient_of_loss_plus_aux(stage):
    model = Bigram(6)
    x, y = torch.randint(0, 6, (3, 5)), torch.randint(0, 6, (3, 5))
    grad = expected_gradient(model, x, y, aux_weight=0.5)
    before = model.table.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    result = call(stage.train_step, model, x, y, optimizer, scheduler, clip=None, aux_weight=0.5,
                  what="train_step(model, x, y, optimizer, scheduler, clip=None, aux_weight=0.5)")
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, float) for r in result)):
        fail(f"train_step returned {result!r}, expected (loss, grad_norm) as two floats", "Return the loss and the gradient norm as two Python floats (a tensor's .item() is one).")
    loss, norm = result
    lm_only = F.cross_entropy(before[x].reshape(-1, 6), y.reshape(-1)).item()
    if abs(loss - lm_only) > 1e-5:
        fail(f"returned loss: expected {lm_only:.6f} (the language-model loss alone), got {loss:.6f}",
             "Return lm_loss(logits, y) before adding aux_weight * aux.")
    if abs(norm - grad.norm().item()) > 1e-4:
        fail(f"returned grad_norm: expected {grad.norm().item():.6f}, got {norm:.6f}",
             "Return the total gradient norm measured before clipping (clip_grad_norm_ returns it).")
    assert_close(model.table.detach(), before - grad, "weights after one SGD step with lr 1", atol=1e-5,
                 hint="Backpropagate lm_loss + aux_weight * aux, then optimizer.step().")
    lr = optimizer.param_groups[0]["lr"]
    if abs(lr - 0.5) > 1e-12:
        fail(f"learning rate after one train_step: expected 0.5 (the scheduler stepped once), got {lr}",
             "Call scheduler.step() after optimizer.step(), once per train_step.")


def test_train_step_clips_the_gradient_norm_before_stepping(stage):
    model = Bigram(6)
    x, y = torch.randint(0, 6, (3, 5)), torch.randint(0, 6, (3, 5))
    grad = expected_gradient(model, x, y, aux_weight=0.0)
    before = model.table.detach().clone()
    clip = 0.01 * grad.norm().item()  # far below the gradient's norm
    stage.train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=1.0), clip=clip)
    step = model.table.detach() - before
    assert_close(step, -grad * (clip / grad.norm()), "the SGD step with clipping", atol=1e-6,
                 hint="Clip with nn.utils.clip_grad_norm_(model.parameters(), clip) AFTER backward and BEFORE "
                      "optimizer.step(): the step must have norm clip, in the gradient's direction.")


def test_train_step_starts_from_fresh_gradients(stage):
    model = Bigram(6)
    x, y = torch.randint(0, 6, (3, 5)), torch.randint(0, 6, (3, 5))
    grad = expected_gradient(model, x, y, aux_weight=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put; only the gradients move
    stage.train_step(model, x, y, optimizer, clip=None)
    stage.train_step(model, x, y, optimizer, clip=None)
    assert_close(model.table.grad, grad, "gradient after the second of two identical steps", atol=1e-6,
                 hint="Zero the gradients at the start of every step (optimizer.zero_grad()); otherwise they add up.")


# --- validation and a real run ----------------------------------------------------------------


def test_evaluate_is_the_mean_cross_entropy_over_non_overlapping_windows(stage):
    model = Bigram(9).eval()
    tokens = torch.randint(0, 9, (30,))  # context 4: windows start at 0, 4, ..., 24 -> 7 windows
    x = tokens[:28].view(7, 4)
    y = tokens[1:29].view(7, 4)
    with torch.no_grad():
        expected = F.cross_entropy(model.table[x].reshape(-1, 9), y.reshape(-1)).item()
        first3 = F.cross_entropy(model.table[x[:3]].reshape(-1, 9), y[:3].reshape(-1)).item()
    got = stage.evaluate(model, tokens, 4, batch_size=3)
    if not isinstance(got, float) or abs(got - expected) > 1e-5:
        fail(f"evaluate over 7 windows of 4 in batches of 3: expected {expected:.6f}, got {got!r}",
             "Weight each batch's mean loss by its number of windows (the last batch is smaller), and divide by the total.")
    got = stage.evaluate(model, tokens, 4, batch_size=3, max_windows=3)
    if abs(got - first3) > 1e-5:
        fail(f"evaluate with max_windows=3: expected {first3:.6f}, got {got:.6f}", "Use only the first max_windows windows.")


def test_a_small_model_on_the_book_beats_the_unigram_baseline(stage):
    data = torch.tensor(list(BOOK.read_bytes()), dtype=torch.long)  # the book as UTF-8 bytes: V = 256
    boundary = int(0.9 * data.numel())
    train, val = data[:boundary], data[boundary:boundary + 64 * 32 + 1]  # 64 validation windows of 32 bytes
    counts = torch.bincount(train, minlength=256).double() + 1.0
    baseline = -(counts / counts.sum()).log()[val[1:]].mean().item()  # about 3.07 nats
    model = stage.tiny_llama(256, d_model=32, max_seq_len=32)
    config = stage.TrainConfig(steps=100, batch_size=16, context=32, lr=1e-2, warmup=10, eval_every=50, eval_windows=64)
    result = stage.train_lm(model, train, val, config)
    assert_equal((result.steps, len(result.losses), result.tokens_seen), (100, 100, 100 * 16 * 32),
                 "(steps, number of losses, tokens seen)", hint="One train_step per step; tokens_seen adds B * S per step.")
    assert_equal([step for step, _ in result.val_losses], [50, 100], "validation steps",
                 hint="Validate every eval_every steps and after the last step.")
    if model.training:
        fail("train_lm left the model in training mode", "Call model.eval() before returning.")
    with torch.no_grad():
        logits, _ = model(val[:-1].view(64, 32))
        val_loss = F.cross_entropy(logits.reshape(-1, 256), val[1:].reshape(-1)).item()
    if abs(result.val_loss - val_loss) > 1e-4:
        fail(f"reported validation loss {result.val_loss:.5f}, but the model's loss on those 64 windows is {val_loss:.5f}",
             "Validate on the first eval_windows non-overlapping windows of val_tokens, in eval mode, after the last step.")
    if not val_loss < baseline - 0.3:
        fail(f"validation loss after 100 steps: expected clearly below the unigram baseline {baseline:.3f} nats "
             f"(by 0.3), got {val_loss:.3f}",
             "Are the targets shifted by exactly one, the schedule warmup_cosine (peak lr after warm-up), the gradient "
             "zeroed every step, and the optimizer AdamW over all parameters?")
