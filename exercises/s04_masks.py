"""Stage 4: masks that say where attention may look (True = may attend, as in stage 3).

- The causal mask stops a position from seeing the future: query i may attend to key j only
  when j <= i. For S = 3:

      [[ True, False, False],
       [ True,  True, False],
       [ True,  True,  True]]

- The padding mask stops every query from attending to padding tokens. For tokens
  [[5, 6, 0]] with pad_id 0 it is [[[[True, True, False]]]], shape (1, 1, 1, 3).

- The decoder needs both: (B, 1, 1, S) & (S, S) broadcasts to (B, 1, S, S).

Shapes: B batch, S sequence length; the two 1s are the head and query axes.
"""

from __future__ import annotations

import torch


def causal_mask(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The (size, size) torch.bool mask that is True on and below the diagonal.

    Args:
        size: S, the sequence length.
        device: where to create it (default: torch's current default device).
    Returns:
        (S, S) torch.bool: entry [i, j] is True exactly when j <= i.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s04_masks: not written yet — python -m grader hint s04_masks")


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """True where a key is a real token, False where it is padding.

    Args:
        tokens: (B, S) torch.long ids, the sequence whose positions are the KEYS being attended to.
        pad_id: the padding id.
    Returns:
        (B, 1, 1, S) torch.bool, broadcastable over heads and query positions.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s04_masks: not written yet — python -m grader hint s04_masks")


def combine_masks(padding: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
    """Allow a key only when both masks allow it.

    Args:
        padding: (B, 1, 1, S) torch.bool, from padding_mask.
        causal: (S, S) torch.bool, from causal_mask.
    Returns:
        (B, 1, S, S) torch.bool: padding & causal.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s04_masks: not written yet — python -m grader hint s04_masks")
