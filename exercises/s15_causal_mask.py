"""Stage 15: the causal mask as an additive float mask.

Part I masked with booleans (True = may attend) and a masked_fill before the softmax. Decoder-only
models usually build the mask once as FLOATS and simply add it to the scores:

    weights = softmax(q kᵀ / sqrt(Dh) + mask),   mask[i, j] = 0 where allowed, -inf where not

Adding 0 changes nothing; adding -inf makes exp(-inf) = 0, exactly the weight masked_fill gave.
An additive mask composes by addition (causal + padding), and it is the form torch's
scaled_dot_product_attention takes for a float attn_mask.

With a KV cache the queries are the LAST q_len of kv_len positions: query i sits at absolute
position (kv_len - q_len) + i and may see every key up to and including that position.

Worked example, q_len = 2, kv_len = 4 (two cached positions, two new ones):

    query 0 (position 2): keys 0, 1, 2      ->  [0, 0, 0, -inf]
    query 1 (position 3): keys 0, 1, 2, 3   ->  [0, 0, 0,  0  ]

With q_len = kv_len it is the familiar lower triangle of zeros, -inf above the diagonal.

Shapes: Sq = q_len queries, Sk = kv_len keys.
"""

from __future__ import annotations

import torch


def additive_causal_mask(
    q_len: int,
    kv_len: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The causal mask for q_len queries that are the last q_len of kv_len positions.

    Args:
        q_len: Sq, the number of queries (the new positions).
        kv_len: Sk >= Sq, the number of keys (cached + new); defaults to q_len.
        device: where to create the mask (None: torch's default device).
        dtype: a floating dtype for the mask.
    Returns:
        (Sq, Sk) of `dtype`: 0.0 where key j <= (Sk - Sq) + i, -inf elsewhere.
    Raises:
        ValueError: if kv_len < q_len.
    """
    # 1) absolute position of each query, and each key's position
    # TODO
    # 2) a key strictly in the future of the query is blocked
    # TODO
    raise NotImplementedError("s15_causal_mask: not written yet — python -m grader hint s15_causal_mask")


def bool_to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A boolean mask (True = may attend) as an additive one.

    Args:
        mask: torch.bool, any shape; True = allowed.
        dtype: a floating dtype for the result.
    Returns:
        Same shape, `dtype`: 0.0 where mask is True, -inf where it is False.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s15_causal_mask: not written yet — python -m grader hint s15_causal_mask")


def additive_to_bool(mask: torch.Tensor) -> torch.Tensor:
    """An additive mask as a boolean one: 0 -> True (allowed), -inf -> False.

    Args:
        mask: floating, any shape, holding 0.0 and -inf.
    Returns:
        Same shape, torch.bool: True where the mask is finite (attention allowed).
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s15_causal_mask: not written yet — python -m grader hint s15_causal_mask")
