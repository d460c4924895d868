"""Stage 14: rotary position embeddings, rotate-half (half-split) convention.

Oracles: slow loops written here with math.cos / math.sin over every position p and every pair
(j, j + Dh/2); hand-worked rotations by 90 and 180 degrees whose arithmetic is in the docstrings;
and the properties that make RoPE what it is (relative positions, identity at 0, norms kept).

Several tests use as many heads as positions (H == S), so that a rotation broadcast along the
head axis instead of the sequence axis gives wrong numbers instead of a shape error.
"""

from __future__ import annotations

import math

import pytest
import torch

from checks import assert_close, assert_equal, assert_tensor, fail

HINT_TABLE = ("Column j of row p holds the angle p * base^(-2 * (j mod Dh/2) / Dh): positions start at 0, "
              "there are Dh/2 frequencies base^(-2i/Dh) for i = 0 .. Dh/2 - 1, and the half-split layout "
              "repeats them: torch.cat([angles, angles], dim=-1), not repeat_interleave.")
HINT_ROTATE_HALF = ("rotate_half is cat(-x[..., Dh/2:], x[..., :Dh/2]): the SECOND half, negated, comes first. "
                    "Pairs are (j, j + Dh/2), the half-split convention, not neighbours (2i, 2i + 1).")
HINT_APPLY = ("apply_rope is x * cos + rotate_half(x) * sin, with the (S, Dh) tables broadcast along the "
              "sequence axis: cos[None, None] for (B, H, S, Dh), cos[None, :, None] for (B, S, H, Dh).")
HINT_HEAD_AXIS = ("The rotation depends on the position, never on the head: is cos/sin broadcast along the "
                  "head axis instead of the sequence axis? In (B, S, H, Dh) the tables must become (1, S, 1, Dh).")
HINT_PAIRING = ("Half-split pairing rotates feature j together with feature j + Dh/2. Pairing neighbours "
                "(2i, 2i + 1), the interleaved convention of GPT-J, is a different model: Llama checkpoints "
                "would not load.")
HINT_RELATIVE = ("After rotation q.k must depend only on the offset m - n. Do q and k use the same table, "
                 "and is the rotation a true rotation (x * cos + rotate_half(x) * sin)?")


def angle(p: int, j: int, head_size: int, base: float) -> float:
    """The RoPE angle of column j at position p, written out for the oracle."""
    i = j % (head_size // 2)
    return p * base ** (-2 * i / head_size)


def rope_loop(x: torch.Tensor, base: float = 10000.0, positions: list[int] | None = None) -> torch.Tensor:
    """Slow oracle on a (B, H, S, Dh) tensor: rotate every pair (j, j + Dh/2) of every vector by hand."""
    batch, heads, length, head_size = x.shape
    half = head_size // 2
    positions = list(range(length)) if positions is None else positions
    out = torch.empty(batch, heads, length, head_size)
    for b in range(batch):
        for h in range(heads):
            for s in range(length):
                for j in range(half):
                    theta = angle(positions[s], j, head_size, base)
                    a, c = float(x[b, h, s, j]), float(x[b, h, s, j + half])
                    out[b, h, s, j] = a * math.cos(theta) - c * math.sin(theta)
                    out[b, h, s, j + half] = c * math.cos(theta) + a * math.sin(theta)
    return out


def tables_loop(head_size: int, max_positions: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    cos = torch.tensor([[math.cos(angle(p, j, head_size, base)) for j in range(head_size)] for p in range(max_positions)])
    sin = torch.tensor([[math.sin(angle(p, j, head_size, base)) for j in range(head_size)] for p in range(max_positions)])
    return cos, sin


# ----------------------------------------------------------------------------- shapes

def test_rope_tables_are_a_pair_of_float32_position_by_head_size_tables(stage):
    tables = stage.rope_tables(8, 5)
    if not isinstance(tables, tuple) or len(tables) != 2:
        fail(f"rope_tables: expected a tuple (cos, sin), got {type(tables).__name__}", HINT_TABLE)
    assert_tensor(tables[0], "cos", shape=(5, 8), dtype=torch.float32, hint=HINT_TABLE)
    assert_tensor(tables[1], "sin", shape=(5, 8), dtype=torch.float32, hint=HINT_TABLE)


@pytest.mark.parametrize("layout, shape", [("BHSD", (2, 3, 5, 8)), ("BSHD", (2, 5, 3, 8))])
def test_apply_rope_keeps_shape_and_dtype_in_both_layouts(stage, layout, shape):
    cos, sin = tables_loop(8, 5, 10000.0)
    out = stage.apply_rope(torch.randn(*shape), cos, sin, layout=layout)
    assert_tensor(out, f"apply_rope(layout={layout!r})", shape=shape, dtype=torch.float32, hint=HINT_APPLY)


# ----------------------------------------------------------------------------- hand-worked values

def test_rotate_half_moves_the_negated_second_half_to_the_front(stage):
    """[1, 2, 3, 4] -> [-3, -4, 1, 2]; [1, 2, 3, 4, 5, 6] -> [-4, -5, -6, 1, 2, 3]."""
    out = stage.rotate_half(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert_close(out, torch.tensor([[-3.0, -4.0, 1.0, 2.0]]), "rotate_half([1, 2, 3, 4])", atol=0.0, hint=HINT_ROTATE_HALF)
    out = stage.rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert_close(out, torch.tensor([-4.0, -5.0, -6.0, 1.0, 2.0, 3.0]), "rotate_half([1 .. 6])", atol=0.0,
                 hint=HINT_ROTATE_HALF)


def test_rope_tables_exact_values_for_head_size_4_base_100(stage):
    """Dh = 4, base = 100: frequencies 100^0 = 1 and 100^(-2/4) = 0.1.

    Angles per position p: [p, 0.1 p, p, 0.1 p]. At p = 2: cos = [cos 2, cos 0.2, cos 2, cos 0.2]
    = [-0.416147, 0.980067, -0.416147, 0.980067]; sin = [0.909297, 0.198669, 0.909297, 0.198669].
    """
    cos, sin = stage.rope_tables(4, 3, base=100.0)
    assert_tensor(cos, "cos", shape=(3, 4), dtype=torch.float32, hint=HINT_TABLE)
    expected_cos = torch.tensor([[1.0, 1.0, 1.0, 1.0],
                                 [math.cos(1), math.cos(0.1), math.cos(1), math.cos(0.1)],
                                 [-0.4161468, 0.9800666, -0.4161468, 0.9800666]])
    expected_sin = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                                 [math.sin(1), math.sin(0.1), math.sin(1), math.sin(0.1)],
                                 [0.9092974, 0.1986693, 0.9092974, 0.1986693]])
    assert_close(cos, expected_cos, "cos table (Dh=4, base=100)", atol=1e-6, hint=HINT_TABLE)
    assert_close(sin, expected_sin, "sin table (Dh=4, base=100)", atol=1e-6, hint=HINT_TABLE)


def test_rope_tables_match_a_loop_over_positions_and_columns(stage):
    cos, sin = stage.rope_tables(8, 12, base=10000.0)
    want_cos, want_sin = tables_loop(8, 12, 10000.0)
    # angles up to 11 rad are computed in float32 (about 1e-6 relative): 1e-5 allows for that
    assert_close(cos, want_cos, "cos table (Dh=8, 12 positions)", atol=1e-5, hint=HINT_TABLE)
    assert_close(sin, want_sin, "sin table (Dh=8, 12 positions)", atol=1e-5, hint=HINT_TABLE)


def test_apply_rope_turns_the_half_split_pair_by_90_and_180_degrees(stage):
    """Hand-made tables: position 0 turns pair 0 by 90 degrees, position 1 turns it by 180.

    Dh = 4, pairs (x0, x2) and (x1, x3); pair 1 is not turned (angle 0: cos 1, sin 0).
    x = [1, 2, 3, 4] at both positions.
      90 degrees:  (a, c) -> (a cos - c sin, c cos + a sin) = (-c, a) = (-3, 1)  -> [-3, 2, 1, 4]
      180 degrees: (a, c) -> (-a, -c) = (-1, -3)                                  -> [-1, 2, -3, 4]
    An interleaved pairing (x0, x1), (x2, x3) would give [-2, 1, 3, 4] at 90 degrees.
    """
    cos = torch.tensor([[0.0, 1.0, 0.0, 1.0], [-1.0, 1.0, -1.0, 1.0]])
    sin = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4)  # (B, H, S, Dh)
    expected = torch.tensor([[[[-3.0, 2.0, 1.0, 4.0], [-1.0, 2.0, -3.0, 4.0]]]])
    out = stage.apply_rope(x, cos, sin, layout="BHSD")
    assert_close(out, expected, "apply_rope with 90- and 180-degree tables", atol=1e-6, hint=HINT_PAIRING)


# ----------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("layout", ["BHSD", "BSHD"])
def test_the_rotation_depends_on_the_position_not_on_the_head(stage, layout):
    """Every head holds the same vectors: after RoPE the heads must still agree, position by position."""
    heads = length = 4  # as many heads as positions: a head-axis broadcast runs but gives wrong numbers
    cos, sin = tables_loop(6, length, 10000.0)
    per_position = torch.randn(1, 1, length, 6)
    x = per_position.expand(1, heads, length, 6)  # (B, H, S, Dh), identical heads
    if layout == "BSHD":
        x = x.transpose(1, 2)
    out = stage.apply_rope(x.contiguous(), cos, sin, layout=layout)
    assert_tensor(out, "apply_rope", shape=x.shape, dtype=torch.float32, hint=HINT_HEAD_AXIS)
    if layout == "BSHD":
        out = out.transpose(1, 2)  # back to (B, H, S, Dh) for comparison
    for h in range(1, heads):
        assert_close(out[:, h], out[:, 0], f"{layout}: head {h} vs head 0 (same input vectors)", atol=1e-6,
                     hint=HINT_HEAD_AXIS)
    assert_close(out, rope_loop(x if layout == "BHSD" else x.transpose(1, 2)), f"{layout}: rotated values",
                 atol=1e-5, hint=HINT_HEAD_AXIS)


def test_position_zero_is_the_identity(stage):
    cos, sin = stage.rope_tables(8, 1)
    x = torch.randn(2, 3, 1, 8)
    assert_close(stage.apply_rope(x, cos, sin), x, "apply_rope at position 0", atol=0.0,
                 hint="At position 0 every angle is 0 (cos 1, sin 0), so nothing turns. Do positions start at 0?")


def test_rotation_preserves_every_vector_length(stage):
    cos, sin = stage.rope_tables(8, 7)
    x = torch.randn(2, 3, 7, 8)
    out = stage.apply_rope(x, cos, sin)
    assert_tensor(out, "apply_rope", shape=x.shape, dtype=torch.float32, hint=HINT_APPLY)
    assert_close(out.norm(dim=-1), x.norm(dim=-1), "|rope(x)| vs |x|", atol=1e-5,
                 hint="A rotation never changes a vector's length: is each pair (a, c) mapped to "
                      "(a cos - c sin, c cos + a sin), with the same angle on both of its members?")


def test_query_key_score_depends_only_on_the_offset(stage):
    """q at position m, k at position n: q'.k' is the same for every (m, n) with the same m - n."""
    cos, sin = stage.rope_tables(8, 16)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> torch.Tensor:
        q_rot = stage.apply_rope(q.expand(1, 1, 16, 8), cos, sin)[0, 0, m]
        k_rot = stage.apply_rope(k.expand(1, 1, 16, 8), cos, sin)[0, 0, n]
        assert_tensor(q_rot, "rotated q", shape=(8,), dtype=torch.float32, hint=HINT_APPLY)
        return (q_rot * k_rot).sum().reshape(1)

    for offset, pairs in ((3, [(3, 0), (7, 4), (15, 12)]), (0, [(0, 0), (5, 5), (11, 11)]), (-2, [(1, 3), (9, 11)])):
        first = score(*pairs[0])
        for m, n in pairs[1:]:
            assert_close(score(m, n), first, f"q.k at (m={m}, n={n}) vs (m={pairs[0][0]}, n={pairs[0][1]}), offset {offset}",
                         atol=1e-5, hint=HINT_RELATIVE)
    plain = (q * k).sum().reshape(1)
    assert_close(score(6, 6), plain, "q.k at equal positions vs unrotated q.k", atol=1e-5, hint=HINT_RELATIVE)


# ----------------------------------------------------------------------------- the oracle

def test_apply_rope_matches_a_loop_over_positions_and_pairs_in_BHSD(stage):
    x = torch.randn(2, 3, 6, 8)
    cos, sin = stage.rope_tables(8, 6)
    out = stage.apply_rope(x, cos, sin, layout="BHSD")
    assert_close(out, rope_loop(x), "apply_rope (B, H, S, Dh)", atol=1e-5, hint=HINT_APPLY)


def test_apply_rope_matches_a_loop_over_positions_and_pairs_in_BSHD(stage):
    x = torch.randn(2, 6, 6, 8)  # (B, S, H, Dh) with H == S
    cos, sin = stage.rope_tables(8, 6)
    out = stage.apply_rope(x, cos, sin, layout="BSHD")
    assert_tensor(out, "apply_rope (B, S, H, Dh)", shape=x.shape, dtype=torch.float32, hint=HINT_HEAD_AXIS)
    assert_close(out.transpose(1, 2), rope_loop(x.transpose(1, 2)), "apply_rope (B, S, H, Dh), as (B, H, S, Dh)",
                 atol=1e-5, hint=HINT_HEAD_AXIS)


def test_apply_rope_with_an_offset_slice_rotates_by_the_later_positions(stage):
    """A cache feeds positions 5, 6, 7 with cos[5:8]: the result is the loop at those positions."""
    cos, sin = stage.rope_tables(8, 10, base=500.0)
    x = torch.randn(1, 2, 3, 8)
    out = stage.apply_rope(x, cos[5:8], sin[5:8])
    assert_close(out, rope_loop(x, base=500.0, positions=[5, 6, 7]), "apply_rope at positions 5..7", atol=1e-5,
                 hint="Row p of the tables is absolute position p and the caller slices them: apply_rope must use the rows "
                      "it is given as positions 0 .. S-1 of x, and rope_tables must use its base argument.")


# ----------------------------------------------------------------------------- edge cases

def test_head_size_two_is_a_single_plane_rotation(stage):
    """Dh = 2: one pair, frequency base^0 = 1, so position p turns (a, c) by p radians."""
    cos, sin = stage.rope_tables(2, 4)
    x = torch.tensor([1.0, 0.0]).expand(1, 1, 4, 2)
    expected = torch.tensor([[[[math.cos(p), math.sin(p)] for p in range(4)]]])
    assert_close(stage.apply_rope(x, cos, sin), expected, "apply_rope, Dh = 2", atol=1e-6, hint=HINT_TABLE)


def test_unknown_layout_and_odd_head_size_raise_value_error(stage):
    cos, sin = tables_loop(4, 2, 10000.0)
    with pytest.raises(ValueError):
        stage.apply_rope(torch.randn(1, 2, 2, 4), cos, sin, layout="SBHD")
    with pytest.raises(ValueError):
        stage.rope_tables(5, 3)
    assert_equal(tuple(stage.rope_tables(6, 3)[0].shape), (3, 6), "rope_tables(6, 3) cos shape", hint=HINT_TABLE)
