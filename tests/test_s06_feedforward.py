"""Stage 6: the position-wise feed-forward network, linear -> ReLU -> dropout -> linear.

The oracle is the formula written with torch.nn.functional (F.linear, F.relu) on copies of the
learner's weights. Where the dropout sits is tested by behaviour: with the second layer set to a
known matrix, the output shows which hidden units were dropped.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

HINT_ORDER = "The order is linear1, then the ReLU, then dropout on the hidden activation, then linear2."
RESIDUAL = ("The residual is added inside the feed-forward: FeedForward returns only the network's output; "
            "x + sublayer(x) is the sub-layer connection's job (stage 7).")


def make(stage, d_model=8, d_ff=16, dropout=0.0):
    module = stage.FeedForward(d_model, d_ff, dropout=dropout)
    for name in ("linear1", "linear2"):
        if not isinstance(getattr(module, name, None), nn.Linear):
            fail(f"FeedForward.{name}: expected an nn.Linear, got {type(getattr(module, name, None)).__name__}",
                 "linear1 maps d_model to d_ff and linear2 maps d_ff back to d_model, both nn.Linear.")
    return module


def oracle(module, x):
    """W2 relu(W1 x + b1) + b2 with copies of the module's weights (no dropout: eval mode)."""
    w1, b1 = module.linear1.weight.detach().clone(), module.linear1.bias.detach().clone()
    w2, b2 = module.linear2.weight.detach().clone(), module.linear2.bias.detach().clone()
    return F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)


# ---------------------------------------------------------------------------------------------
# construction and shapes


def test_layers_have_the_right_sizes(stage):
    module = make(stage, d_model=6, d_ff=10, dropout=0.3)
    assert_tensor(module.linear1.weight, "linear1.weight", shape=(10, 6), dtype=torch.float32,
                  hint="linear1 = nn.Linear(d_model, d_ff): its weight is (d_ff, d_model).")
    assert_tensor(module.linear2.weight, "linear2.weight", shape=(6, 10), dtype=torch.float32,
                  hint="linear2 = nn.Linear(d_ff, d_model): its weight is (d_model, d_ff).")
    names = sorted(name for name, _ in module.named_parameters())
    assert_equal(names, ["linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight"],
                 "FeedForward's parameters", hint="Two nn.Linear layers with biases, and nothing else learned.")
    dropout = getattr(module, "dropout", None)
    if not isinstance(dropout, nn.Dropout) or dropout.p != 0.3:
        fail(f"FeedForward.dropout: expected nn.Dropout(p=0.3), got {dropout!r}",
             "Store an nn.Dropout module, built with the dropout probability, as self.dropout.")


@pytest.mark.parametrize("shape", [(2, 5, 8), (1, 1, 8), (3, 1, 8)])
def test_output_shape(stage, shape):
    module = make(stage, d_model=8, d_ff=32).eval()
    out = call(module, torch.randn(*shape), what=f"FeedForward(x {shape})")
    assert_tensor(out, f"FeedForward(x {shape})", shape=shape, dtype=torch.float32,
                  hint="The network maps every D-vector to a D-vector: the shape does not change.")


# ---------------------------------------------------------------------------------------------
# invariants and the oracle


def test_eval_mode_is_deterministic(stage):
    module = make(stage, d_model=8, d_ff=16, dropout=0.5).eval()
    x = torch.randn(2, 4, 8)
    first, second = call(module, x, what="FeedForward(x)"), call(module, x, what="FeedForward(x)")
    assert_tensor(first, "FeedForward(x)", shape=(2, 4, 8), dtype=torch.float32, hint="(B, S, D).")
    assert_close(second, first, "two calls in eval mode with dropout=0.5", atol=0,
                 hint="Use the nn.Dropout module (self.dropout): it does nothing in eval mode, where a bare "
                      "F.dropout call keeps dropping.")


def test_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    module = make(stage, d_model=8, d_ff=16).eval()
    assert_in_place_safe(module, torch.randn(2, 3, 8), what="FeedForward(x)")


def test_matches_the_formula_with_torch_functional(stage):
    module = make(stage, d_model=8, d_ff=16, dropout=0.1).eval()
    x = torch.randn(2, 5, 8)
    got = call(module, x, what="FeedForward(x)")
    w1, b1 = module.linear1.weight.detach(), module.linear1.bias.detach()
    w2, b2 = module.linear2.weight.detach(), module.linear2.bias.detach()
    expected = oracle(module, x)
    suspects = {
        "your output equals linear2(linear1(x)), with no ReLU": (
            F.linear(F.linear(x, w1, b1), w2, b2), "Is the ReLU there, between the two layers? " + HINT_ORDER),
        "your output equals relu(linear2(linear1(x)))": (
            F.relu(F.linear(F.linear(x, w1, b1), w2, b2)), "The ReLU goes between the layers, not after the second."),
        "your output equals x + FFN(x)": (x + expected, RESIDUAL),
        "your output equals linear2(gelu(linear1(x)))": (
            F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), "This is the paper's ReLU, relu(x) = max(x, 0), not GELU."),
    }
    # atol 1e-6: two small matrix products in float32.
    assert_close(got, expected, "FeedForward(x) in eval mode vs W2 relu(W1 x + b1) + b2", atol=1e-6,
                 hint=HINT_ORDER, suspects=suspects)


def test_positions_are_independent(stage):
    module = make(stage, d_model=8, d_ff=16).eval()
    x = torch.randn(2, 6, 8)
    whole = call(module, x, what="FeedForward(x)")
    assert_tensor(whole, "FeedForward(x)", shape=(2, 6, 8), dtype=torch.float32, hint="(B, S, D).")
    for s in range(6):
        alone = call(module, x[:, s : s + 1], what="FeedForward(one position)")
        assert_close(whole[:, s : s + 1], alone, f"position {s} computed with the others vs alone", atol=1e-6,
                     hint="Each position goes through the network on its own: nothing may mix positions "
                          "(no reshape across S, no normalisation over the sequence).")


def test_relu_zeroes_negative_hidden_units(stage):
    """linear1 = identity, b1 = 0, linear2 = identity, b2 = 0: the output is relu(x) itself."""
    module = make(stage, d_model=4, d_ff=4).eval()
    with torch.no_grad():
        module.linear1.weight.copy_(torch.eye(4))
        module.linear1.bias.zero_()
        module.linear2.weight.copy_(torch.eye(4))
        module.linear2.bias.zero_()
    x = torch.tensor([[[-1.0, 2.0, -3.0, 4.0]]])
    assert_close(call(module, x, what="FeedForward(x)"), torch.tensor([[[0.0, 2.0, 0.0, 4.0]]]), "FeedForward with identity layers", atol=0,
                 hint="relu(x) = max(x, 0) goes between the two layers. " + HINT_ORDER)


# ---------------------------------------------------------------------------------------------
# dropout


def test_eval_mode_matches_the_formula_whatever_the_dropout(stage):
    module = make(stage, d_model=8, d_ff=16, dropout=0.5).eval()
    x = torch.randn(2, 4, 8)
    assert_close(call(module, x, what="FeedForward(x)"), oracle(module, x), "eval mode with dropout=0.5 vs the formula",
                 atol=1e-6, hint="In eval mode dropout must not change anything.")


def test_dropout_acts_on_the_hidden_units_after_the_relu(stage):
    """d_model = 5, d_ff = 4, and linear2 set to [I_4; 1 1 1 1] with b2 = 0, so that
        out[:4] = the hidden vector after dropout   and   out[4] = its sum.
    With dropout p = 0.5 before linear2, each hidden unit is 0 or 2 * relu(h); the last output
    is always the sum of the first four. Dropout anywhere else breaks one of these facts.
    """
    module = make(stage, d_model=5, d_ff=4, dropout=0.5).train()
    with torch.no_grad():
        module.linear2.weight.copy_(torch.cat([torch.eye(4), torch.ones(1, 4)]))
        module.linear2.bias.zero_()
    x = torch.randn(4, 16, 5)
    hidden = F.relu(F.linear(x, module.linear1.weight.detach(), module.linear1.bias.detach()))
    out = call(module, x, what="FeedForward(x) in training")
    assert_tensor(out, "FeedForward(x) in training", shape=(4, 16, 5), dtype=torch.float32, hint="(B, S, D).")
    out = out.detach()
    assert_close(out[..., 4], out[..., :4].sum(-1), "output 4 vs the sum of outputs 0..3", atol=1e-5,
                 hint="Dropout must sit on the hidden activation, between the layers, not on the output. " + HINT_ORDER)
    dropped = out[..., :4] == 0
    if not (dropped & (hidden > 0)).any():
        fail("dropout=0.5 in training mode dropped no positive hidden unit of 256",
             "Apply self.dropout to the hidden activation. " + HINT_ORDER)
    kept = ~dropped
    assert_close(out[..., :4][kept], 2 * hidden[kept], "kept hidden units, which should be relu(h) / (1 - p)",
                 atol=1e-5, hint="Dropout acts on relu(linear1(x)): not on the input, and the ReLU must "
                                 "not be skipped. " + HINT_ORDER)
