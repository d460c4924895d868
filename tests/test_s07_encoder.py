"""Stage 7: residual sub-layers with layer norm, the encoder layer and the encoder stack.

Oracles: torch.nn.functional.layer_norm around a known function f (for SublayerConnection), and
torch.nn.TransformerEncoderLayer / nn.TransformerEncoder with the same weights copied in (for the
layer and the stack). Torch's key_padding_mask is True where a key must be IGNORED: the opposite
of this kata's masks (True = may attend), so the tests invert it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_in_place_safe, assert_tensor, call, fail

B, S, D, H, FF = 2, 5, 8, 2, 16
EPS = 1e-5  # nn.LayerNorm's default epsilon

HINT_POST = ("Post-LN (norm_first=False) is norm(x + dropout(f(x))): the sub-layer sees the raw x, and the "
             "norm comes last, over the sum.")
HINT_PRE = ("Pre-LN (norm_first=True) is x + dropout(f(norm(x))): the norm goes INSIDE, on the sub-layer's input, "
            "and the residual adds the un-normalised x. Is the residual added after the norm instead?")
HINT_LAST_DIM = ("LayerNorm must normalise each position over its D features only (the last dimension): "
                 "nn.LayerNorm(d_model), not a norm over (S, D) or over the sequence.")
HINT_DROPOUT = ("Dropout belongs on the sub-layer's output, before it is added to the residual: "
                "x + dropout(f(...)), never dropout(x + f(...)).")
HINT_LAYER = ("An encoder layer is two sub-layer connections: the first around self-attention (query, key and "
              "value all the sub-layer's input, with the mask), the second around the feed-forward. Is each "
              "sub-layer wrapped once, in that order?")
HINT_MASK = ("Is the padding mask passed to self-attention? Padding keys must get zero weight, so no real "
             "position's output may depend on what sits at a padded position.")
HINT_STACK = ("The encoder runs every layer in order (each with its own weights, in an nn.ModuleList) and then "
              "ONE final nn.LayerNorm, as torch.nn.TransformerEncoder(..., norm=LayerNorm) does.")


def f_known(y: torch.Tensor) -> torch.Tensor:
    """A sub-layer with nothing to learn and no symmetry to hide a mistake behind."""
    return torch.tanh(3.0 * y) + 0.5 * y.roll(1, dims=-1) + 0.25


def random_norm_(norm: nn.LayerNorm) -> None:
    """Give a LayerNorm non-trivial weight and bias, so a missing or misplaced norm shows."""
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.3 * torch.randn_like(norm.weight))
        norm.bias.copy_(0.3 * torch.randn_like(norm.bias))


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """The oracle: torch's layer norm over the last dimension with that module's weight and bias."""
    return F.layer_norm(x, (x.size(-1),), norm.weight.detach(), norm.bias.detach(), EPS)


def make_x(*shape) -> torch.Tensor:
    # Different scales in different positions, so a norm over the wrong axes cannot pass by luck.
    return torch.randn(*shape) * torch.linspace(0.5, 3.0, shape[-2]).unsqueeze(-1) + 1.0


def torch_encoder_layer(norm_first: bool) -> nn.TransformerEncoderLayer:
    layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation="relu", batch_first=True,
                                       norm_first=norm_first)
    random_norm_(layer.norm1)
    random_norm_(layer.norm2)
    with torch.no_grad():
        layer.self_attn.in_proj_bias.normal_(0, 0.2)  # torch starts these at zero; ours must be copied
        layer.self_attn.out_proj.bias.normal_(0, 0.2)
    return layer.train()  # train mode (dropout is 0) keeps torch off its fused fast path


def copy_layer_weights(mine, theirs: nn.TransformerEncoderLayer) -> None:
    """Load torch's weights into the learner's layer, by the attribute names the docstrings promise."""
    q, k, v = theirs.self_attn.in_proj_weight.detach().chunk(3)
    qb, kb, vb = theirs.self_attn.in_proj_bias.detach().chunk(3)
    with torch.no_grad():
        for proj, w, b in ((mine.self_attn.q_proj, q, qb), (mine.self_attn.k_proj, k, kb), (mine.self_attn.v_proj, v, vb)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        mine.self_attn.out_proj.weight.copy_(theirs.self_attn.out_proj.weight)
        mine.self_attn.out_proj.bias.copy_(theirs.self_attn.out_proj.bias)
        mine.feed_forward.linear1.weight.copy_(theirs.linear1.weight)
        mine.feed_forward.linear1.bias.copy_(theirs.linear1.bias)
        mine.feed_forward.linear2.weight.copy_(theirs.linear2.weight)
        mine.feed_forward.linear2.bias.copy_(theirs.linear2.bias)
        for sublayer, norm in zip(mine.sublayers, (theirs.norm1, theirs.norm2)):
            sublayer.norm.weight.copy_(norm.weight)
            sublayer.norm.bias.copy_(norm.bias)


def padded_inputs():
    """A (B, S, D) batch whose second row has its last two positions padded, and both mask forms."""
    x = make_x(B, S, D)
    real = torch.ones(B, S, dtype=torch.bool)
    real[1, 3:] = False
    return x, real.view(B, 1, 1, S), ~real  # ours: True = may attend; torch: True = ignore


# --- SublayerConnection: shapes, then the two placements against a known f --------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
def test_sublayer_connection_keeps_the_shape(stage, norm_first):
    sub = stage.SublayerConnection(D, dropout=0.0, norm_first=norm_first)
    out = call(sub, make_x(B, S, D), f_known, what=f"SublayerConnection(norm_first={norm_first})(x, f)")
    assert_tensor(out, f"SublayerConnection(norm_first={norm_first}) output", shape=(B, S, D), dtype=torch.float32,
                  hint="The residual x + f(...) has x's shape; the norm does not change it.")


@pytest.mark.parametrize("norm_first", [False, True])
def test_sublayer_connection_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage, norm_first):
    sub = stage.SublayerConnection(D, dropout=0.0, norm_first=norm_first)
    assert_in_place_safe(lambda x: sub(x, f_known), make_x(B, S, D),
                         what=f"SublayerConnection(norm_first={norm_first})(x, f)")


def test_post_ln_is_norm_of_x_plus_f_of_x(stage):
    sub = stage.SublayerConnection(D, dropout=0.0, norm_first=False)
    random_norm_(sub.norm)
    x = make_x(B, S, D)
    expected = layer_norm(x + f_known(x), sub.norm)
    assert_close(sub(x, f_known), expected, "post-LN norm(x + f(x))", atol=1e-5,
                 hint=HINT_POST + " " + HINT_LAST_DIM)


def test_pre_ln_is_x_plus_f_of_norm_x(stage):
    sub = stage.SublayerConnection(D, dropout=0.0, norm_first=True)
    random_norm_(sub.norm)
    x = make_x(B, S, D)
    expected = x + f_known(layer_norm(x, sub.norm))
    assert_close(sub(x, f_known), expected, "pre-LN x + f(norm(x)): the residual must carry the un-normalised x",
                 atol=1e-5, hint=HINT_PRE + " " + HINT_LAST_DIM)


def test_layer_norm_is_over_the_last_dimension_of_each_position(stage):
    """With f = 0, post-LN is just the norm: every position must come out with mean 0 and variance 1 over D."""
    sub = stage.SublayerConnection(D, dropout=0.0, norm_first=False)
    x = make_x(B, S, D)
    out = assert_tensor(sub(x, torch.zeros_like), "post-LN with f = 0", shape=(B, S, D), hint=HINT_LAST_DIM)
    mean = out.mean(dim=-1)
    var = out.var(dim=-1, unbiased=False)
    assert_close(mean, torch.zeros(B, S), "mean over the last dimension of norm(x)", atol=1e-5, hint=HINT_LAST_DIM)
    assert_close(var, x.var(dim=-1, unbiased=False) / (x.var(dim=-1, unbiased=False) + EPS),
                 "variance over the last dimension of norm(x)", atol=1e-4, hint=HINT_LAST_DIM)


@pytest.mark.parametrize("norm_first", [False, True])
def test_dropout_falls_on_the_sublayer_output_not_the_residual(stage, norm_first):
    """With dropout p = 1 in training mode, dropout(f(...)) is all zeros: post-LN gives norm(x), pre-LN gives x."""
    sub = stage.SublayerConnection(D, dropout=1.0, norm_first=norm_first).train()
    random_norm_(sub.norm)
    x = make_x(B, S, D)
    expected = x if norm_first else layer_norm(x, sub.norm)
    assert_close(sub(x, f_known), expected, f"norm_first={norm_first} with dropout p=1 in training", atol=1e-5,
                 hint=HINT_DROPOUT)
    sub.eval()
    expected = x + f_known(layer_norm(x, sub.norm)) if norm_first else layer_norm(x + f_known(x), sub.norm)
    assert_close(sub(x, f_known), expected, f"norm_first={norm_first} in eval mode (dropout off)", atol=1e-5,
                 hint="In eval mode dropout does nothing: use an nn.Dropout module, which follows model.eval().")


# --- EncoderLayer and Encoder against torch ----------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_layer_and_encoder_leave_their_input_unchanged_and_train_twice_in_a_row(stage, norm_first):
    x, ours_mask, _ = padded_inputs()
    layer = stage.EncoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    assert_in_place_safe(layer, x, ours_mask, what=f"EncoderLayer(norm_first={norm_first})(x, mask)")
    encoder = stage.Encoder(2, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    assert_in_place_safe(encoder, x, ours_mask, what=f"Encoder(norm_first={norm_first})(x, mask)")


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_encoder_layer_matches_torch_transformer_encoder_layer(stage, norm_first):
    theirs = torch_encoder_layer(norm_first)
    mine = stage.EncoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    copy_layer_weights(mine, theirs)
    x, ours_mask, torch_mask = padded_inputs()
    with torch.no_grad():
        expected = theirs(x, src_key_padding_mask=torch_mask)
        out = mine(x, ours_mask)
    assert_tensor(out, "EncoderLayer output", shape=(B, S, D), dtype=torch.float32,
                  hint="An encoder layer maps (B, S, D) to (B, S, D).")
    assert_close(out, expected, f"EncoderLayer(norm_first={norm_first}) vs nn.TransformerEncoderLayer", atol=1e-5,
                 hint=(HINT_PRE if norm_first else HINT_POST) + " " + HINT_LAYER + " " + HINT_MASK)


def test_encoder_parameters_are_registered_once_per_layer(stage):
    """Three layers with their own weights: the same count as torch's encoder of three layers plus a final norm."""
    mine = stage.Encoder(3, D, H, FF, dropout=0.0)
    theirs = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, 0.0, batch_first=True), 3,
                                   norm=nn.LayerNorm(D), enable_nested_tensor=False)
    expected = sum(p.numel() for p in theirs.parameters())
    got = sum(p.numel() for p in mine.parameters())
    if got != expected:
        fail(f"Encoder(3 layers) parameter count: expected {expected}, got {got}",
             HINT_STACK + " A plain Python list hides the layers from .parameters(); [layer] * n shares one layer's weights.")


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_encoder_matches_torch_transformer_encoder_with_final_norm(stage, norm_first):
    n_layers = 2
    torch_layers = [torch_encoder_layer(norm_first) for _ in range(n_layers)]
    final_norm = nn.LayerNorm(D)
    random_norm_(final_norm)
    theirs = nn.TransformerEncoder(torch_layers[0], n_layers, norm=final_norm, enable_nested_tensor=False)
    for i, layer in enumerate(torch_layers):
        theirs.layers[i].load_state_dict(layer.state_dict())
    theirs.train()
    mine = stage.Encoder(n_layers, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    if len(mine.layers) != n_layers:
        fail(f"Encoder(n_layers={n_layers}).layers: expected {n_layers} layers, got {len(mine.layers)}", HINT_STACK)
    for i in range(n_layers):
        copy_layer_weights(mine.layers[i], theirs.layers[i])
    with torch.no_grad():
        mine.norm.weight.copy_(final_norm.weight)
        mine.norm.bias.copy_(final_norm.bias)
    x, ours_mask, torch_mask = padded_inputs()
    with torch.no_grad():
        expected = theirs(x, src_key_padding_mask=torch_mask)
        out = mine(x, ours_mask)
    assert_close(out, expected, f"Encoder(norm_first={norm_first}) vs nn.TransformerEncoder(+ final norm)", atol=1e-5,
                 hint=HINT_STACK + " " + HINT_MASK)


# --- Invariants and edge cases -----------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_changing_a_padded_position_leaves_the_real_positions_unchanged(stage, norm_first):
    encoder = stage.Encoder(2, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    x, ours_mask, _ = padded_inputs()
    changed = x.clone()
    changed[1, 3:] = 100.0 * torch.randn(2, D)  # row 1, positions 3 and 4 are padding
    with torch.no_grad():
        before = encoder(x, ours_mask)
        after = encoder(changed, ours_mask)
    assert_close(after[0], before[0], "row 0 (no padding) after editing row 1's padding", atol=1e-5,
                 hint="Rows of a batch must never mix.")
    assert_close(after[1, :3], before[1, :3], "real positions of row 1 after editing its padded positions",
                 atol=1e-5, hint=HINT_MASK)


def test_encoder_handles_batch_of_one_and_length_one(stage):
    encoder = stage.Encoder(2, D, H, FF, dropout=0.0).eval()
    x = make_x(1, 1, D)
    with torch.no_grad():
        out = encoder(x, torch.ones(1, 1, 1, 1, dtype=torch.bool))
    out = assert_tensor(out, "Encoder output for B=1, S=1", shape=(1, 1, D), dtype=torch.float32,
                        hint="Do not squeeze away size-1 dimensions.")
    if not torch.isfinite(out).all():
        fail("Encoder output for B=1, S=1: expected finite values, got NaN or inf", HINT_LAST_DIM)


def test_encoder_without_a_mask_attends_everywhere(stage):
    """mask=None must mean 'no mask': the same result as an all-True mask."""
    encoder = stage.Encoder(1, D, H, FF, dropout=0.0).eval()
    x = make_x(B, S, D)
    with torch.no_grad():
        expected = encoder(x, torch.ones(B, 1, 1, S, dtype=torch.bool))
        out = encoder(x)
    assert_close(out, expected, "Encoder(x) vs Encoder(x, all-True mask)", atol=1e-6,
                 hint="Is mask=None passed straight through to the attention, which treats None as 'attend everywhere'?")
