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

Two pairings. Which features form a pair is a convention, and checkpoints differ:

    half-split   (j, j + Dh/2)   Llama in Hugging Face transformers, this kata's default
    interleaved  (2i, 2i + 1)    Meta's original Llama code, GPT-J, many courses

Pair i turns by the same angle in both; only WHERE its two features sit differs. The order
half_split_order(Dh) = [0, 2, 4, .., Dh - 2, 1, 3, .., Dh - 1] moves feature 2i to slot i and
2i + 1 to slot i + Dh/2, so for any x

    apply_rope(x[..., order], pairing="half") == apply_rope(x, pairing="interleaved")[..., order]

and, since a score q . k is unchanged when q and k are permuted alike, a checkpoint trained with
interleaved pairs runs with half-split RoPE once the rows of each head of q_proj and k_proj are
put in that order (W.view(H, Dh, D)[:, order].reshape(H * Dh, D)): what Hugging Face's
conversion script does to Meta's weights. Values and every other weight stay as they are.

Long context, Llama 3 style. Llama 3.1 and later stretch the longest wavelengths with
rope_scaling {"rope_type": "llama3", factor, low_freq_factor, high_freq_factor,
original_max_position_embeddings}: with wavelength = 2π / inv_freq and L = original positions,

    wavelength < L / high_freq_factor    inv_freq kept         (fast pairs: local detail)
    wavelength > L / low_freq_factor     inv_freq / factor     (slow pairs: stretched)
    between                              (1 - t) · inv_freq / factor + t · inv_freq,
                                         t = (L / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)

Shapes: B batch, H heads, S sequence length, Dh head size (even), P max_positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's rope_scaling (rope_type "llama3"): how the slow frequencies are stretched."""

    factor: float  # how much longer the context becomes; slow pairs turn this many times slower
    low_freq_factor: float  # wavelengths above original_max_positions / low_freq_factor are fully stretched
    high_freq_factor: float  # wavelengths below original_max_positions / high_freq_factor are kept
    original_max_positions: int  # the context length the model was first trained on


def llama3_scale(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    """Stretch the slow inverse frequencies as Llama 3 does (the rule in the module docstring).

    Example, factor 8, low 1, high 4, original 8192: a pair with wavelength 100 (< 2048) keeps its
    inv_freq; one with wavelength 10000 (> 8192) gets inv_freq / 8; one with wavelength 4096 has
    t = (8192 / 4096 - 1) / (4 - 1) = 1/3 and gets (2/3) · inv_freq / 8 + (1/3) · inv_freq.

    Args:
        inv_freq: (Dh/2,) float32, base^(-2i / Dh).
        scaling: the RopeScaling.
    Returns:
        (Dh/2,) float32, the scaled inverse frequencies; the input is not modified.
    """
    wavelength = 2 * math.pi / inv_freq  # (Dh/2,)
    low_limit = scaling.original_max_positions / scaling.low_freq_factor  # longer than this: stretch fully
    high_limit = scaling.original_max_positions / scaling.high_freq_factor  # shorter than this: keep
    # 1) the blend weight t for wavelengths in between: 0 at low_limit, 1 at high_limit
    t = (scaling.original_max_positions / wavelength - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - t) * inv_freq / scaling.factor + t * inv_freq
    # 2) pick per pair: kept, stretched, or blended
    scaled = torch.where(wavelength > low_limit, inv_freq / scaling.factor, blended)
    return torch.where(wavelength < high_limit, inv_freq, scaled)


def rope_tables(
    head_size: int, max_positions: int, base: float = 10000.0, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos and sin tables of RoPE for positions 0 .. max_positions - 1.

    Column j of row p holds the angle p * base^(-2 * (j mod Dh/2) / Dh): the Dh/2 frequencies,
    then the same Dh/2 frequencies again (half-split pairing: column j and j + Dh/2 share one).
    With scaling, the Dh/2 inverse frequencies pass through llama3_scale first.

    Args:
        head_size: Dh, even.
        max_positions: P, the number of positions to tabulate.
        base: the wavelength base (10000 in Llama 2; larger in later models).
        scaling: None, or Llama 3's RopeScaling.
    Returns:
        (cos, sin): each (P, Dh) float32, cos[p, j] = cos(angle(p, j)), sin[p, j] = sin(angle(p, j)).
    Raises:
        ValueError: if head_size is odd.
    """
    if head_size % 2:
        raise ValueError(f"head_size ({head_size}) must be even: RoPE rotates pairs of features")
    # 1) one inverse frequency per pair i: base^(-2i / Dh)
    pair = torch.arange(0, head_size, 2, dtype=torch.float32)  # (Dh/2,) holding 2i
    inv_freq = base ** (-pair / head_size)  # (Dh/2,)
    if scaling is not None:
        inv_freq = llama3_scale(inv_freq, scaling)
    # 2) angle = position * frequency, for every (position, pair)
    positions = torch.arange(max_positions, dtype=torch.float32)  # (P,)
    angles = torch.outer(positions, inv_freq)  # (P, Dh/2)
    # 3) half-split: columns j and j + Dh/2 rotate together, so the angles appear twice
    angles = torch.cat([angles, angles], dim=-1)  # (P, Dh)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Turn every pair (x[j], x[j + Dh/2]) by 90 degrees: cat(-second half, first half).

    Example: [1, 2, 3, 4] -> [-3, -4, 1, 2].

    Args:
        x: (..., Dh), Dh even.
    Returns:
        (..., Dh), same dtype.
    """
    half = x.size(-1) // 2
    first, second = x[..., :half], x[..., half:]
    return torch.cat([-second, first], dim=-1)


def half_split_order(head_size: int) -> torch.Tensor:
    """The feature order that turns interleaved pairs (2i, 2i + 1) into half-split pairs (i, i + Dh/2).

    Example: Dh = 6 -> [0, 2, 4, 1, 3, 5]: slot i takes feature 2i, slot i + Dh/2 takes feature 2i + 1.

    Args:
        head_size: Dh, even.
    Returns:
        (Dh,) torch.long: the even features in order, then the odd ones.
    """
    return torch.cat([torch.arange(0, head_size, 2), torch.arange(1, head_size, 2)])


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "BHSD", pairing: str = "half"
) -> torch.Tensor:
    """Rotate queries or keys by their positions: x * cos + rotate_half(x) * sin.

    The tables are indexed by position only; every head at the same position gets the same
    rotation, so cos/sin must broadcast along the sequence axis of x, never the head axis.
    Tables with a batch axis give every sequence its own positions (left-padded batches).
    With pairing "interleaved", pair i is the neighbours (2i, 2i + 1), turned by the angle of
    table column i: (a, b) -> (a cos - b sin, b cos + a sin), as in the module docstring.

    Args:
        x: (B, H, S, Dh) when layout is "BHSD", (B, S, H, Dh) when layout is "BSHD".
        cos: (S, Dh) or (B, S, Dh), the rows of rope_tables for the positions of x (a caller
            whose first position is `start` passes cos[start:start + S]).
        sin: the same shape as cos, likewise.
        layout: "BHSD" or "BSHD", which axis of x is the sequence.
        pairing: "half" (features j and j + Dh/2) or "interleaved" (features 2i and 2i + 1).
    Returns:
        x rotated, same shape and dtype as x; x itself is not modified.
    Raises:
        ValueError: for any other layout or pairing.
    """
    # 1) a head axis in the tables, so that they broadcast along x's sequence axis
    if layout == "BHSD":
        cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # (1, S, Dh) or (B, 1, S, Dh)
    elif layout == "BSHD":
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # (S, 1, Dh) or (B, S, 1, Dh)
    else:
        raise ValueError(f"layout must be 'BHSD' or 'BSHD', got {layout!r}")
    if pairing == "half":
        return x * cos + rotate_half(x) * sin
    if pairing != "interleaved":
        raise ValueError(f"pairing must be 'half' or 'interleaved', got {pairing!r}")
    # 2) interleaved: pair i's angle sits in column i; the neighbours 2i, 2i + 1 both need it
    half = x.size(-1) // 2
    cos = cos[..., :half].repeat_interleave(2, dim=-1)  # (..., Dh): angles 0, 0, 1, 1, ..
    sin = sin[..., :half].repeat_interleave(2, dim=-1)
    turned = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)  # (a, b) -> (-b, a) per pair
    return x * cos + turned * sin
