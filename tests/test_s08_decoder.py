"""Stage 8: the decoder layer (masked self-attention, cross-attention, feed-forward) and the stack.

Oracle: torch.nn.TransformerDecoderLayer / nn.TransformerDecoder with the same weights copied in.
Torch's masks mean the opposite of this kata's: its boolean tgt_mask and memory_key_padding_mask
are True where attention is NOT allowed, so the tests invert them. The source (S = 4) and target
(T = 6) lengths differ on purpose, so a mix-up between them cannot go unnoticed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from checks import assert_close, assert_in_place_safe, assert_tensor, call, fail

B, S, T, D, H, FF = 2, 4, 6, 8, 2, 16

HINT_CAUSAL = ("Self-attention must take the target mask (tgt_mask): with the causal mask, position t may only "
               "look at positions <= t. Is tgt_mask passed to self_attn?")
HINT_CROSS = ("In cross-attention the queries come from the decoder (x, length T) and the keys and values from "
              "the memory (length S), with the source mask.")
HINT_SRC_MASK = ("Cross-attention must take the SOURCE padding mask (src_mask, shape (B, 1, 1, S)): padded memory "
                 "positions get zero weight. Is src_mask passed to cross_attn, and tgt_mask only to self_attn?")
HINT_ORDER = ("A decoder layer is three sub-layer connections in this order: masked self-attention, "
              "cross-attention over the memory, feed-forward; sublayers[0], [1], [2].")
HINT_STACK = ("The decoder runs every layer in order (each with its own weights, in an nn.ModuleList), passing "
              "the same memory and masks to each, then ONE final nn.LayerNorm.")


def random_norm_(norm: nn.LayerNorm) -> None:
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.3 * torch.randn_like(norm.weight))
        norm.bias.copy_(0.3 * torch.randn_like(norm.bias))


def torch_decoder_layer(norm_first: bool) -> nn.TransformerDecoderLayer:
    layer = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, activation="relu", batch_first=True,
                                       norm_first=norm_first)
    for norm in (layer.norm1, layer.norm2, layer.norm3):
        random_norm_(norm)
    with torch.no_grad():
        for attn in (layer.self_attn, layer.multihead_attn):  # torch starts these biases at zero
            attn.in_proj_bias.normal_(0, 0.2)
            attn.out_proj.bias.normal_(0, 0.2)
    return layer.train()  # train mode (dropout is 0) keeps torch off its fused fast path


def copy_attention(mine, theirs: nn.MultiheadAttention) -> None:
    q, k, v = theirs.in_proj_weight.detach().chunk(3)
    qb, kb, vb = theirs.in_proj_bias.detach().chunk(3)
    with torch.no_grad():
        for proj, w, b in ((mine.q_proj, q, qb), (mine.k_proj, k, kb), (mine.v_proj, v, vb)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        mine.out_proj.weight.copy_(theirs.out_proj.weight)
        mine.out_proj.bias.copy_(theirs.out_proj.bias)


def copy_layer_weights(mine, theirs: nn.TransformerDecoderLayer) -> None:
    """Load torch's weights into the learner's layer, by the attribute names the docstrings promise."""
    copy_attention(mine.self_attn, theirs.self_attn)
    copy_attention(mine.cross_attn, theirs.multihead_attn)
    with torch.no_grad():
        mine.feed_forward.linear1.weight.copy_(theirs.linear1.weight)
        mine.feed_forward.linear1.bias.copy_(theirs.linear1.bias)
        mine.feed_forward.linear2.weight.copy_(theirs.linear2.weight)
        mine.feed_forward.linear2.bias.copy_(theirs.linear2.bias)
        for sublayer, norm in zip(mine.sublayers, (theirs.norm1, theirs.norm2, theirs.norm3)):
            sublayer.norm.weight.copy_(norm.weight)
            sublayer.norm.bias.copy_(norm.bias)


def causal(size: int) -> torch.Tensor:
    """True on and below the diagonal: query i may attend to key j <= i."""
    return torch.ones(size, size, dtype=torch.bool).tril()


def inputs():
    """Target states, memory, and the masks in both conventions; row 1 of the source ends in padding."""
    x = torch.randn(B, T, D)
    memory = torch.randn(B, S, D) * 2.0
    real = torch.ones(B, S, dtype=torch.bool)
    real[1, 2:] = False
    return x, memory, real.view(B, 1, 1, S), causal(T), ~real, ~causal(T)


def run_layer(layer, *args):
    """Call the learner's layer; a crash from mixing up S and T becomes a failure that says so."""
    __tracebackhide__ = True
    with torch.no_grad():
        return call(layer, *args, what=f"the decoder with source length S={S} and target length T={T}",
                    hint=HINT_CROSS + " The output length must follow the target (T), not the source.")


def make_layer(stage, norm_first=False):
    return stage.DecoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first).eval()


# --- shapes ------------------------------------------------------------------------------------------------


def test_decoder_layer_output_follows_the_target_length(stage):
    x, memory, src_mask, tgt_mask, _, _ = inputs()
    out = run_layer(make_layer(stage), x, memory, src_mask, tgt_mask)
    assert_tensor(out, f"DecoderLayer output for T={T}, S={S}", shape=(B, T, D), dtype=torch.float32,
                  hint=HINT_CROSS + " The output length must follow the target (T), not the source.")


def test_decoder_stack_output_shape(stage):
    x, memory, src_mask, tgt_mask, _, _ = inputs()
    decoder = stage.Decoder(2, D, H, FF, dropout=0.0).eval()
    out = run_layer(decoder, x, memory, src_mask, tgt_mask)
    assert_tensor(out, "Decoder output", shape=(B, T, D), dtype=torch.float32, hint=HINT_STACK)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_layer_and_decoder_leave_their_inputs_unchanged_and_train_twice_in_a_row(stage, norm_first):
    x, memory, src_mask, tgt_mask, _, _ = inputs()
    assert_in_place_safe(make_layer(stage, norm_first), x, memory, src_mask, tgt_mask,
                         what=f"DecoderLayer(norm_first={norm_first})(x, memory, src_mask, tgt_mask)")
    decoder = stage.Decoder(2, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    assert_in_place_safe(decoder, x, memory, src_mask, tgt_mask,
                         what=f"Decoder(norm_first={norm_first})(x, memory, src_mask, tgt_mask)")


# --- invariants --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_the_future_does_not_leak_through_self_attention(stage, norm_first):
    """Changing the target after position t leaves the outputs at positions 0..t exactly as they were."""
    decoder = stage.Decoder(2, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    x, memory, src_mask, tgt_mask, _, _ = inputs()
    before = run_layer(decoder, x, memory, src_mask, tgt_mask)
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1:] = 10.0 * torch.randn(B, T - t - 1, D)
        after = run_layer(decoder, changed, memory, src_mask, tgt_mask)
        assert_close(after[:, : t + 1], before[:, : t + 1],
                     f"outputs at positions 0..{t} after changing the target after position {t} (the future leaks)",
                     atol=1e-5, hint=HINT_CAUSAL)


def test_cross_attention_reads_the_memory(stage):
    """A different memory must change every target position's output."""
    layer = make_layer(stage)
    x, memory, src_mask, tgt_mask, _, _ = inputs()
    before = run_layer(layer, x, memory, src_mask, tgt_mask)
    after = run_layer(layer, x, memory + torch.randn(B, S, D), src_mask, tgt_mask)
    unchanged = ((after - before).abs().amax(dim=-1) < 1e-4).nonzero().tolist()
    if unchanged:
        fail(f"changing the memory left these (row, position) outputs unchanged: {unchanged}; expected every "
             "output to depend on the memory", HINT_CROSS)


def test_padded_source_positions_are_ignored(stage):
    """Row 1's source positions 2 and 3 are padding: whatever the memory holds there, the output is the same."""
    decoder = stage.Decoder(2, D, H, FF, dropout=0.0).eval()
    x, memory, src_mask, tgt_mask, _, _ = inputs()
    before = run_layer(decoder, x, memory, src_mask, tgt_mask)
    changed = memory.clone()
    changed[1, 2:] = 50.0 * torch.randn(2, D)
    after = run_layer(decoder, x, changed, src_mask, tgt_mask)
    assert_close(after, before, "decoder output after editing padded memory positions", atol=1e-5,
                 hint=HINT_SRC_MASK)


# --- the oracle: torch's decoder ---------------------------------------------------------------------------


def test_decoder_parameters_are_registered_once_per_layer(stage):
    mine = stage.Decoder(3, D, H, FF, dropout=0.0)
    theirs = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF, 0.0, batch_first=True), 3, norm=nn.LayerNorm(D))
    expected = sum(p.numel() for p in theirs.parameters())
    got = sum(p.numel() for p in mine.parameters())
    if got != expected:
        fail(f"Decoder(3 layers) parameter count: expected {expected}, got {got}",
             HINT_STACK + " Self- and cross-attention need separate MultiHeadAttention modules; "
             "[layer] * n shares one layer's weights.")




@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_decoder_layer_matches_torch_transformer_decoder_layer(stage, norm_first):
    theirs = torch_decoder_layer(norm_first)
    mine = make_layer(stage, norm_first)
    copy_layer_weights(mine, theirs)
    x, memory, src_mask, tgt_mask, torch_memory_pad, torch_causal = inputs()
    with torch.no_grad():
        expected = theirs(x, memory, tgt_mask=torch_causal, memory_key_padding_mask=torch_memory_pad)
    out = run_layer(mine, x, memory, src_mask, tgt_mask)
    assert_close(out, expected, f"DecoderLayer(norm_first={norm_first}) vs nn.TransformerDecoderLayer", atol=1e-5,
                 hint=HINT_ORDER + " " + HINT_CROSS + " " + HINT_SRC_MASK)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_decoder_matches_torch_transformer_decoder_with_final_norm(stage, norm_first):
    n_layers = 2
    final_norm = nn.LayerNorm(D)
    random_norm_(final_norm)
    theirs = nn.TransformerDecoder(torch_decoder_layer(norm_first), n_layers, norm=final_norm)
    for i in range(n_layers):
        theirs.layers[i].load_state_dict(torch_decoder_layer(norm_first).state_dict())
    theirs.train()
    mine = stage.Decoder(n_layers, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    if len(mine.layers) != n_layers:
        fail(f"Decoder(n_layers={n_layers}).layers: expected {n_layers} layers, got {len(mine.layers)}", HINT_STACK)
    for i in range(n_layers):
        copy_layer_weights(mine.layers[i], theirs.layers[i])
    with torch.no_grad():
        mine.norm.weight.copy_(final_norm.weight)
        mine.norm.bias.copy_(final_norm.bias)
    x, memory, src_mask, tgt_mask, torch_memory_pad, torch_causal = inputs()
    with torch.no_grad():
        expected = theirs(x, memory, tgt_mask=torch_causal, memory_key_padding_mask=torch_memory_pad)
    out = run_layer(mine, x, memory, src_mask, tgt_mask)
    assert_close(out, expected, f"Decoder(norm_first={norm_first}) vs nn.TransformerDecoder(+ final norm)", atol=1e-5,
                 hint=HINT_STACK + " " + HINT_CROSS + " " + HINT_SRC_MASK)


# --- edge cases --------------------------------------------------------------------------------------------


def test_decoder_handles_one_target_token_and_batch_of_one(stage):
    decoder = stage.Decoder(2, D, H, FF, dropout=0.0).eval()
    x, memory = torch.randn(1, 1, D), torch.randn(1, S, D)
    out = run_layer(decoder, x, memory, torch.ones(1, 1, 1, S, dtype=torch.bool), causal(1))
    out = assert_tensor(out, "Decoder output for B=1, T=1", shape=(1, 1, D), dtype=torch.float32,
                        hint="The first decoding step has a single target token: do not squeeze it away.")
    if not torch.isfinite(out).all():
        fail("Decoder output for B=1, T=1: expected finite values, got NaN or inf", HINT_CAUSAL)
