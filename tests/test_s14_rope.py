"""Stage 14: rotary position embeddings, rotate-half (half-split) convention.

Oracles: slow loops written here with math.cos / math.sin over every position p and every pair
(j, j + Dh/2); hand-worked rotations by 90 and 180 degrees whose arithmetic is in the docstrings;
and the properties that make RoPE what it is (relative positions, identity at 0, norms kept).

The interleaved pairing (2i, 2i + 1) has its own slow loop; half_split_order is checked against the
order written out by hand; llama3_scale against the rule of Llama 3's published reference code,
written here as a loop over pairs with math only.

Several tests use as many heads as positions (H == S), so that a rotation broadcast along the
head axis instead of the sequence axis gives wrong numbers instead of a shape error.
"""

from __future__ import annotations

import math

import pytest
import torch

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

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
HINT_INTERLEAVED = ("With pairing='interleaved', pair i is the neighbours (2i, 2i + 1), turned by the angle of table "
                    "column i: (a, b) -> (a cos - b sin, b cos + a sin). The half-split table holds pair i's angle in "
                    "column i (and i + Dh/2), so each angle is needed twice in a row: angles 0, 0, 1, 1, ...")
HINT_ORDER = ("half_split_order(Dh) lists the even features in order, then the odd ones: [0, 2, .., Dh - 2, 1, 3, .., "
              "Dh - 1]. Slot i takes feature 2i and slot i + Dh/2 takes feature 2i + 1.")
HINT_LLAMA3 = ("llama3_scale compares each pair's wavelength 2π / inv_freq with L = original_max_positions: below "
               "L / high_freq_factor the inv_freq is kept, above L / low_freq_factor it is divided by factor, in "
               "between it is blended with t = (L / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor). "
               "Does rope_tables pass its inverse frequencies through llama3_scale when scaling is given?")
HINT_BATCHED = ("Tables with a batch axis, (B, S, Dh), give every sequence its own positions: they need a head axis "
                "inserted next to S (before it in BHSD, after it in BSHD), not two leading axes.")
HINT_IN_PLACE = ("apply_rope must return a new tensor and leave x untouched: an operation in place (x *= cos, "
                 "x.mul_, x[..., :half] = ...) changes the caller's queries and breaks autograd.")
HINT_BROADCAST = ("x and the tables do not broadcast together: the rotation depends on the position, never on the head, "
                  "so the (S, Dh) tables must line up with x's SEQUENCE axis (axis 2 of (B, H, S, Dh), axis 1 of "
                  "(B, S, H, Dh)) and have size 1 on the head axis. Which axis of x is the sequence depends on layout.")
HINT_NO_COS = ("rope(x) = x * cos + rotate_half(x) * sin: x itself is scaled by cos before the turned copy is added. "
               "Adding x unscaled makes every vector longer, and a 180-degree turn (cos -1, sin 0) leaves x unchanged.")
HINT_POSITIONS = ("Row p of the tables is position p, and positions start at 0: row 0 is the angle 0 (cos 1, sin 0, "
                  "no rotation). Do positions start at 0?")
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


def interleaved_loop(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Slow oracle on (B, H, S, Dh): rotate every neighbour pair (2i, 2i + 1) by p * base^(-2i / Dh)."""
    batch, heads, length, head_size = x.shape
    out = torch.empty(batch, heads, length, head_size)
    for b in range(batch):
        for h in range(heads):
            for s in range(length):
                for i in range(head_size // 2):
                    theta = s * base ** (-2 * i / head_size)
                    a, c = float(x[b, h, s, 2 * i]), float(x[b, h, s, 2 * i + 1])
                    out[b, h, s, 2 * i] = a * math.cos(theta) - c * math.sin(theta)
                    out[b, h, s, 2 * i + 1] = c * math.cos(theta) + a * math.sin(theta)
    return out


def llama3_loop(inv_freq: list[float], factor: float, low: float, high: float, original: int) -> list[float]:
    """Llama 3's frequency rule, pair by pair (as in Meta's published apply_scaling)."""
    out = []
    for f in inv_freq:
        wavelength = 2 * math.pi / f
        if wavelength < original / high:
            out.append(f)
        elif wavelength > original / low:
            out.append(f / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return out


def tables_loop(head_size: int, max_positions: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    cos = torch.tensor([[math.cos(angle(p, j, head_size, base)) for j in range(head_size)] for p in range(max_positions)])
    sin = torch.tensor([[math.sin(angle(p, j, head_size, base)) for j in range(head_size)] for p in range(max_positions)])
    return cos, sin


def rope(stage, x, cos, sin, layout="BHSD", pairing="half", hint=HINT_BROADCAST):
    """The learner's apply_rope through checks.call: x and the tables must come back unchanged, and an error it
    raises (a broadcast between x and the tables that fails) is explained instead of shown raw."""
    __tracebackhide__ = True
    what = f"apply_rope(x {tuple(x.shape)}, cos {tuple(cos.shape)}, layout={layout!r}, pairing={pairing!r})"
    return call(stage.apply_rope, x, cos, sin, layout=layout, pairing=pairing, what=what, hint=hint)


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    """(a, b) -> (-b, a) for every neighbour pair (2i, 2i + 1): what a learner pairing neighbours computes."""
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


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
    out = rope(stage, torch.randn(*shape), cos, sin, layout=layout)
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
    late = [[angle(p + 1, j, 4, 100.0) for j in range(4)] for p in range(3)]  # rows one position late
    assert_close(cos, expected_cos, "cos table (Dh=4, base=100)", atol=1e-6, hint=HINT_TABLE,
                 suspects={"row p of your table holds position p + 1": (torch.tensor(late).cos(), HINT_POSITIONS)})
    assert_close(sin, expected_sin, "sin table (Dh=4, base=100)", atol=1e-6, hint=HINT_TABLE,
                 suspects={"row p of your table holds position p + 1": (torch.tensor(late).sin(), HINT_POSITIONS)})


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
    out = rope(stage, x, cos, sin, layout="BHSD")
    turned = torch.cat([-x[..., 2:], x[..., :2]], dim=-1)  # rotate_half, written out for Dh = 4
    known = {
        "your output equals x + rotate_half(x) * sin (x not scaled by cos)": (x + turned * sin, HINT_NO_COS),
        "your output pairs neighbours (x0, x1), (x2, x3)": (x * cos + rotate_half_interleaved(x) * sin, HINT_PAIRING),
        "your output turns every pair backwards (by minus the angle)": (x * cos - turned * sin, HINT_ROTATE_HALF),
    }
    assert_close(out, expected, "apply_rope with 90- and 180-degree tables", atol=1e-6, suspects=known,
                 hint="rope(x) = x * cos + rotate_half(x) * sin, with half-split pairs (j, j + Dh/2).")


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
    out = rope(stage, x.contiguous(), cos, sin, layout=layout, hint=HINT_HEAD_AXIS)
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
    assert_close(rope(stage, x, cos, sin), x, "apply_rope at position 0", atol=0.0, hint=HINT_POSITIONS)


def test_rotation_preserves_every_vector_length(stage):
    cos, sin = stage.rope_tables(8, 7)
    x = torch.randn(2, 3, 7, 8)
    out = rope(stage, x, cos, sin)
    assert_tensor(out, "apply_rope", shape=x.shape, dtype=torch.float32, hint=HINT_APPLY)
    assert_close(out.norm(dim=-1), x.norm(dim=-1), "|rope(x)| vs |x|", atol=1e-5,
                 hint="A rotation never changes a vector's length: is each pair (a, c) mapped to "
                      "(a cos - c sin, c cos + a sin), with the same angle on both of its members?")


def test_query_key_score_depends_only_on_the_offset(stage):
    """q at position m, k at position n: q'.k' is the same for every (m, n) with the same m - n."""
    cos, sin = stage.rope_tables(8, 16)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> torch.Tensor:
        q_rot = rope(stage, q.expand(1, 1, 16, 8), cos, sin)[0, 0, m]
        k_rot = rope(stage, k.expand(1, 1, 16, 8), cos, sin)[0, 0, n]
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
    out = rope(stage, x, cos, sin, layout="BHSD")
    assert_close(out, rope_loop(x), "apply_rope (B, H, S, Dh)", atol=1e-5, hint=HINT_APPLY)


def test_apply_rope_matches_a_loop_over_positions_and_pairs_in_BSHD(stage):
    x = torch.randn(2, 6, 6, 8)  # (B, S, H, Dh) with H == S
    cos, sin = stage.rope_tables(8, 6)
    out = rope(stage, x, cos, sin, layout="BSHD", hint=HINT_HEAD_AXIS)
    assert_tensor(out, "apply_rope (B, S, H, Dh)", shape=x.shape, dtype=torch.float32, hint=HINT_HEAD_AXIS)
    assert_close(out.transpose(1, 2), rope_loop(x.transpose(1, 2)), "apply_rope (B, S, H, Dh), as (B, H, S, Dh)",
                 atol=1e-5, hint=HINT_HEAD_AXIS)


def test_apply_rope_with_an_offset_slice_rotates_by_the_later_positions(stage):
    """A cache feeds positions 5, 6, 7 with cos[5:8]: the result is the loop at those positions."""
    cos, sin = stage.rope_tables(8, 10, base=500.0)
    x = torch.randn(1, 2, 3, 8)
    out = rope(stage, x, cos[5:8], sin[5:8])
    assert_close(out, rope_loop(x, base=500.0, positions=[5, 6, 7]), "apply_rope at positions 5..7", atol=1e-5,
                 hint="Row p of the tables is absolute position p and the caller slices them: apply_rope must use the rows "
                      "it is given as positions 0 .. S-1 of x, and rope_tables must use its base argument.")


# ----------------------------------------------------------------------------- edge cases

def test_head_size_two_is_a_single_plane_rotation(stage):
    """Dh = 2: one pair, frequency base^0 = 1, so position p turns (a, c) by p radians."""
    cos, sin = stage.rope_tables(2, 4)
    x = torch.tensor([1.0, 0.0]).expand(1, 1, 4, 2)
    expected = torch.tensor([[[[math.cos(p), math.sin(p)] for p in range(4)]]])
    assert_close(rope(stage, x, cos, sin), expected, "apply_rope, Dh = 2", atol=1e-6, hint=HINT_TABLE)


def test_unknown_layout_pairing_and_odd_head_size_raise_value_error(stage):
    cos, sin = tables_loop(4, 2, 10000.0)
    with pytest.raises(ValueError):
        stage.apply_rope(torch.randn(1, 2, 2, 4), cos, sin, layout="SBHD")
    with pytest.raises(ValueError):
        stage.apply_rope(torch.randn(1, 2, 2, 4), cos, sin, pairing="adjacent")
    with pytest.raises(ValueError):
        stage.rope_tables(5, 3)
    assert_equal(tuple(stage.rope_tables(6, 3)[0].shape), (3, 6), "rope_tables(6, 3) cos shape", hint=HINT_TABLE)


# ----------------------------------------------------------------------------- in place

@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_apply_rope_leaves_its_inputs_unchanged_and_backpropagates_twice(stage, pairing):
    """x and the tables come back unchanged, and two forward/backward passes in a row work (as in training)."""
    cos, sin = tables_loop(8, 5, 10000.0)
    assert_in_place_safe(stage.apply_rope, torch.randn(2, 3, 5, 8), cos, sin, pairing=pairing,
                         what=f"apply_rope(x (2, 3, 5, 8), cos (5, 8), pairing={pairing!r})", hint=HINT_IN_PLACE)


# ----------------------------------------------------------------------------- tables per sequence

@pytest.mark.parametrize("layout", ["BHSD", "BSHD"])
def test_tables_with_a_batch_axis_rotate_each_sequence_by_its_own_positions(stage, layout):
    """Row 0 at positions 0..3, row 1 at positions 3..6 (a left-padded batch); 4 heads = 4 positions."""
    cos, sin = tables_loop(8, 8, 10000.0)
    positions = torch.tensor([[0, 1, 2, 3], [3, 4, 5, 6]])
    x = torch.randn(2, 4, 4, 8)  # (B, H, S, Dh)
    expected = torch.cat([rope_loop(x[:1], positions=[0, 1, 2, 3]), rope_loop(x[1:], positions=[3, 4, 5, 6])])
    given = x if layout == "BHSD" else x.transpose(1, 2).contiguous()
    out = rope(stage, given, cos[positions], sin[positions], layout=layout, hint=HINT_BATCHED)
    assert_tensor(out, f"apply_rope with (B, S, Dh) tables, {layout}", shape=given.shape, dtype=torch.float32,
                  hint=HINT_BATCHED)
    out = out if layout == "BHSD" else out.transpose(1, 2)
    assert_close(out, expected, f"apply_rope with per-sequence positions, {layout}", atol=1e-5, hint=HINT_BATCHED)


# ----------------------------------------------------------------------------- the interleaved pairing

def test_interleaved_pairing_turns_neighbours_hand_worked(stage):
    """Dh = 4, base = 100, position 1: pair 0 = (x0, x1) turns 1 rad, pair 1 = (x2, x3) turns 0.1 rad.

    x = [1, 0, 0, 0] -> [cos 1, sin 1, 0, 0] = [0.540302, 0.841471, 0, 0]; x = [0, 0, 1, 0] ->
    [0, 0, cos 0.1, sin 0.1] = [0, 0, 0.995004, 0.0998334]. (Half-split would give [0.5403, 0, 0.8415, 0].)
    """
    cos, sin = tables_loop(4, 2, 100.0)
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])[:, None, None, :].expand(2, 1, 2, 4)  # (2, 1, 2, 4)
    out = rope(stage, x, cos, sin, pairing="interleaved", hint=HINT_INTERLEAVED)
    assert_tensor(out, "apply_rope(pairing='interleaved')", shape=(2, 1, 2, 4), dtype=torch.float32, hint=HINT_INTERLEAVED)
    expected = torch.tensor([[0.5403023, 0.8414710, 0.0, 0.0], [0.0, 0.0, 0.9950042, 0.0998334]])
    assert_close(out[:, 0, 1], expected, "interleaved rotation at position 1", atol=1e-6, hint=HINT_INTERLEAVED)
    assert_close(out[:, 0, 0], x[:, 0, 0], "interleaved rotation at position 0", atol=1e-6, hint=HINT_INTERLEAVED)


@pytest.mark.parametrize("layout", ["BHSD", "BSHD"])
def test_interleaved_pairing_matches_a_loop_over_neighbour_pairs(stage, layout):
    x = torch.randn(2, 5, 5, 8)  # (B, H, S, Dh) with H == S
    cos, sin = tables_loop(8, 5, 10000.0)
    given = x if layout == "BHSD" else x.transpose(1, 2).contiguous()
    out = rope(stage, given, cos, sin, layout=layout, pairing="interleaved", hint=HINT_INTERLEAVED)
    assert_tensor(out, f"apply_rope(pairing='interleaved', layout={layout!r})", shape=given.shape, dtype=torch.float32,
                  hint=HINT_INTERLEAVED)
    out = out if layout == "BHSD" else out.transpose(1, 2)
    assert_close(out, interleaved_loop(x), f"interleaved RoPE, {layout}", atol=1e-5, hint=HINT_INTERLEAVED)


def test_half_split_order_lists_the_even_features_then_the_odd_ones(stage):
    for head_size, expected in ((2, [0, 1]), (6, [0, 2, 4, 1, 3, 5]), (8, [0, 2, 4, 6, 1, 3, 5, 7])):
        order = stage.half_split_order(head_size)
        assert_tensor(order, f"half_split_order({head_size})", shape=(head_size,), dtype=torch.long, hint=HINT_ORDER)
        assert_equal(order.tolist(), expected, f"half_split_order({head_size})", hint=HINT_ORDER)


def test_permuting_features_turns_an_interleaved_rotation_into_a_half_split_one(stage):
    """The module docstring's identity, checked with the two slow loops: rope_half(x[order]) = rope_inter(x)[order]."""
    x = torch.randn(1, 2, 6, 8)
    order = stage.half_split_order(8)
    assert_tensor(order, "half_split_order(8)", shape=(8,), dtype=torch.long, hint=HINT_ORDER)
    assert_close(rope_loop(x[..., order]), interleaved_loop(x)[..., order], "rope_half(x[order]) vs rope_inter(x)[order]",
                 atol=1e-5, hint=HINT_ORDER)
    cos, sin = tables_loop(8, 6, 10000.0)
    converted = rope(stage, x[..., order], cos, sin)[..., torch.argsort(order)]
    assert_close(converted, interleaved_loop(x), "half-split RoPE on reordered features, put back", atol=1e-5,
                 hint=HINT_ORDER)


# ----------------------------------------------------------------------------- Llama 3 scaling

def test_llama3_scale_keeps_fast_stretches_slow_and_blends_between(stage):
    """factor 8, low 1, high 4, original 8192 (Llama 3.1's values): the docstring's three wavelengths.

    wavelength 100 < 8192 / 4 = 2048: kept.  10000 > 8192 / 1: divided by 8.
    4096: t = (8192 / 4096 - 1) / (4 - 1) = 1/3 -> (2/3) f / 8 + (1/3) f = 0.41667 f.
    """
    scaling = stage.RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_positions=8192)
    inv_freq = torch.tensor([2 * math.pi / 100, 2 * math.pi / 10000, 2 * math.pi / 4096])
    before = inv_freq.clone()
    out = stage.llama3_scale(inv_freq, scaling)
    expected = torch.tensor([2 * math.pi / 100, 2 * math.pi / 10000 / 8, (2 / 3 / 8 + 1 / 3) * 2 * math.pi / 4096])
    assert_close(out, expected, "llama3_scale of wavelengths 100, 10000, 4096", atol=1e-9, rtol=1e-6, hint=HINT_LLAMA3)
    assert_close(inv_freq, before, "inv_freq after llama3_scale", atol=0.0,
                 hint="llama3_scale returns new frequencies; it must not change its input in place.")


def test_scaled_tables_match_the_llama3_rule_applied_to_every_pair(stage):
    """Dh = 16, base 500000, factor 8, low 1, high 4, original 64: slow pairs stretched, fast pairs kept."""
    scaling = stage.RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_positions=64)
    inv = [500000.0 ** (-2 * i / 16) for i in range(8)]
    scaled = llama3_loop(inv, 8.0, 1.0, 4.0, 64)
    assert scaled != inv and scaled[0] == inv[0], "the example must scale some pairs and keep others"
    angles = [[p * scaled[j % 8] for j in range(16)] for p in range(40)]
    cos, sin = stage.rope_tables(16, 40, base=500000.0, scaling=scaling)
    assert_tensor(cos, "cos with scaling", shape=(40, 16), dtype=torch.float32, hint=HINT_LLAMA3)
    # angles up to 39 rad in float32: 1e-5 allows for that, and the unscaled tables are off by more than 0.1
    assert_close(cos, torch.tensor([[math.cos(a) for a in row] for row in angles]), "cos table with llama3 scaling",
                 atol=1e-5, hint=HINT_LLAMA3)
    assert_close(sin, torch.tensor([[math.sin(a) for a in row] for row in angles]), "sin table with llama3 scaling",
                 atol=1e-5, hint=HINT_LLAMA3)
