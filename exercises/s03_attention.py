"""Stage 3: scaled dot-product attention, as a pure function.

    Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d_k)) V

Each query scores every key; the scores become weights that sum to one over the keys; the output
is the weighted average of the values. Dividing by sqrt(d_k), the size of one query or key
vector, keeps the scores from growing with the width and saturating the softmax.

A mask says where attention may go: True = this query may attend to this key, False = it may
not (the same meaning as a boolean ``attn_mask`` in torch.nn.functional.scaled_dot_product_attention).
A disallowed key gets exactly zero weight.

Shapes: ``...`` is any number of leading (batch, head) dimensions, Sq the number of queries,
Sk the number of keys, Dk the query/key size, Dv the value size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q Kᵀ / sqrt(d_k)) V, with an optional boolean mask applied before the softmax.

    Do not call torch.nn.functional.scaled_dot_product_attention: the tests compare against it.

    Args:
        query: (..., Sq, Dk).
        key: (..., Sk, Dk).
        value: (..., Sk, Dv).
        mask: None, or a torch.bool tensor that broadcasts to (..., Sq, Sk); True = may attend.
            Masked scores are set to -inf before the softmax. A query whose keys are all masked
            gets all-zero weights and a zero output (never NaN).
        dropout: probability of zeroing each attention weight (pass 0.0 in evaluation).
    Returns:
        (output, weights): output (..., Sq, Dv); weights (..., Sq, Sk), the softmax weights
        after masking and before dropout, each row summing to one (or all zero if fully masked).
    """
    # 1) score every query against every key
    # TODO
    # 2) mask before the softmax, so disallowed keys get exactly zero weight
    # TODO
    # 3) a fully masked row is softmax(all -inf) = NaN; zeroing masked weights fixes only those
    # TODO
    # 4) average the values
    # TODO
    raise NotImplementedError("s03_attention: not written yet — python -m grader hint s03_attention")
