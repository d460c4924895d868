"""Stage 14: rotary position embeddings (RoPE), in the rotate-half convention of Llama.

Part I added a position vector to every token once, at the bottom of the model. RoPE instead
ROTATES each query and key inside every attention layer by an angle that grows with the token's
position. Feature j of a head is paired with feature j + Dh/2 (the "half-split" pairing of Llama
and Hugging Face transformers), and each pair (a, b) is turned like a point in the plane:

    (a, b)  ->  (a cos θ - b sin θ,  b cos θ + a sin θ),    θ = p · base^(-2i / Dh)

for position p and pair i = 0 .. Dh/2 - 1. Written for the whole vector at once:

    rope(x, p) = x * cos(p) + rotate_half(x) * sin(p),   rotate_half(x) = cat(-x[Dh/2:], x[:Dh/2])

where the cos/sin tables hold the Dh/2 angles twice over (columns j and j + Dh/2 share a frequency).
Rotations preserve length, position 0 is the identity (θ = 0), and because rotating q by θ_m and
k by θ_n leaves q·k depending on θ_m - θ_n only, attention scores see RELATIVE positions m - n.

Worked example, Dh = 4, base = 100, position p = 1: the frequencies are 100^0 = 1 and
100^(-2/4) = 0.1, so the angles are [1, 0.1, 1, 0.1]. For x = [1, 0, 0, 0] (pairs (x0, x2) and
(x1, x3)): rotate_half(x) = [-0, -0, 1, 0], and rope(x, 1) = [cos 1, 0, sin 1, 0] = [0.5403, 0, 0.8415, 0]:
the first pair turned by one radian.

The rotation depends on the position, never on the head: every head at position p turns by the
same angles. Queries and keys come in two layouts, (B, H, S, Dh) after splitting heads and
(B, S, H, Dh) straight from the projection; the tables must broadcast along the S axis of either.

Shapes: B batch, H heads, S sequence length, Dh head size (even), P max_positions.
"""

from __future__ import annotations

import torch


def rope_tables(head_size: int, max_positions: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos and sin tables of RoPE for positions 0 .. max_positions - 1.

    Column j of row p holds the angle p * base^(-2 * (j mod Dh/2) / Dh): the Dh/2 frequencies,
    then the same Dh/2 frequencies again (half-split pairing: column j and j + Dh/2 share one).

    Args:
        head_size: Dh, even.
        max_positions: P, the number of positions to tabulate.
        base: the wavelength base (10000 in Llama 2; larger in later models).
    Returns:
        (cos, sin): each (P, Dh) float32, cos[p, j] = cos(angle(p, j)), sin[p, j] = sin(angle(p, j)).
    Raises:
        ValueError: if head_size is odd.
    """
    # 1) one inverse frequency per pair i: base^(-2i / Dh)
    # TODO
    # 2) angle = position * frequency, for every (position, pair)
    # TODO
    # 3) half-split: columns j and j + Dh/2 rotate together, so the angles appear twice
    # TODO
    raise NotImplementedError("s14_rope: not written yet — python -m grader hint s14_rope")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Turn every pair (x[j], x[j + Dh/2]) by 90 degrees: cat(-second half, first half).

    Example: [1, 2, 3, 4] -> [-3, -4, 1, 2].

    Args:
        x: (..., Dh), Dh even.
    Returns:
        (..., Dh), same dtype.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s14_rope: not written yet — python -m grader hint s14_rope")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "BHSD") -> torch.Tensor:
    """Rotate queries or keys by their positions: x * cos + rotate_half(x) * sin.

    The tables are indexed by position only; every head at the same position gets the same
    rotation, so cos/sin must broadcast along the sequence axis of x, never the head axis.

    Args:
        x: (B, H, S, Dh) when layout is "BHSD", (B, S, H, Dh) when layout is "BSHD".
        cos: (S, Dh), the rows of rope_tables for the positions of x (a caller whose first
            position is `start` passes cos[start:start + S]).
        sin: (S, Dh), likewise.
        layout: "BHSD" or "BSHD", which axis of x is the sequence.
    Returns:
        x rotated, same shape and dtype as x.
    Raises:
        ValueError: for any other layout.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s14_rope: not written yet — python -m grader hint s14_rope")
