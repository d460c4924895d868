"""Stage 11: train the transformer, decode greedily, and watch it learn to copy (and reverse).

The copy task is the transformer's "hello world": the source is a random string of symbols and
the target is the same string (or the string reversed). A model that gets 100% of unseen strings
exactly right has learned to use attention to look up the right source position.

Teacher forcing: for a target [a, b, c] the decoder reads [bos, a, b, c] and is trained to
predict [a, b, c, eos], one position ahead, all positions at once (the causal mask keeps each
position from seeing the answer). At inference nothing is given: greedy decoding starts from
bos and feeds back its own best guess until it says eos.

Shapes: B batch, S source length, T target length (bos or eos included), D = d_model, V vocab.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .s01_vocab import Vocab, pad_batch
from .s04_masks import causal_mask, combine_masks, padding_mask
from .s09_transformer import EncoderDecoder, TransformerConfig
from .s10_noam_and_loss import LabelSmoothingLoss, noam_lambda

SYMBOLS = tuple("abcdefghij")  # the alphabet of the toy tasks


@dataclass(frozen=True)
class CopyTaskConfig:
    """One training run of the copy (or reverse) task.

    The learning rate is the Noam schedule times a linear decay that reaches zero at max_steps:
    it warms up, peaks at lr_factor * (d_model * warmup)**-0.5 = 1.2 / 40 = 0.03 at step 50, and
    then settles, so the last steps polish the model instead of shaking it. Training stops early
    once held-out exact match is 100% at ``patience`` checks in a row (one lucky check is not
    enough). The defaults train for at most 300 steps (several seconds on one CPU core) and get
    98-100% of fresh strings exactly right, copy or reverse, whatever the seed.
    """

    reverse: bool = False  # False: target = source; True: target = source reversed
    min_len: int = 1  # shortest source string
    max_len: int = 10  # longest source string
    n_layers: int = 2  # encoder layers, and again decoder layers
    d_model: int = 32  # D
    n_heads: int = 4  # H
    d_ff: int = 64  # F
    dropout: float = 0.0  # the task is noise-free; dropout only slows it down
    norm_first: bool = True  # pre-LN: steadier than post-LN at this learning rate, so fewer steps
    batch_size: int = 128  # strings per training step
    warmup: int = 50  # Noam warm-up steps
    lr_factor: float = 1.2  # Noam factor
    smoothing: float = 0.0  # label smoothing
    max_steps: int = 300  # the schedule reaches zero here; training stops here at the latest
    eval_every: int = 50  # check held-out exact match this often (a check costs about as much as 4 steps)
    n_eval: int = 200  # held-out strings
    patience: int = 2  # stop after this many checks in a row at 100% held-out exact match
    seed: int = 0  # seeds the model, the data and the held-out set


@dataclass
class Batch:
    """One batch of source/target pairs, padded and masked, ready for the model."""

    src: torch.Tensor  # (B, S) source ids, padded
    tgt_in: torch.Tensor  # (B, T) decoder input: bos + target, padded
    tgt_out: torch.Tensor  # (B, T) what to predict: target + eos, padded
    src_mask: torch.Tensor  # (B, 1, 1, S) padding mask of src
    tgt_mask: torch.Tensor  # (B, 1, T, T) padding mask of tgt_in AND causal mask


@dataclass
class TrainingResult:
    """What train_copy_task returns."""

    model: EncoderDecoder
    vocab: Vocab
    steps: int  # steps taken
    accuracy: float  # the last held-out exact-match accuracy, in [0, 1]
    losses: list[float] = field(default_factory=list)  # one loss per step
    accuracies: list[tuple[int, float]] = field(default_factory=list)  # (step, accuracy) at each check


# kata: given
def random_strings(n: int, min_len: int, max_len: int, rng: random.Random) -> list[list[str]]:
    """``n`` random strings over SYMBOLS, each of a length drawn uniformly from [min_len, max_len]."""
    return [[rng.choice(SYMBOLS) for _ in range(rng.randint(min_len, max_len))] for _ in range(n)]


def make_batch(sources: list[list[str]], targets: list[list[str]], vocab: Vocab) -> Batch:
    """Encode, pad and mask a list of (source, target) string pairs.

    Args:
        sources: B token lists. targets: B token lists (the same strings, or reversed).
        vocab: maps tokens to ids.
    Returns:
        A Batch: src = encoded sources padded with pad_id; tgt_in = bos + target, tgt_out =
        target + eos, both padded to the same length T; src_mask = padding_mask(src);
        tgt_mask = combine_masks(padding_mask(tgt_in), causal_mask(T)).
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s11_copy_task: not written yet — python -m grader hint s11_copy_task")


def train_step(
    model: nn.Module,
    batch: Batch,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip: float | None = None,
) -> float:
    """One step of teacher-forced training; returns the loss as a float.

    Zero the gradients, run model(src, tgt_in, src_mask, tgt_mask) to (B, T, V) logits, take
    loss_fn(logits, tgt_out), backpropagate, clip the gradient norm to ``clip`` if given, step the
    optimizer, then the scheduler if given. The model must be in training mode.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s11_copy_task: not written yet — python -m grader hint s11_copy_task")


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    max_len: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> torch.Tensor:
    """Generate target ids one at a time, always taking the most likely next token.

    Args:
        model: an EncoderDecoder (call model.eval() first; this function does not change the mode).
        src: (B, S) source ids. src_mask: (B, 1, 1, S).
        max_len: the most tokens to generate per row (eos included).
        bos_id, eos_id, pad_id: the special ids.
    Returns:
        (B, L) torch.long, L <= max_len: the generated ids WITHOUT the leading bos. A row that
        produced eos keeps that eos and is filled with pad_id after it. Decoding stops as soon as
        every row has produced eos, or after max_len tokens.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s11_copy_task: not written yet — python -m grader hint s11_copy_task")


def exact_match(predictions: torch.Tensor, targets: torch.Tensor, pad_id: int) -> float:
    """The fraction of rows predicted exactly.

    Args:
        predictions: (B, L) ids from greedy_decode. targets: (B, T) ids, target + eos + padding.
        pad_id: padding; a row matches when its ids equal the target's ids at every position,
            where a missing position on either side counts as pad_id.
    Returns:
        A float in [0, 1].
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s11_copy_task: not written yet — python -m grader hint s11_copy_task")


def train_copy_task(config: CopyTaskConfig = CopyTaskConfig(), log: Callable[[str], None] | None = None) -> TrainingResult:
    """Train an EncoderDecoder on the copy (or reverse) task until it is reliably right on held-out strings.

    Steps: seed torch and a random.Random with config.seed; build the vocabulary from SYMBOLS;
    draw a fixed held-out set of n_eval strings; build the model (tie_weights=True, norm_first as
    configured); Adam(lr=1.0, betas=(0.9, 0.98), eps=1e-9) driven by a LambdaLR whose factor at
    step s is noam_lambda(d_model, warmup, lr_factor)(s) * max(0, 1 - s / max_steps);
    LabelSmoothingLoss(len(vocab), pad_id, smoothing). Then, for each step, draw a fresh batch
    and train_step; every eval_every steps (and at max_steps) greedy-decode the held-out set and
    record its exact match; stop once ``patience`` checks in a row are 1.0, or after max_steps.
    ``log``, if given, receives one line per check.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s11_copy_task: not written yet — python -m grader hint s11_copy_task")
