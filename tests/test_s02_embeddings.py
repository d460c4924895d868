"""Stage 2: the scaled token embedding and the sinusoidal positional encoding.

Oracles: torch's own nn.Embedding holding a copy of the learner's weight, a slow loop over
positions and pairs with math.sin / math.cos, and the d_model = 4 table worked out by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from checks import assert_close, assert_equal, assert_in_place_safe, assert_tensor, call, fail

HINT_SCALE = "The embedding is multiplied by sqrt(d_model) (section 3.4 of the paper): not by d_model, not left unscaled."
HINT_TABLE = ("The angle is pos / 10000^(2i / d_model), with 2i the even column index (not i) and a negative "
              "exponent on 10000, so the frequency falls as the column grows; sin in even columns, cos in odd ones.")
HINT_SIN_COS = "sin goes in the even columns (0, 2, ...) and cos in the odd columns (1, 3, ...): are they swapped?"


def slow_table(max_len: int, d_model: int) -> torch.Tensor:
    """The table straight from the formula, one entry at a time in Python floats (float64)."""
    table = [[0.0] * d_model for _ in range(max_len)]
    for pos in range(max_len):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            table[pos][2 * i] = math.sin(angle)
            table[pos][2 * i + 1] = math.cos(angle)
    return torch.tensor(table, dtype=torch.float32).reshape(max_len, d_model)


# ---------------------------------------------------------------------------------------------
# TokenEmbedding


def test_token_embedding_shape_and_attribute(stage):
    module = stage.TokenEmbedding(vocab_size=11, d_model=6)
    embedding = getattr(module, "embedding", None)
    if not isinstance(embedding, nn.Embedding):
        fail(f"TokenEmbedding.embedding: expected an nn.Embedding, got {type(embedding).__name__}",
             "Store the lookup table, an nn.Embedding of vocab_size rows and d_model columns, as self.embedding: "
             "a later stage ties its weight.")
    assert_tensor(embedding.weight, "embedding.weight", shape=(11, 6), dtype=torch.float32,
                  hint="nn.Embedding(vocab_size, d_model): one row per token id.")
    names = sorted(name for name, _ in module.named_parameters())
    assert_equal(names, ["embedding.weight"], "TokenEmbedding's parameters",
                 hint="The only learned tensor is the embedding table; sqrt(d_model) is a constant.")
    out = call(module, torch.randint(0, 11, (2, 5)), what="TokenEmbedding(tokens (2, 5))")
    assert_tensor(out, "TokenEmbedding(tokens (2, 5))", shape=(2, 5, 6), dtype=torch.float32,
                  hint="(B, S) ids -> (B, S, D) vectors.")


def test_token_embedding_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    module = stage.TokenEmbedding(vocab_size=7, d_model=4)
    assert_in_place_safe(module, torch.randint(0, 7, (2, 3)), what="TokenEmbedding(tokens)")


def test_token_embedding_equals_lookup_times_sqrt_d_model(stage):
    module = stage.TokenEmbedding(vocab_size=13, d_model=6)
    oracle = nn.Embedding(13, 6)
    with torch.no_grad():
        oracle.weight.copy_(module.embedding.weight)
    tokens = torch.randint(0, 13, (3, 4))
    expected = oracle(tokens) * math.sqrt(6)
    got = call(module, tokens, what="TokenEmbedding(tokens)")
    assert_close(got, expected, "TokenEmbedding(tokens)", atol=1e-6, hint=HINT_SCALE)


def test_token_embedding_batch_one_length_one(stage):
    module = stage.TokenEmbedding(vocab_size=5, d_model=8)
    got = call(module, torch.tensor([[3]]), what="TokenEmbedding(tensor([[3]]))")
    assert_tensor(got, "TokenEmbedding(tensor([[3]]))", shape=(1, 1, 8), dtype=torch.float32,
                  hint="Keep the batch and sequence axes even when they are 1.")
    assert_close(got[0, 0], module.embedding.weight[3].detach() * math.sqrt(8), "TokenEmbedding(tensor([[3]]))[0, 0]",
                 atol=1e-6, hint=HINT_SCALE)


# ---------------------------------------------------------------------------------------------
# sinusoidal_table


def test_table_shape_and_dtype(stage):
    table = stage.sinusoidal_table(7, 10)
    assert_tensor(table, "sinusoidal_table(7, 10)", shape=(7, 10), dtype=torch.float32,
                  hint="One row per position, one column per feature, float32.")


def test_table_hand_worked_d_model_4(stage):
    """d_model = 4: 10000^(0/4) = 1 and 10000^(2/4) = 100, so row pos is
    [sin(pos), cos(pos), sin(pos/100), cos(pos/100)]:
        pos 0: [0, 1, 0, 1]
        pos 1: [0.841471, 0.540302, 0.00999983, 0.99995]
        pos 2: [0.909297, -0.416147, 0.0199987, 0.9998]
    """
    expected = torch.tensor([
        [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(3)
    ])
    got = stage.sinusoidal_table(3, 4)
    assert_tensor(got, "sinusoidal_table(3, 4)", shape=(3, 4), dtype=torch.float32, hint="(max_len, d_model).")
    if torch.allclose(got, expected[:, [1, 0, 3, 2]], atol=1e-6):
        fail("sinusoidal_table(3, 4): every column pair is [cos, sin], expected [sin, cos]", HINT_SIN_COS)
    assert_close(got, expected, "sinusoidal_table(3, 4)", atol=1e-6, hint=HINT_TABLE)


def test_table_sin_in_even_columns_and_cos_in_odd_columns(stage):
    """Position 0 has angle 0 in every pair: sin 0 = 0 in even columns, cos 0 = 1 in odd columns."""
    got = stage.sinusoidal_table(4, 8)
    assert_tensor(got, "sinusoidal_table(4, 8)", shape=(4, 8), dtype=torch.float32, hint="(max_len, d_model).")
    assert_close(got[0], torch.tensor([0.0, 1.0] * 4), "sinusoidal_table(4, 8)[0] (position 0)", atol=1e-6,
                 hint=HINT_SIN_COS)


@pytest.mark.parametrize("max_len, d_model", [(1, 2), (9, 6), (32, 16)])
def test_table_matches_a_slow_loop(stage, max_len, d_model):
    # atol 2e-6, not 1e-6: a float32 angle at position p is off by up to about p * 1.2e-7, so sin/cos of
    # positions below 32 may differ by ~5e-7 (measured) depending on how the frequency is computed.
    got = stage.sinusoidal_table(max_len, d_model)
    assert_tensor(got, f"sinusoidal_table({max_len}, {d_model})", shape=(max_len, d_model), dtype=torch.float32,
                  hint="(max_len, d_model), float32.")
    assert_close(got, slow_table(max_len, d_model), f"sinusoidal_table({max_len}, {d_model})", atol=2e-6,
                 hint=HINT_TABLE)


def test_odd_d_model_raises_value_error(stage):
    for what, build in (("sinusoidal_table(10, 5)", lambda: stage.sinusoidal_table(10, 5)),
                        ("PositionalEncoding(d_model=7)", lambda: stage.PositionalEncoding(d_model=7, max_len=10))):
        hint = ("sin and cos come in pairs, so an odd d_model has no valid table: check d_model % 2 first and "
                "raise ValueError (a shape error from deeper inside is not the contract).")
        try:
            build()
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as error:  # noqa: BLE001 - any other exception is the wrong contract
            fail(f"{what} raised {type(error).__name__} ({error}), expected ValueError", hint)
        fail(f"{what} did not raise ValueError", hint)


# ---------------------------------------------------------------------------------------------
# PositionalEncoding


def test_positional_encoding_table_is_a_buffer_not_a_parameter(stage):
    module = stage.PositionalEncoding(d_model=6, max_len=12, dropout=0.0)
    params = sorted(name for name, _ in module.named_parameters())
    assert_equal(params, [], "PositionalEncoding's parameters",
                 hint="The table is fixed, not learned: a buffer, not an nn.Parameter.")
    buffers = dict(module.named_buffers())
    if "table" not in buffers:
        fail(f"PositionalEncoding: expected a buffer named 'table', found buffers {sorted(buffers)}",
             "Register the table as a buffer named 'table' (register_buffer, with persistent=False).")
    assert_tensor(buffers["table"], "PositionalEncoding.table", shape=(12, 6), dtype=torch.float32,
                  hint="The whole (max_len, d_model) table.")
    keys = sorted(module.state_dict())
    assert_equal(keys, [], "PositionalEncoding.state_dict() keys",
                 hint="The table is recomputed, never saved: register_buffer(..., persistent=False) keeps it "
                      "out of the state_dict.")
    assert_close(buffers["table"], slow_table(12, 6), "PositionalEncoding.table", atol=2e-6, hint=HINT_TABLE)


def test_positional_encoding_leaves_its_input_unchanged_and_trains_twice_in_a_row(stage):
    module = stage.PositionalEncoding(d_model=8, max_len=10, dropout=0.1).eval()
    assert_in_place_safe(module, torch.randn(2, 5, 8), what="PositionalEncoding(x)")


def test_positional_encoding_adds_the_first_s_positions(stage):
    module = stage.PositionalEncoding(d_model=8, max_len=20, dropout=0.1).eval()
    x = torch.randn(2, 5, 8)
    got = call(module, x, what="PositionalEncoding(x (2, 5, 8))")
    assert_tensor(got, "PositionalEncoding(x (2, 5, 8))", shape=(2, 5, 8), dtype=torch.float32,
                  hint="The positions are added: the shape does not change.")
    assert_close(got, x + slow_table(20, 8)[:5], "PositionalEncoding(x) in eval mode", atol=1e-6,
                 hint="In eval mode the output is x + table[:S] (positions 0 .. S-1, the same for every batch "
                      "row), and dropout does nothing.")


def test_positional_encoding_batch_one_length_one(stage):
    module = stage.PositionalEncoding(d_model=4, max_len=3, dropout=0.0)
    x = torch.randn(1, 1, 4)
    got = call(module, x, what="PositionalEncoding(x (1, 1, 4))")
    assert_tensor(got, "PositionalEncoding(x (1, 1, 4))", shape=(1, 1, 4), dtype=torch.float32,
                  hint="Batch 1, length 1 keeps its axes.")
    assert_close(got, x + torch.tensor([0.0, 1.0, 0.0, 1.0]), "PositionalEncoding(x (1, 1, 4))", atol=1e-6,
                 hint="A sequence of length 1 gets position 0: [0, 1, 0, 1].")


def test_positional_encoding_dropout_in_training_only(stage):
    module = stage.PositionalEncoding(d_model=8, max_len=16, dropout=0.5)
    x = torch.randn(4, 16, 8)
    summed = x + slow_table(16, 8)
    module.train()
    got = call(module, x, what="PositionalEncoding(x) in training")
    assert_tensor(got, "PositionalEncoding(x) in training", shape=(4, 16, 8), dtype=torch.float32,
                  hint="Dropout keeps the shape.")
    dropped = got == 0
    kept = ~dropped
    if not dropped.any():
        fail("PositionalEncoding with dropout=0.5 in training mode zeroed no element of 512",
             "Apply self.dropout (an nn.Dropout(dropout)) to x + table[:S].")
    assert_close(got[kept], summed[kept] * 2, "kept elements in training (dropout=0.5)", atol=1e-5,
                 hint="Dropout acts AFTER the addition: each kept element is (x + table) / (1 - p).")
    fraction = dropped.float().mean().item()
    if not 0.35 < fraction < 0.65:
        fail(f"PositionalEncoding with dropout=0.5 zeroed {fraction:.0%} of the elements, expected about 50%",
             "Pass the dropout probability to nn.Dropout.")
    module.eval()
    assert_close(call(module, x, what="PositionalEncoding(x) in eval mode"), summed, "PositionalEncoding(x) in eval mode (dropout=0.5)", atol=1e-6,
                 hint="Use an nn.Dropout module (or pass training=self.training): dropout must be off in eval mode.")
