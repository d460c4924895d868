"""Stage 9: the encoder-decoder model, weight tying and initialisation.

Oracle: torch.nn.Transformer (post-LN, ReLU, dropout 0, batch_first) with the learner's weights
copied in, its inputs embedded in the test by F.embedding * sqrt(D) plus a sinusoidal table
computed here, and its output projected by F.linear. Torch's boolean masks are True where
attention is NOT allowed, the opposite of this kata's, so the tests invert them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

V_SRC, V_TGT, D, H, N, FF = 11, 13, 16, 2, 2, 32
B, S, T = 2, 5, 4
PAD = 0

HINT_FLOW = ("encode: src ids -> src_embed -> positional -> encoder(src_mask). decode: tgt ids -> tgt_embed -> "
             "positional -> decoder(memory, src_mask, tgt_mask). forward: generator(decode(encode(...))).")
HINT_TIE = ("Weight tying shares ONE Parameter: the generator's projection gets the target embedding's weight "
            "Parameter itself. A copy (nn.Parameter(w.clone()), weight.data.copy_) makes two Parameters that drift apart.")
HINT_INIT = ("Call nn.init.xavier_uniform_ on every parameter with more than one dimension (embeddings and linear "
             "weights), once, in __init__; leave biases and layer norms as PyTorch made them.")


def config(stage, **overrides):
    values = dict(src_vocab=V_SRC, tgt_vocab=V_TGT, d_model=D, n_heads=H, n_layers=N, d_ff=FF, dropout=0.0,
                  max_len=32)
    values.update(overrides)
    return stage.TransformerConfig(**values)


def sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(...), by a slow obvious loop in float64."""
    table = torch.zeros(length, d_model, dtype=torch.float64)
    for pos in range(length):
        for i in range(0, d_model, 2):
            angle = pos / 10000 ** (i / d_model)
            table[pos, i] = math.sin(angle)
            table[pos, i + 1] = math.cos(angle)
    return table.float()


def tokens():
    """Source and target ids; row 1 of each ends in padding (position 0 is never padding)."""
    src = torch.randint(1, V_SRC, (B, S))
    tgt = torch.randint(1, V_TGT, (B, T))
    src[1, 3:] = PAD
    tgt[1, 3:] = PAD
    return src, tgt


def masks(src, tgt):
    """This kata's masks (True = may attend), built here without the learner's code."""
    src_mask = (src != PAD).view(B, 1, 1, S)
    tgt_mask = (tgt != PAD).view(B, 1, 1, T) & torch.ones(T, T, dtype=torch.bool).tril()
    return src_mask, tgt_mask


def run(what, fn, *args):
    """Call the learner's code; a crash becomes a failure that says which call and why it may be."""
    __tracebackhide__ = True
    return call(fn, *args, what=what,
                hint=HINT_FLOW + " Is each side embedded with its own vocabulary (src_embed for src, tgt_embed for tgt)?")


def copy_attention(mine, theirs: nn.MultiheadAttention) -> None:
    q, k, v = theirs.in_proj_weight.detach().chunk(3)
    qb, kb, vb = theirs.in_proj_bias.detach().chunk(3)
    for proj, w, b in ((mine.q_proj, q, qb), (mine.k_proj, k, kb), (mine.v_proj, v, vb)):
        proj.weight.copy_(w)
        proj.bias.copy_(b)
    mine.out_proj.weight.copy_(theirs.out_proj.weight)
    mine.out_proj.bias.copy_(theirs.out_proj.bias)


def copy_linear_and_norms(mine, theirs, norms) -> None:
    mine.feed_forward.linear1.weight.copy_(theirs.linear1.weight)
    mine.feed_forward.linear1.bias.copy_(theirs.linear1.bias)
    mine.feed_forward.linear2.weight.copy_(theirs.linear2.weight)
    mine.feed_forward.linear2.bias.copy_(theirs.linear2.bias)
    for sublayer, norm in zip(mine.sublayers, norms):
        sublayer.norm.weight.copy_(norm.weight)
        sublayer.norm.bias.copy_(norm.bias)


@torch.no_grad()
def load_torch_transformer(model, theirs: nn.Transformer) -> None:
    """Copy every encoder/decoder weight of torch's model into the learner's, by the documented names."""
    for mine, layer in zip(model.encoder.layers, theirs.encoder.layers):
        copy_attention(mine.self_attn, layer.self_attn)
        copy_linear_and_norms(mine, layer, (layer.norm1, layer.norm2))
    for mine, layer in zip(model.decoder.layers, theirs.decoder.layers):
        copy_attention(mine.self_attn, layer.self_attn)
        copy_attention(mine.cross_attn, layer.multihead_attn)
        copy_linear_and_norms(mine, layer, (layer.norm1, layer.norm2, layer.norm3))
    for mine, norm in ((model.encoder.norm, theirs.encoder.norm), (model.decoder.norm, theirs.decoder.norm)):
        mine.weight.copy_(norm.weight)
        mine.bias.copy_(norm.bias)


def torch_transformer() -> nn.Transformer:
    theirs = nn.Transformer(D, H, N, N, FF, dropout=0.0, activation="relu", batch_first=True, norm_first=False)
    with torch.no_grad():
        for name, parameter in theirs.named_parameters():
            if parameter.dim() == 1:  # give biases and norms values a forgotten copy would show
                parameter.add_(0.2 * torch.randn_like(parameter))
    return theirs.train()  # train mode (dropout is 0) keeps torch off its fused fast path


# --- shapes ------------------------------------------------------------------------------------------------


def test_forward_returns_logits_of_shape_batch_target_vocab(stage):
    model = stage.EncoderDecoder(config(stage)).eval()
    src, tgt = tokens()
    logits = run("model(src, tgt, src_mask, tgt_mask)", model, src, tgt, *masks(src, tgt))
    assert_tensor(logits, f"logits for B={B}, S={S}, T={T}", shape=(B, T, V_TGT), dtype=torch.float32,
                  hint="One score per TARGET vocabulary entry at every target position; no softmax. " + HINT_FLOW)


def test_encode_and_decode_shapes(stage):
    model = stage.EncoderDecoder(config(stage)).eval()
    src, tgt = tokens()
    src_mask, tgt_mask = masks(src, tgt)
    memory = run("model.encode(src, src_mask)", model.encode, src, src_mask)
    assert_tensor(memory, "encode(src, src_mask)", shape=(B, S, D), dtype=torch.float32, hint=HINT_FLOW)
    states = run("model.decode(memory, src_mask, tgt, tgt_mask)", model.decode, memory, src_mask, tgt, tgt_mask)
    assert_tensor(states, "decode(memory, src_mask, tgt, tgt_mask)", shape=(B, T, D), dtype=torch.float32,
                  hint="decode returns the decoder's states, before the generator. " + HINT_FLOW)


@pytest.mark.parametrize("batch, length", [(1, 1), (1, 3), (3, 1)])
def test_batch_of_one_and_length_one(stage, batch, length):
    model = stage.EncoderDecoder(config(stage)).eval()
    src = torch.randint(1, V_SRC, (batch, 2))
    tgt = torch.randint(1, V_TGT, (batch, length))
    with torch.no_grad():
        logits = run("model(src, tgt)", model, src, tgt, None, torch.ones(length, length, dtype=torch.bool).tril())
    assert_tensor(logits, f"logits for B={batch}, T={length}", shape=(batch, length, V_TGT), dtype=torch.float32,
                  hint="Do not squeeze size-1 dimensions away.")


# --- weight tying ------------------------------------------------------------------------------------------


def test_leaves_its_inputs_unchanged_and_trains_twice_in_a_row(stage):
    model = stage.EncoderDecoder(config(stage)).eval()
    src, tgt = tokens()
    assert_in_place_safe(model, src, tgt, *masks(src, tgt), what="model(src, tgt, src_mask, tgt_mask)")


def test_tied_generator_weight_is_the_target_embedding_parameter(stage):
    model = stage.EncoderDecoder(config(stage, tie_weights=True))
    if model.generator.proj.weight is not model.tgt_embed.embedding.weight:
        fail("generator.proj.weight is not the same Parameter object as tgt_embed.embedding.weight "
             "(expected `is` to hold)", HINT_TIE)


def test_tying_removes_exactly_one_vocab_by_d_model_matrix_from_the_parameter_count(stage):
    torch.manual_seed(0)
    tied = sum(p.numel() for p in stage.EncoderDecoder(config(stage, tie_weights=True)).parameters())
    untied = sum(p.numel() for p in stage.EncoderDecoder(config(stage, tie_weights=False)).parameters())
    assert_equal(untied - tied, V_TGT * D, f"parameters saved by tying (untied {untied} - tied {tied})",
                 hint=HINT_TIE + " With tie_weights=False the generator keeps its own (V, D) weight.")


def test_untied_model_keeps_two_separate_matrices(stage):
    model = stage.EncoderDecoder(config(stage, tie_weights=False))
    if model.generator.proj.weight is model.tgt_embed.embedding.weight:
        fail("with tie_weights=False the generator weight is still the embedding Parameter",
             "Tie only when config.tie_weights is True.")


def test_tying_survives_an_optimizer_step(stage):
    model = stage.EncoderDecoder(config(stage, tie_weights=True)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    src, tgt = tokens()
    before = model.tgt_embed.embedding.weight.detach().clone()
    logits = run("model(src, tgt, src_mask, tgt_mask)", model, src, tgt, *masks(src, tgt))
    F.cross_entropy(logits.reshape(-1, V_TGT), torch.randint(1, V_TGT, (B * T,))).backward()
    optimizer.step()
    if model.generator.proj.weight is not model.tgt_embed.embedding.weight:
        fail("after an optimizer step the generator weight is no longer the embedding Parameter", HINT_TIE)
    assert_close(model.generator.proj.weight, model.tgt_embed.embedding.weight,
                 "generator weight vs embedding weight after one SGD step", atol=0.0, hint=HINT_TIE)
    if torch.equal(before, model.tgt_embed.embedding.weight.detach()):
        fail("the tied matrix did not change in an optimizer step: expected it to train",
             HINT_TIE + " Is the shared weight among model.parameters()?")


# --- initialisation and gradients --------------------------------------------------------------------------


def test_every_matrix_is_xavier_uniform_initialised(stage):
    """Xavier-uniform draws from U(-a, a), a = sqrt(6 / (fan_in + fan_out)): every |w| <= a, and the largest
    |w| of a matrix comes close to a. PyTorch's defaults fail one or the other: nn.Embedding is N(0, 1) (beyond a),
    nn.Linear is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (well inside a: 0.25 vs 0.43 for a 16 x 16 matrix)."""
    model = stage.EncoderDecoder(config(stage, tie_weights=False))
    matrices = [(name, p) for name, p in model.named_parameters() if p.dim() > 1]
    if not matrices:
        fail("the model has no parameters with more than one dimension", HINT_INIT)
    for name, weight in matrices:
        fan_out, fan_in = weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        largest = weight.detach().abs().max().item()
        if largest > bound * (1 + 1e-6):
            fail(f"{name} {tuple(weight.shape)}: expected every |w| <= sqrt(6/(fan_in+fan_out)) = {bound:.4f}, "
                 f"got a value of size {largest:.4f}; not xavier-uniform initialised", HINT_INIT)
        if largest < 0.9 * bound:
            fail(f"{name} {tuple(weight.shape)}: the largest |w| is {largest:.4f}, expected close to the xavier "
                 f"bound {bound:.4f}; this looks like PyTorch's default init, not xavier-uniform initialised",
                 HINT_INIT)


def test_gradients_reach_every_parameter(stage):
    model = stage.EncoderDecoder(config(stage)).train()
    src, tgt = tokens()
    logits = run("model(src, tgt, src_mask, tgt_mask)", model, src, tgt, *masks(src, tgt))
    F.cross_entropy(logits.reshape(-1, V_TGT), torch.randint(1, V_TGT, (B * T,))).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if dead:
        fail(f"no gradient reached these parameters: {dead}",
             HINT_FLOW + " Is every module used in forward, and no tensor detached on the way?")


# --- the oracle: torch.nn.Transformer ----------------------------------------------------------------------


def test_model_matches_torch_transformer_with_copied_weights(stage):
    model = stage.EncoderDecoder(config(stage, tie_weights=True)).eval()
    theirs = torch_transformer()
    load_torch_transformer(model, theirs)
    src_weight = torch.randn(V_SRC, D) * 0.5
    tgt_weight = torch.randn(V_TGT, D) * 0.5
    out_bias = torch.randn(V_TGT) * 0.5
    with torch.no_grad():
        model.src_embed.embedding.weight.copy_(src_weight)
        model.tgt_embed.embedding.weight.copy_(tgt_weight)  # tied: the generator's weight too
        model.generator.proj.bias.copy_(out_bias)
    src, tgt = tokens()
    table = sinusoidal_table(32, D)
    with torch.no_grad():
        src_x = F.embedding(src, src_weight) * math.sqrt(D) + table[:S]
        tgt_x = F.embedding(tgt, tgt_weight) * math.sqrt(D) + table[:T]
        states = theirs(src_x, tgt_x, tgt_mask=~torch.ones(T, T, dtype=torch.bool).tril(),
                        src_key_padding_mask=src == PAD, tgt_key_padding_mask=tgt == PAD,
                        memory_key_padding_mask=src == PAD)
        expected = F.linear(states, tgt_weight, out_bias)
        logits = run("model(src, tgt, src_mask, tgt_mask)", model, src, tgt, *masks(src, tgt))
    assert_tensor(logits, "logits", shape=(B, T, V_TGT), dtype=torch.float32, hint=HINT_FLOW)
    # 1e-4: two 2-layer stacks and an embedding scaled by sqrt(D) = 4 put the logits around 10
    assert_close(logits, expected, "logits vs nn.Transformer with the same weights", atol=1e-4,
                 hint=HINT_FLOW + " Are both the source and the target embedded, scaled by sqrt(D) and given "
                 "positions? Does encode pass src_mask to the encoder, and does the generator return raw logits "
                 "(no softmax)?")
