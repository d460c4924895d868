"""Stage 4: the causal mask, the padding mask and their combination (True = may attend).

Oracles: slow loops over (i, j) written here, and torch's own
F.scaled_dot_product_attention, which reads a boolean mask the same way. "The future does not
leak" is tested by behaviour: change a later token and watch the earlier outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from checks import assert_close, assert_tensor, call, fail

HINT_CAUSAL = ("Query i may attend to key j exactly when j <= i: the diagonal is allowed (a position sees "
               "itself), the future is not: the lower triangle of a square of True, diagonal included.")
HINT_PADDING = ("The padding mask is True where the token is real, i.e. tokens != pad_id (not ==, and not a "
                "comparison with 0 when pad_id is something else).")
HINT_PADDING_SHAPE = ("Shape it (B, 1, 1, S): the key axis is the LAST one, so it broadcasts over heads and "
                      "query positions. (B, 1, S, 1) would mask query rows instead of keys.")


def slow_causal(size: int) -> torch.Tensor:
    return torch.tensor([[j <= i for j in range(size)] for i in range(size)], dtype=torch.bool).reshape(size, size)


def slow_combined(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    batch, size = tokens.shape
    out = torch.zeros(batch, 1, size, size, dtype=torch.bool)
    for b in range(batch):
        for i in range(size):
            for j in range(size):
                out[b, 0, i, j] = bool(tokens[b, j] != pad_id) and j <= i
    return out


# ---------------------------------------------------------------------------------------------
# causal_mask


@pytest.mark.parametrize("size", [5, 2, 1])
def test_causal_mask_shape_dtype_and_values(stage, size):
    mask = stage.causal_mask(size)
    assert_tensor(mask, f"causal_mask({size})", shape=(size, size), dtype=torch.bool,
                  hint="A square (S, S) torch.bool mask (not float, not int: masked_fill needs bool).")
    expected = slow_causal(size)
    suspects = {
        "the diagonal is blocked": (expected & ~torch.eye(size, dtype=torch.bool),
                                    "A position sees itself: the diagonal is allowed, only j > i is blocked."),
        "key i + 1 is allowed too": (expected | torch.ones(size, size, dtype=torch.bool).tril(1).triu(1),
                                     "Query i sees key i + 1: the future leaks. " + HINT_CAUSAL),
        "the mask is transposed": (expected.T, "Rows are queries and columns keys: the lower triangle (tril), "
                                               "not the upper one (triu)."),
        "every entry is inverted": (~expected, "True means MAY attend: True on and below the diagonal, False above it."),
    }
    assert_close(mask, expected, f"causal_mask({size})", atol=0, hint=HINT_CAUSAL, suspects=suspects)


def test_causal_mask_hand_worked_size_3(stage):
    """Row i lists the keys query i may see: row 0 sees key 0; row 1 keys 0, 1; row 2 keys 0, 1, 2."""
    expected = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])
    mask = stage.causal_mask(3)
    assert_tensor(mask, "causal_mask(3)", shape=(3, 3), dtype=torch.bool, hint="(S, S) torch.bool.")
    if torch.equal(mask, ~expected):
        fail(f"causal_mask(3) is the expected mask inverted: {mask.tolist()}",
             "True means MAY attend: True on and below the diagonal, False above it.", "every entry is inverted")
    if torch.equal(mask, expected.T):
        fail(f"causal_mask(3) is the mirror image of the expected mask: {mask.tolist()}",
             "Rows are queries and columns keys: the lower triangle (tril), not the upper one (triu).",
             "the mask is transposed")
    assert_close(mask, expected, "causal_mask(3)", atol=0, hint=HINT_CAUSAL)


def test_causal_mask_honours_the_device_argument(stage):
    mask = stage.causal_mask(4, device="cpu")
    assert_tensor(mask, "causal_mask(4, device='cpu')", shape=(4, 4), dtype=torch.bool, hint="(S, S) torch.bool.")
    if mask.device.type != "cpu":
        fail(f"causal_mask(4, device='cpu') is on {mask.device}, expected cpu", "Pass device=device to the factory.")


# ---------------------------------------------------------------------------------------------
# padding_mask


def test_padding_mask_shape_and_dtype(stage):
    tokens = torch.tensor([[5, 6, 0, 0], [7, 8, 9, 0], [4, 0, 0, 0]])
    mask = call(stage.padding_mask, tokens, pad_id=0, what="padding_mask(tokens, pad_id=0)")
    assert_tensor(mask, "padding_mask(tokens (3, 4))", shape=(3, 1, 1, 4), dtype=torch.bool, hint=HINT_PADDING_SHAPE)


def test_padding_mask_hand_worked(stage):
    """tokens [[5, 6, 0]] with pad_id 0: 5 and 6 are real, 0 is padding -> [[[[True, True, False]]]]."""
    mask = stage.padding_mask(torch.tensor([[5, 6, 0]]), pad_id=0)
    assert_tensor(mask, "padding_mask([[5, 6, 0]], 0)", shape=(1, 1, 1, 3), dtype=torch.bool, hint=HINT_PADDING_SHAPE)
    assert_close(mask, torch.tensor([[[[True, True, False]]]]), "padding_mask([[5, 6, 0]], 0)", atol=0,
                 hint=HINT_PADDING)


def test_padding_mask_is_built_from_the_given_tokens_and_pad_id(stage):
    tokens = torch.tensor([[0, 3, 7, 7], [7, 1, 2, 0]])  # pad_id 7: the zeros are real tokens
    mask = stage.padding_mask(tokens, pad_id=7)
    expected = torch.zeros(2, 1, 1, 4, dtype=torch.bool)
    for b in range(2):
        for j in range(4):
            expected[b, 0, 0, j] = bool(tokens[b, j] != 7)
    assert_tensor(mask, "padding_mask(tokens, pad_id=7)", shape=(2, 1, 1, 4), dtype=torch.bool,
                  hint=HINT_PADDING_SHAPE)
    assert_close(mask, expected, "padding_mask([[0, 3, 7, 7], [7, 1, 2, 0]], pad_id=7)", atol=0, hint=HINT_PADDING)


def test_padding_mask_batch_one_length_one(stage):
    mask = stage.padding_mask(torch.tensor([[4]]), pad_id=0)
    assert_tensor(mask, "padding_mask([[4]], 0)", shape=(1, 1, 1, 1), dtype=torch.bool, hint=HINT_PADDING_SHAPE)
    assert_close(mask, torch.ones(1, 1, 1, 1, dtype=torch.bool), "padding_mask([[4]], 0)", atol=0, hint=HINT_PADDING)


# ---------------------------------------------------------------------------------------------
# combine_masks


def test_combine_masks_shape_and_values(stage):
    tokens = torch.tensor([[5, 6, 7, 0], [1, 2, 0, 0]])
    padding = (tokens != 0).view(2, 1, 1, 4)  # built here, so this test does not depend on padding_mask
    causal = slow_causal(4)
    mask = call(stage.combine_masks, padding, causal, what="combine_masks(padding, causal)")
    assert_tensor(mask, "combine_masks((2, 1, 1, 4), (4, 4))", shape=(2, 1, 4, 4), dtype=torch.bool,
                  hint="(B, 1, 1, S) & (S, S) broadcasts to (B, 1, S, S).")
    assert_close(mask, slow_combined(tokens, 0), "combine_masks(padding, causal)", atol=0,
                 hint="A key is allowed only when BOTH masks allow it: padding & causal (not |).")


def test_combine_masks_batch_one_length_one(stage):
    mask = stage.combine_masks(torch.ones(1, 1, 1, 1, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool))
    assert_tensor(mask, "combine_masks((1, 1, 1, 1), (1, 1))", shape=(1, 1, 1, 1), dtype=torch.bool,
                  hint="Even for one token the result keeps all four axes: (B, 1, S, S).")
    assert_close(mask, torch.ones(1, 1, 1, 1, dtype=torch.bool), "combine_masks for one real token", atol=0,
                 hint="A single real token may attend to itself: True & True.")


def test_masks_compose_end_to_end(stage):
    tokens = torch.tensor([[3, 9, 9, 4, 2], [8, 1, 2, 2, 2]])
    mask = stage.combine_masks(stage.padding_mask(tokens, pad_id=2), stage.causal_mask(5))
    assert_tensor(mask, "combine_masks(padding_mask(tokens, 2), causal_mask(5))", shape=(2, 1, 5, 5),
                  dtype=torch.bool, hint="(B, 1, S, S). " + HINT_PADDING_SHAPE)
    assert_close(mask, slow_combined(tokens, 2), "the decoder mask for tokens with pad_id 2", atol=0,
                 hint=HINT_CAUSAL + " " + HINT_PADDING)


# ---------------------------------------------------------------------------------------------
# the masks in torch's attention


def test_causal_mask_in_attention_the_future_does_not_leak(stage):
    batch, heads, length, dk = 2, 2, 5, 4
    q, k, v = (torch.randn(batch, heads, length, dk) for _ in range(3))
    mask = stage.causal_mask(length)
    assert_tensor(mask, "causal_mask(5)", shape=(5, 5), dtype=torch.bool, hint="(S, S) torch.bool.")
    before = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for t in range(length):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        q2[..., t:, :] = torch.randn(batch, heads, length - t, dk)
        k2[..., t:, :] = torch.randn(batch, heads, length - t, dk)
        v2[..., t:, :] = torch.randn(batch, heads, length - t, dk)
        after = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)
        assert_close(after[..., :t, :], before[..., :t, :],
                     f"attention outputs at positions 0..{t - 1} after changing positions {t}..{length - 1}",
                     atol=1e-6, hint="Changing later tokens changed earlier outputs: the future leaks. "
                                     "Does the mask block j > i rather than j >= i, and allow j <= i?")
        if t + 1 < length and torch.allclose(after[..., t + 1, :], before[..., t + 1, :], atol=1e-6):
            fail(f"changing positions {t}.. left the output at position {t + 1} unchanged: it cannot see the past",
                 HINT_CAUSAL)


def test_padding_mask_in_attention_hides_padded_keys(stage):
    tokens = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 0]])
    mask = stage.padding_mask(tokens, pad_id=0)
    assert_tensor(mask, "padding_mask(tokens (2, 5))", shape=(2, 1, 1, 5), dtype=torch.bool, hint=HINT_PADDING_SHAPE)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))  # 3 heads
    before = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    k2, v2 = k.clone(), v.clone()
    padded = tokens == 0
    k2[padded.unsqueeze(1).expand(2, 3, 5)] = 50.0
    v2[padded.unsqueeze(1).expand(2, 3, 5)] = 50.0
    after = F.scaled_dot_product_attention(q, k2, v2, attn_mask=mask)
    assert_close(after, before, "attention outputs after changing the keys and values of padding tokens", atol=1e-6,
                 hint="Padding must have no influence on any query. " + HINT_PADDING_SHAPE)
