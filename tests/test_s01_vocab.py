"""Stage 1: the vocabulary (special ids, first-appearance order, unknown tokens) and pad_batch.

The oracles are hand-worked: the ids a vocabulary built from ["a", "b", "c", "b"] must give
are written out in each test, and pad_batch is checked against a slow loop.
"""

from __future__ import annotations

import pytest
import torch

from checks import assert_close, assert_equal, assert_int_list, assert_tensor, call, fail

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def slow_pad(sequences, pad_id):
    """The padded batch, one element at a time: row b is sequences[b] and then pad_id."""
    longest = max(len(s) for s in sequences)
    rows = [[s[j] if j < len(s) else pad_id for j in range(longest)] for s in sequences]
    return torch.tensor(rows, dtype=torch.long).reshape(len(sequences), longest)


# ---------------------------------------------------------------------------------------------
# the vocabulary: ids


def test_special_tokens_have_ids_0_to_3(stage):
    vocab = stage.Vocab(["a", "b"])
    for expected_id, token in enumerate(SPECIALS):
        assert_equal(vocab.stoi.get(token), expected_id, f"vocab.stoi[{token!r}]",
                     hint="The four specials come first, in the order pad, bos, eos, unk: ids 0, 1, 2, 3.")
        assert_equal(vocab.itos[expected_id], token, f"vocab.itos[{expected_id}]",
                     hint="itos is the list id -> token; it starts with the four specials in order.")
    assert_equal([vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id], [0, 1, 2, 3],
                 "[pad_id, bos_id, eos_id, unk_id]", hint="The *_id properties read stoi: are the specials in it?")


def test_tokens_get_ids_in_order_of_first_appearance(stage):
    """["c", "a", "c", "b", "a"]: c is new -> 4, a -> 5, c seen, b -> 6, a seen. Length 4 + 3 = 7."""
    vocab = stage.Vocab(["c", "a", "c", "b", "a"])
    assert_equal(len(vocab), 7, "len(Vocab(['c', 'a', 'c', 'b', 'a']))",
                 hint="Four specials plus three distinct tokens: is a repeated token added twice?")
    assert_equal(vocab.itos, SPECIALS + ["c", "a", "b"], "vocab.itos",
                 hint="Ids follow the order of first appearance: no sorting, no set() (a set has no order).")
    assert_equal(vocab.stoi, {t: i for i, t in enumerate(SPECIALS + ["c", "a", "b"])}, "vocab.stoi",
                 hint="stoi must be the exact inverse of itos.")


def test_special_tokens_in_the_input_are_not_added_again(stage):
    vocab = stage.Vocab(["<eos>", "x", "<pad>", "x", "<unk>"])
    assert_equal(vocab.itos, SPECIALS + ["x"], "Vocab(['<eos>', 'x', '<pad>', 'x', '<unk>']).itos",
                 hint="A special token already has its id 0-3: skip it like any token already in stoi.")


def test_vocab_accepts_any_iterable(stage):
    vocab = stage.Vocab(token for token in "the cat the mat".split())
    assert_equal(vocab.itos, SPECIALS + ["the", "cat", "mat"], "Vocab(a generator).itos",
                 hint="A generator can be read only once: loop over tokens a single time.")


# ---------------------------------------------------------------------------------------------
# encode and decode


def test_encode_maps_known_tokens_to_their_ids(stage):
    """Vocab(["a", "b", "c", "b"]): a 4, b 5, c 6."""
    vocab = stage.Vocab(["a", "b", "c", "b"])
    ids = assert_int_list(vocab.encode(["c", "a", "b", "a"]), "encode(['c', 'a', 'b', 'a'])",
                          hint="encode returns a list of ints, one per token.")
    assert_equal(ids, [6, 4, 5, 4], "encode(['c', 'a', 'b', 'a'])", hint="Look each token up in stoi.")


def test_encode_maps_an_unknown_token_to_unk(stage):
    vocab = stage.Vocab(["a", "b", "c"])
    try:
        ids = vocab.encode(["a", "zebra", "c", "<mask>"])
    except KeyError as error:
        fail(f"encode(['a', 'zebra', 'c', '<mask>']) raised KeyError({error}): an unknown token must become "
             "unk_id (3)", "Use self.stoi.get(token, self.unk_id) rather than self.stoi[token].")
    assert_int_list(ids, "encode with unknown tokens", hint="encode returns a list of ints.")
    assert_equal(ids, [4, 3, 6, 3], "encode(['a', 'zebra', 'c', '<mask>'])",
                 hint="An unknown token becomes unk_id (3), not pad_id (0) and not a new id: "
                      "the vocabulary is fixed once built.")
    assert_equal(len(vocab), 7, "len(vocab) after encoding unknown tokens",
                 hint="encode must not add tokens to the vocabulary.")


def test_encode_adds_bos_and_eos_when_asked(stage):
    vocab = stage.Vocab(["a", "b", "c", "b"])
    cases = [
        (dict(), [4, 6, 3]),
        (dict(add_bos=True), [1, 4, 6, 3]),
        (dict(add_eos=True), [4, 6, 3, 2]),
        (dict(add_bos=True, add_eos=True), [1, 4, 6, 3, 2]),
    ]
    for flags, expected in cases:
        ids = assert_int_list(vocab.encode(["a", "c", "z"], **flags), f"encode(['a', 'c', 'z'], **{flags})",
                              hint="encode returns a list of ints.")
        assert_equal(ids, expected, f"encode(['a', 'c', 'z'], **{flags})",
                     hint="bos_id (1) goes in front only with add_bos, eos_id (2) at the end only with add_eos.")


def test_encode_of_an_empty_sequence(stage):
    vocab = stage.Vocab(["a"])
    assert_equal(vocab.encode([]), [], "encode([])", hint="No tokens, no ids.")
    assert_equal(vocab.encode([], add_bos=True, add_eos=True), [1, 2], "encode([], add_bos=True, add_eos=True)",
                 hint="An empty sequence still gets its bos and eos.")


def test_decode_inverts_encode(stage):
    vocab = stage.Vocab("the quick brown fox jumps over the lazy dog".split())
    for tokens in (["fox"], ["the", "lazy", "dog", "the"], "over the quick brown fox".split()):
        ids = vocab.encode(tokens, add_bos=True, add_eos=True)
        assert_equal(vocab.decode(ids), tokens, f"decode(encode({tokens}, add_bos=True, add_eos=True))",
                     hint="decode looks ids up in itos and drops bos and eos: the round trip gives the tokens back.")


def test_decode_skips_specials_keeps_unk_and_stops_at_eos(stage):
    """Vocab(["a", "b", "c", "b"]): [1, 4, 6, 3, 2, 5, 0, 0] -> a c <unk>, then eos: stop (b is after it)."""
    vocab = stage.Vocab(["a", "b", "c", "b"])
    got = vocab.decode([1, 4, 0, 6, 3, 2, 5, 0, 0])
    if "b" in (got if isinstance(got, list) else []):
        fail(f"decode([1, 4, 0, 6, 3, 2, 5, 0, 0]) = {got!r}: the 'b' after eos was kept",
             "decode must stop at the first eos (break, not continue): what follows it is not part of the sequence.")
    assert_equal(got, ["a", "c", "<unk>"], "decode([1, 4, 0, 6, 3, 2, 5, 0, 0])",
                 hint="With skip_special, pad and bos are dropped, decoding stops at the first eos, and "
                      "<unk> is kept: it stands for real content.")


def test_decode_without_skipping_keeps_every_token(stage):
    vocab = stage.Vocab(["a", "b", "c", "b"])
    got = vocab.decode([1, 4, 2, 5, 0], skip_special=False)
    assert_equal(got, ["<bos>", "a", "<eos>", "b", "<pad>"], "decode([1, 4, 2, 5, 0], skip_special=False)",
                 hint="With skip_special=False every id is looked up, specials and what follows eos included.")


def test_decode_accepts_a_tensor(stage):
    vocab = stage.Vocab(["a", "b", "c", "b"])
    got = vocab.decode(torch.tensor([1, 6, 5, 2, 0]))
    assert_equal(got, ["c", "b"], "decode(torch.tensor([1, 6, 5, 2, 0]))",
                 hint="Iterating a 1-D tensor gives 0-d tensors: convert each with int(...) before using it.")
    for token in got:
        if type(token) is not str:
            fail(f"decode(tensor) returned a {type(token).__name__} in its list, expected str", "Look ids up in itos.")


# ---------------------------------------------------------------------------------------------
# pad_batch


def test_encode_and_pad_batch_leave_their_inputs_unchanged(stage):
    vocab = stage.Vocab(["a", "b"])
    call(vocab.encode, ["a", "c", "b"], add_bos=True, add_eos=True, what="vocab.encode(['a', 'c', 'b'])")
    call(vocab.decode, [4, 1, 5, 2], what="vocab.decode([4, 1, 5, 2])")
    call(stage.pad_batch, [[4, 5, 6], [7], [8, 9]], 0, what="pad_batch([[4, 5, 6], [7], [8, 9]], 0)")


def test_pad_batch_shape_dtype_and_values(stage):
    """[[4, 5, 6], [7], [8, 9]] with pad 0 -> [[4, 5, 6], [7, 0, 0], [8, 9, 0]]: padding at the END."""
    sequences = [[4, 5, 6], [7], [8, 9]]
    batch = stage.pad_batch(sequences, pad_id=0)
    assert_tensor(batch, "pad_batch([[4, 5, 6], [7], [8, 9]], 0)", shape=(3, 3), dtype=torch.long,
                  hint="One row per sequence, as long as the longest, dtype torch.long (ids index an embedding).")
    assert_close(batch, torch.tensor([[4, 5, 6], [7, 0, 0], [8, 9, 0]]), "pad_batch([[4, 5, 6], [7], [8, 9]], 0)",
                 atol=0, hint="Each row starts with its sequence and is filled with pad_id at the end "
                              "(padding at the end, not at the front).")


def test_pad_batch_uses_the_given_pad_id(stage):
    sequences = [[0, 1], [5, 0, 3, 3], [2]]
    batch = stage.pad_batch(sequences, pad_id=9)
    assert_tensor(batch, "pad_batch(..., pad_id=9)", shape=(3, 4), dtype=torch.long,
                  hint="(number of sequences, longest length), torch.long.")
    assert_close(batch, slow_pad(sequences, 9), "pad_batch([[0, 1], [5, 0, 3, 3], [2]], pad_id=9)", atol=0,
                 hint="Fill with pad_id, not with 0 (torch.full(..., pad_id), not torch.zeros); "
                      "a 0 inside a sequence is a real id and stays.")


def test_pad_batch_with_an_empty_sequence(stage):
    batch = stage.pad_batch([[3, 1, 4], [], [1]], pad_id=0)
    assert_tensor(batch, "pad_batch([[3, 1, 4], [], [1]], 0)", shape=(3, 3), dtype=torch.long,
                  hint="An empty sequence is a row of padding.")
    assert_close(batch, torch.tensor([[3, 1, 4], [0, 0, 0], [1, 0, 0]]), "pad_batch([[3, 1, 4], [], [1]], 0)",
                 atol=0, hint="An empty sequence becomes a whole row of pad_id; the others keep padding at the end.")


def test_pad_batch_of_one_sequence(stage):
    batch = stage.pad_batch([[7, 8, 9]], pad_id=0)
    assert_tensor(batch, "pad_batch([[7, 8, 9]], 0)", shape=(1, 3), dtype=torch.long,
                  hint="A batch of one is still 2-D: (1, S).")
    assert_close(batch, torch.tensor([[7, 8, 9]]), "pad_batch([[7, 8, 9]], 0)", atol=0,
                 hint="The longest sequence needs no padding.")


@pytest.mark.parametrize("lengths", [(1,), (5, 1, 3), (2, 2), (1, 6, 6, 2)])
def test_pad_batch_matches_a_slow_loop(stage, lengths):
    sequences = [torch.randint(1, 50, (n,)).tolist() for n in lengths]
    batch = stage.pad_batch(sequences, pad_id=0)
    expected = slow_pad(sequences, 0)
    assert_tensor(batch, f"pad_batch(lengths {lengths})", shape=expected.shape, dtype=torch.long,
                  hint="(B, longest length), torch.long.")
    assert_close(batch, expected, f"pad_batch(lengths {lengths})", atol=0,
                 hint="Row b is sequences[b] followed by pad_id (padding at the end, not at the front).")


def test_pad_batch_round_trips_through_decode(stage):
    vocab = stage.Vocab("a b c d".split())
    sentences = [["a", "b", "c"], ["d"], ["c", "a"]]
    batch = stage.pad_batch([vocab.encode(s, add_bos=True, add_eos=True) for s in sentences], vocab.pad_id)
    assert_tensor(batch, "pad_batch(encoded sentences)", shape=(3, 5), dtype=torch.long,
                  hint="bos + 3 tokens + eos = 5 for the longest.")
    for row, sentence in zip(batch, sentences):
        assert_equal(vocab.decode(row), sentence, f"decode(padded row for {sentence})",
                     hint="encode, pad_batch and decode together must give the sentence back.")
