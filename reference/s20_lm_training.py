"""Stage 20: training the language model.

The loop is Part I's, with the choices modern decoder-only models make:

- Batches are random windows of the training tokens. For a window starting at s, the input is
  tokens[s : s + S] and the target is the SAME stretch shifted by one, tokens[s + 1 : s + S + 1]:
  target[t] is the token that follows input[t]. The shift happens exactly once, here; the loss
  then compares logits[:, t] with target[:, t] position by position.
- The loss is the mean cross-entropy over every (non-padding) position.
- AdamW, with weight decay on the matrices only (not on norm weights), and a learning rate that
  rises linearly for `warmup` steps and then follows half a cosine down to min_ratio * peak:

      multiplier(step) = (step + 1) / (warmup + 1)                               step < warmup
                       = min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2   warmup <= step <= total
                       = min_ratio                                               step > total
      progress = (step - warmup) / (total - warmup)

  Worked example, warmup = 4, total = 14, min_ratio = 0.1: steps 0, 1, 2, 3 give 0.2, 0.4, 0.6,
  0.8; step 4 gives 1 (the peak); step 9 is halfway down: 0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.55;
  step 14 and after give 0.1.
- The gradient norm is clipped before every optimizer step: one bad batch cannot throw the
  weights far.

How good is a loss? The unigram baseline is the cross-entropy of a model that ignores the context
and predicts every token with its frequency in the training text (add-one smoothed, so a token never
seen still has a probability). A language model that does not beat it has learned nothing about
context. On the bytes of the shipped book the baseline is about 3.1 nats; a tiny model gets well
below it in a few hundred steps.

Shapes: B batch, S context (window length), V vocabulary size, N number of tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .s10_noam_and_loss import noam_lr
from .s12_corpus import ShiftedWindows
from .s19_llama import Llama, LlamaConfig


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then cosine decay to min_ratio.

    (step + 1) / (warmup + 1) while step < warmup (so the first step is not wasted at 0); from
    step = warmup (the peak, 1.0) to step = total, min_ratio + (1 - min_ratio) * (1 + cos(pi *
    progress)) / 2 with progress = (step - warmup) / (total - warmup); min_ratio after total (and
    at total == warmup). Meant for torch.optim.lr_scheduler.LambdaLR.

    Args:
        step: the optimizer step, from 0.
        warmup: warm-up steps (>= 0).
        total: the step at which the decay reaches min_ratio (>= warmup).
        min_ratio: the final fraction of the peak learning rate.
    Returns:
        A float in (0, 1].
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step >= total:
        return min_ratio
    progress = (step - warmup) / (total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over every position whose target is not padding.

    The targets are ALREADY shifted (targets[:, t] follows tokens[:, t]): do not shift again.
    F.cross_entropy is allowed here; it wants (N, V) logits and (N,) targets.

    Args:
        logits: (B, S, V) from the model.
        targets: (B, S) torch.long, aligned with the logits position by position.
        pad_id: targets equal to it do not count (None: every position counts).
    Returns:
        A scalar tensor: the mean cross-entropy, in nats.
    """
    vocab = logits.size(-1)
    ignore = -100 if pad_id is None else pad_id  # -100 is F.cross_entropy's "no padding" default
    return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=ignore)


def unigram_baseline(train_tokens: torch.Tensor, val_tokens: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy on val of the add-one-smoothed unigram model fitted on train.

    p(v) = (count of v in train + 1) / (len(train) + V); baseline = mean over val of -log p(token).
    Example: V = 3, train = [0, 0, 1] -> counts + 1 = [3, 2, 1], p = [1/2, 1/3, 1/6]; val = [0, 2] ->
    (ln 2 + ln 6) / 2 = ln(12) / 2 ≈ 1.2425.

    Args:
        train_tokens: (N,) torch.long ids. val_tokens: (M,) torch.long ids. vocab_size: V.
    Returns:
        The baseline in nats, a float.
    """
    counts = torch.bincount(train_tokens, minlength=vocab_size).double() + 1.0  # (V,) add-one smoothing
    log_probs = counts.log() - counts.sum().log()  # (V,)
    return -log_probs[val_tokens].mean().item()


def random_batch(
    tokens: torch.Tensor, batch_size: int, context: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """B windows at random starts, and their targets shifted by one token.

    Example: tokens = [10, 11, 12, 13, 14], context 3, a start of 1 -> x row [11, 12, 13],
    y row [12, 13, 14].

    Args:
        tokens: (N,) torch.long, N > context.
        batch_size: B.
        context: S.
        generator: draws the starts (uniform over 0 .. N - S - 1, every start whose target fits).
    Returns:
        (x, y): each (B, S) torch.long on the tokens' device; y[b, t] = the token after x[b, t].
    """
    starts = torch.randint(0, tokens.numel() - context, (batch_size,), generator=generator, device=tokens.device)  # (B,)
    offsets = torch.arange(context + 1, device=tokens.device)  # (S + 1,)
    windows = tokens[starts[:, None] + offsets]  # (B, S + 1): each input and its one extra token
    return windows[:, :-1], windows[:, 1:]


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip: float | None = 1.0,
    aux_weight: float = 0.0,
    pad_id: int | None = None,
) -> tuple[float, float]:
    """One optimisation step on one batch.

    Zero the gradients; (logits, aux) = model(x); loss = lm_loss(logits, y, pad_id) + aux_weight *
    aux; backward; clip the total gradient norm to ``clip`` with nn.utils.clip_grad_norm_ (skip if
    None); optimizer.step(); then scheduler.step() if given. The model must be in training mode.

    Args:
        model: returns (logits (B, S, V), aux_loss) for (B, S) tokens.
        x, y: (B, S) inputs and their shifted targets.
        optimizer, scheduler: the optimizer and an optional learning-rate scheduler.
        clip: the largest allowed gradient norm, or None.
        aux_weight: weight of the auxiliary (load-balancing) loss.
        pad_id: passed to lm_loss.
    Returns:
        (loss, grad_norm): the language-model loss (without the aux term) and the total gradient
        norm BEFORE clipping, as floats.
    """
    optimizer.zero_grad(set_to_none=True)
    logits, aux = model(x)
    loss = lm_loss(logits, y, pad_id)
    (loss + aux_weight * aux).backward()
    # clip_grad_norm_ returns the norm it measured before clipping; an infinite limit only measures
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), math.inf if clip is None else clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item(), grad_norm.item()


@torch.no_grad()
def evaluate(model: nn.Module, tokens: torch.Tensor, context: int, batch_size: int = 32,
             max_windows: int | None = None) -> float:
    """Mean loss over the non-overlapping windows of ``tokens`` (stage 12's ShiftedWindows).

    Args:
        model: the model (put it in eval mode first; this function does not change the mode).
        tokens: (N,) torch.long validation tokens, N > context.
        context: S.
        batch_size: windows per forward pass.
        max_windows: use only the first this-many windows (None: all).
    Returns:
        The mean cross-entropy per token over the windows used, a float.
    """
    windows = ShiftedWindows(tokens, context)
    count = len(windows) if max_windows is None else min(len(windows), max_windows)
    total = 0.0
    for first in range(0, count, batch_size):
        pairs = [windows[i] for i in range(first, min(first + batch_size, count))]
        x = torch.stack([p[0] for p in pairs])  # (B, S)
        y = torch.stack([p[1] for p in pairs])  # (B, S)
        logits, _ = model(x)
        total += lm_loss(logits, y).item() * len(pairs)
    return total / count


@dataclass(frozen=True)
class TrainConfig:
    """One training run. The defaults train a tiny model on the bytes of the book in seconds."""

    steps: int = 300  # optimizer steps
    batch_size: int = 16  # B, windows per step
    context: int = 64  # S, tokens per window
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # AdamW decay, on matrices only
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (Llama's)
    warmup: int = 30  # warm-up steps
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    schedule: str = "cosine"  # "cosine" (warmup_cosine) or "noam" (stage 10's shape, peaking at lr)
    clip: float | None = 1.0  # gradient-norm clip, or None
    aux_weight: float = 0.01  # weight of the mixture of experts' load-balancing loss
    pad_id: int | None = None  # targets to ignore in the loss
    eval_every: int = 100  # validate this often (and after the last step)
    eval_windows: int = 64  # validation windows per check (keeps checks cheap)
    seed: int = 0  # seeds the batch order


@dataclass
class TrainResult:
    """What train_lm returns."""

    model: nn.Module
    steps: int  # steps taken
    tokens_seen: int  # steps * batch_size * context
    losses: list[float] = field(default_factory=list)  # training loss of every step
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss) at each check

    @property
    def val_loss(self) -> float:
        """The last validation loss."""
        return self.val_losses[-1][1]


# kata: given
def tiny_llama(vocab_size: int, d_model: int = 64, max_seq_len: int = 256) -> Llama:
    """The small model this stage trains: 2 layers, 4 query heads sharing 2 key/value heads, d_ff ≈ 8/3 * D."""
    d_ff = 4 * math.ceil(8 * d_model / 12)  # 8/3 * D, rounded up to a multiple of 4: 172 for D = 64
    return Llama(LlamaConfig(vocab_size=vocab_size, d_model=d_model, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=d_ff,
                             max_seq_len=max_seq_len))


# kata: given
def lr_lambda(config: TrainConfig, d_model: int) -> Callable[[int], float]:
    """The multiplier of config.lr at each step, for LambdaLR: warmup_cosine, or Noam scaled to peak at 1."""
    if config.schedule == "cosine":
        return lambda step: warmup_cosine(step, config.warmup, config.steps, config.min_lr_ratio)
    if config.schedule == "noam":
        peak = noam_lr(max(config.warmup, 1), d_model, max(config.warmup, 1))
        return lambda step: noam_lr(step, d_model, max(config.warmup, 1)) / peak
    raise ValueError(f"schedule must be 'cosine' or 'noam', got {config.schedule!r}")


def train_lm(
    model: Llama,
    train_tokens: torch.Tensor,
    val_tokens: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a language model on one token sequence, validating on another.

    Steps: a torch.Generator seeded with config.seed draws the batches (random_batch);
    AdamW(lr=config.lr, betas, weight_decay on parameters with 2 or more dimensions, 0 on the
    rest) driven by LambdaLR(lr_lambda(config, model.config.d_model)); config.steps calls of
    train_step (model in training mode) with config.clip, aux_weight and pad_id; every
    eval_every steps and after the last, evaluate on the first eval_windows windows of
    val_tokens (model in eval mode) and, if ``log`` is given, send it one line with the step, the
    training loss and the validation loss.

    Args:
        model: a Llama (or any model with the same forward and a config.d_model).
        train_tokens: (N,) torch.long. val_tokens: (M,) torch.long, M > config.context.
        config: the TrainConfig.
        log: called with one progress line per validation.
    Returns:
        A TrainResult; the model is left in eval mode.
    """
    generator = torch.Generator(device=train_tokens.device).manual_seed(config.seed)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=config.lr, betas=config.betas,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, model.config.d_model))
    result = TrainResult(model, steps=0, tokens_seen=0)
    for step in range(1, config.steps + 1):
        model.train()
        x, y = random_batch(train_tokens, config.batch_size, config.context, generator)
        loss, _ = train_step(model, x, y, optimizer, scheduler, config.clip, config.aux_weight, config.pad_id)
        result.losses.append(loss)
        result.steps = step
        result.tokens_seen += x.numel()
        if step % config.eval_every == 0 or step == config.steps:
            model.eval()
            val = evaluate(model, val_tokens, config.context, max_windows=config.eval_windows)
            result.val_losses.append((step, val))
            if log is not None:
                log(f"step {step:5d}  loss {loss:.4f}  val loss {val:.4f}")
    model.eval()
    return result
