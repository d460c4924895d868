"""Stage 13: the byte-level BPE tokenizer.

The oracles: hand-worked examples whose arithmetic is in each test's docstring (the pair counts,
the winning pair, the ids after each merge); Python's own str.encode / bytes.decode for bytes and
UTF-8; and a slow, obviously right BPE written in this file (SLOW_* below: recount every pair of
every chunk after every merge, apply the merges one after another) to check training and encoding
on a few kilobytes of the book. Nothing here calls your code to compute an expected value.

The chunk pattern is part of the contract (GPT2_PATTERN in the stub): it is repeated here so the
slow oracle cuts text exactly as the docstring says.

Reading a tokenizer.json is checked on a small file written by hand in this file (HAND_*: its
bytes in reverse order, three merges in both spellings, two overlapping special tokens), with
every expected id worked out in the test's docstring, and on variants of it with the quirks of
published files (QUIRK_*: a missing byte, merges listed out of id order or twice, NFC, an added
token that is not special). The project's own suite checks these files, and tokenizers trained on
the book, against Hugging Face's `tokenizers` (a test-only dependency that a learner does not
need): tests/project/test_bpe_oracle.py.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import regex

from checks import assert_equal, assert_int_list, call, fail

ROOT = Path(__file__).resolve().parent.parent
BOOK = (ROOT / "data" / "frankenstein.txt").read_text(encoding="utf-8")

SLOW_CHUNKS = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")  # GPT-2's

UNSEEN = [
    "",
    "hello",
    "“I am alone—” ’tis the ‘creature’…",  # curly quotes and dashes, as in the book
    "Café crème brûlée, naïve façade",  # two-byte characters
    "你好，世界。ロボットの夢",  # CJK: three bytes each, never in the book
    "🦙🔥 llamas 👩‍🔬 e\u0301",  # four-byte emoji, a zero-width joiner, a combining accent
    "  \n\n\tTabs,\r\nCRLF   and   runs of   spaces  \n",
    "\x00\x01 control \x7f bytes",
    "<pad> and <eos> as plain text",
]

# GPT-2's byte alphabet, spelled out: printable bytes stand for themselves, the 68 others (0-32,
# 127-160, 173) take the characters 256, 257, ... in increasing order
PRINTABLE = [*range(33, 127), *range(161, 173), *range(174, 256)]
BYTE_ALPHABET = {b: chr(b) for b in PRINTABLE} | {b: chr(256 + n) for n, b in enumerate(sorted(set(range(256)) - set(PRINTABLE)))}

HINT_ROUND_TRIP = ("decode must join the BYTES of all the ids and decode them as UTF-8 once, at the end: one "
                   "character can be split across tokens, so decoding token by token breaks it.")


def slow_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if ids[i : i + 2] == list(pair):
            out, i = out + [new_id], i + 2
        else:
            out, i = out + [ids[i]], i + 1
    return out


def overlapping_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A known mistake, for the messages: after a match step ONE id on, so the pair's second id is read again."""
    out, i = [], 0
    while i < len(ids):
        out.append(new_id if ids[i : i + 2] == list(pair) else ids[i])
        i += 1
    return out


def slow_train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The merges, recounting every pair of every chunk occurrence each time; ties to the smallest pair."""
    chunks = [list(chunk.encode("utf-8")) for chunk in SLOW_CHUNKS.findall(text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts.values())
        pair = min(p for p, c in counts.items() if c == best)
        merges.append(pair)
        chunks = [slow_merge(ids, pair, new_id) for ids in chunks]
    return merges


def slow_encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """Each chunk's bytes, then every merge in the order it was learned."""
    out = []
    for chunk in SLOW_CHUNKS.findall(text):
        ids = list(chunk.encode("utf-8"))
        for rank, pair in enumerate(merges):
            ids = slow_merge(ids, pair, 256 + rank)
        out += ids
    return out


def slow_encode_file(config: dict, text: str) -> list[int]:
    """How a GPT-2-style tokenizer.json encodes ``text``, spelled out (the project's suite checks this against
    Hugging Face's tokenizers): at each position the longest special token that starts there, else plain
    text; plain text cut into GPT-2 chunks, each chunk's bytes as byte-alphabet characters, then every merge
    of the file in its order, joining the two strings; finally each string's id in the vocabulary."""
    vocab, merges = config["model"]["vocab"], config["model"]["merges"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges]
    specials = {token["content"]: token["id"] for token in config["added_tokens"]}
    pieces, plain, i = [], "", 0  # pieces: plain strings and special ids, in order
    while i < len(text):
        special = max((s for s in specials if text.startswith(s, i)), key=len, default=None)
        if special is None:
            plain, i = plain + text[i], i + 1
        else:
            pieces, plain, i = pieces + [plain, specials[special]], "", i + len(special)
    out = []
    for piece in pieces + [plain]:
        if isinstance(piece, int):
            out.append(piece)
            continue
        for chunk in SLOW_CHUNKS.findall(piece):
            symbols = [BYTE_ALPHABET[byte] for byte in chunk.encode("utf-8")]
            for a, b in merges:
                j, merged = 0, []
                while j < len(symbols):
                    if symbols[j : j + 2] == [a, b]:
                        merged, j = merged + [a + b], j + 2
                    else:
                        merged, j = merged + [symbols[j]], j + 1
                symbols = merged
            out += [vocab[symbol] for symbol in symbols]
    return out


def assert_same_ids(got, expected: list[int], what: str, hint: str) -> None:
    """Two long id lists compared, reporting the first place they differ rather than both lists."""
    got = assert_int_list(got, what, hint="A list of ints.")
    if got != expected:
        at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        fail(f"{what}: {len(got)} ids, expected {len(expected)}; first difference at index {at}: "
             f"yours {got[max(at - 3, 0) : at + 5]}, expected {expected[max(at - 3, 0) : at + 5]} "
             f"(from index {max(at - 3, 0)})", hint)


def assert_merged(got, expected: list[int], ids: list[int], pair: tuple[int, int], new_id: int, hint: str) -> None:
    """merge_pair's result against the hand-worked one; a result that lets occurrences overlap is named as such."""
    __tracebackhide__ = True
    what = f"merge_pair({ids}, {pair}, {new_id})"
    got = assert_int_list(got, what, hint="Return a new list of ints.")
    if got != expected and got == overlapping_merge(ids, pair, new_id):
        fail(f"{what}: expected {expected!r}, got {got!r}",
             "a match consumes BOTH ids of the pair: step past the two of them, so occurrences cannot overlap.",
             "the second id of each matched pair is read again, as if occurrences could overlap")
    assert_equal(got, expected, what, hint=hint)


def pair_counts_after(text: str, merges: list[tuple[tuple[int, int], int]]) -> dict[tuple[int, int], int]:
    """The pair counts training sees after these merges: every pair inside every chunk occurrence of ``text``."""
    counts: dict[tuple[int, int], int] = {}
    for chunk in SLOW_CHUNKS.findall(text):
        ids = list(chunk.encode("utf-8"))
        for pair, new_id in merges:
            ids = slow_merge(ids, pair, new_id)
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def assert_merges(bpe, text: str, expected: list[tuple[tuple[int, int], int]], what: str, hint: str,
                  special_tokens=("<pad>", "<eos>")) -> None:
    """The merges learned from ``text``, in order; when they differ, say how: too many merges (vocab_size), or
    at the first wrong merge, whether the pair taken was tied with the right one (the tie rule) or rarer."""
    __tracebackhide__ = True
    got = merges_in_order(bpe)
    if got == expected:
        return
    message = f"{what}: expected {expected}, got {got}"
    extra = len(got) - len(expected)
    if extra > 0 and got[:len(expected)] == expected:
        if special_tokens and extra == len(special_tokens):
            fail(message, f"vocab_size counts every id of the finished vocabulary: the 256 bytes, the merges AND the "
                          f"{len(special_tokens)} special tokens, so fewer merges are learned than vocab_size - 256.",
                 f"the {len(expected)} expected merges, then {extra} more: one per special token")
        fail(message, hint, f"the {len(expected)} expected merges, then {extra} more")
    at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    if at is not None and got[at][1] == expected[at][1]:
        counts = pair_counts_after(text, expected[:at])
        mine, right = got[at][0], expected[at][0]
        if counts.get(mine, 0) == 0:
            fail(message, "pairs are counted inside each chunk only (the pieces the chunk pattern cuts the text into), "
                          "never across the boundary between two chunks.",
                 f"merge {at} (id {expected[at][1]}) took {mine}, which never occurs inside a chunk of the text")
        if counts[mine] == counts.get(right, 0):
            fail(message, "a tie goes to the smallest pair (lowest first id, then lowest second id), whatever order "
                          "the pairs were counted or stored in: the key of the max must rank the pairs themselves too.",
                 f"merge {at} (id {expected[at][1]}) took {mine}, which is tied with {right} in the chunks: both "
                 f"occur {counts[right]} times")
        fail(message, hint, f"merge {at} (id {expected[at][1]}) took {mine}, which occurs {counts.get(mine, 0)} "
                            f"times in the chunks, rather than {right}, which occurs {counts.get(right, 0)} times")
    fail(message, hint)


def merges_in_order(bpe) -> list[tuple[tuple[int, int], int]]:
    merges = bpe.merges
    if type(merges) is not dict:
        fail(f"bpe.merges: expected a dict {{(a, b): new_id}}, got {type(merges).__name__}",
             "merges maps each merged pair to its new id, in the order the merges were made.")
    return [(tuple(pair), new_id) for pair, new_id in merges.items()]


def trained(stage, text: str, vocab_size: int, special_tokens=("<pad>", "<eos>")):
    bpe = stage.ByteBPE()
    result = bpe.train(text, vocab_size, special_tokens=special_tokens)
    if result is not None:
        fail(f"ByteBPE.train returned {type(result).__name__}; expected None (it trains the tokenizer in place)",
             "train stores merges, vocab and special tokens on self and returns nothing.")
    return bpe


_book_tokenizers: dict = {}


def book_tokenizer(stage):
    """A tokenizer trained on the whole book to vocab_size 512, trained once per stage module."""
    if stage not in _book_tokenizers:
        _book_tokenizers[stage] = trained(stage, BOOK, 512)
    return _book_tokenizers[stage]


# ---------------------------------------------------------------------------------------------
# get_pair_counts, merge_pair and apply_merges


def test_get_pair_counts_on_small_lists(stage):
    """[1, 2, 3, 1, 2]: neighbours (1,2) (2,3) (3,1) (1,2) -> (1, 2) twice, the others once."""
    got = stage.get_pair_counts([1, 2, 3, 1, 2])
    if type(got) is not dict:
        fail(f"get_pair_counts: expected a dict, got {type(got).__name__}", "Return {(a, b): count}.")
    assert_equal(got, {(1, 2): 2, (2, 3): 1, (3, 1): 1}, "get_pair_counts([1, 2, 3, 1, 2])",
                 hint="Walk zip(ids, ids[1:]): every pair of NEIGHBOURS, overlapping, counted.")
    assert_equal(stage.get_pair_counts([7, 7, 7]), {(7, 7): 2}, "get_pair_counts([7, 7, 7])",
                 hint="Counting overlaps: positions (0, 1) and (1, 2) are both the pair (7, 7).")
    assert_equal(stage.get_pair_counts([5]), {}, "get_pair_counts([5])", hint="One id has no neighbour: no pairs.")
    assert_equal(stage.get_pair_counts([]), {}, "get_pair_counts([])", hint="No ids, no pairs.")


def test_get_pair_counts_adds_into_the_given_dict_with_a_weight(stage):
    """counts {(1, 2): 5}; [1, 2, 1, 2] has (1,2) twice and (2,1) once; weight 3: (1, 2) -> 5 + 2*3 = 11, (2, 1) -> 3."""
    counts = {(1, 2): 5}
    got = stage.get_pair_counts([1, 2, 1, 2], counts, weight=3)
    if got is not counts:
        fail("get_pair_counts(ids, counts): expected the same dict object back, updated in place",
             "With counts given, add to it and return it: training counts many chunks into one dict.")
    assert_equal(counts, {(1, 2): 11, (2, 1): 3}, "counts after get_pair_counts([1, 2, 1, 2], {(1, 2): 5}, weight=3)",
                 hint="Each occurrence adds weight (how often the chunk occurs in the text) to what is already there.")


def test_merge_pair_on_small_lists(stage):
    """[5, 6, 6, 7, 9, 1] with (6, 7) -> 99: only the 6 followed by 7 goes: [5, 6, 99, 9, 1]."""
    ids = [5, 6, 6, 7, 9, 1]
    got = stage.merge_pair(ids, (6, 7), 99)
    assert_merged(got, [5, 6, 99, 9, 1], [5, 6, 6, 7, 9, 1], (6, 7), 99,
                  hint="Replace the two neighbours (6, 7) by 99; a 6 that is not followed by 7 stays.")
    assert_equal(ids, [5, 6, 6, 7, 9, 1], "the list passed to merge_pair, afterwards",
                 hint="merge_pair must not modify its input: build a new list.")
    assert_equal(stage.merge_pair([1, 2, 3, 1, 2], (1, 2), 256), [256, 3, 256], "merge_pair([1, 2, 3, 1, 2], (1, 2), 256)",
                 hint="Every occurrence is replaced, the last one too (check i + 1 < len(ids), not i + 1 < len(ids) - 1).")
    assert_equal(stage.merge_pair([4, 5], (5, 4), 256), [4, 5], "merge_pair([4, 5], (5, 4), 256)",
                 hint="The order inside a pair matters: (5, 4) does not occur in [4, 5].")


def test_merge_pair_occurrences_do_not_overlap(stage):
    """[7, 7, 7] with (7, 7) -> 256: the first two are merged and consumed, the third 7 is left: [256, 7]."""
    for ids, expected in [([7, 7, 7], [256, 7]), ([7, 7, 7, 7], [256, 256])]:
        assert_merged(stage.merge_pair(ids, (7, 7), 256), expected, ids, (7, 7), 256,
                      hint="Scan left to right; after a match skip BOTH ids, so occurrences do not overlap.")


HINT_APPLY = ("Take the present pair of LOWEST rank (ranks[pair]: merges apply in the order they were learned or "
              "listed, whatever id they make), at its leftmost place only; merge that one place, then look again.")


def test_apply_merges_takes_the_lowest_rank_one_place_at_a_time(stage):
    """Each case: ids, ranks {pair: rank}, merges {pair: new id}, the ids after each merge.
        abcab  [97, 98, 99, 97, 98], (97, 98) -> 256 rank 0, (256, 99) -> 257 rank 1:
               (97, 98) at 0 -> [256, 99, 97, 98]; at 3 -> [256, 99, 256]; (256, 99) -> [257, 256]
        ranks, not ids  [1, 2, 5], (2, 5) -> 6 rank 0, (1, 2) -> 3 rank 1: (2, 5) first -> [1, 6]; no merge
               joins (1, 6). By the lowest new id (3 < 6): [3, 5].
        one place  [1, 2, 1, 2], (3, 1) -> 4 rank 0, (1, 2) -> 3 rank 1: only (1, 2) is present; its leftmost
               place -> [3, 1, 2]; now (3, 1) ranks earlier -> [4, 2]. Every (1, 2) at once: [3, 3].
        leftmost  [7, 7, 7], (7, 7) -> 8: the first place -> [8, 7], not [7, 8].
        nothing to merge: [5] and [] come back as they are."""
    abcab = ({(97, 98): 0, (256, 99): 1}, {(97, 98): 256, (256, 99): 257})
    by_rank = ({(2, 5): 0, (1, 2): 1}, {(2, 5): 6, (1, 2): 3})
    one_place = ({(3, 1): 0, (1, 2): 1}, {(3, 1): 4, (1, 2): 3})
    sevens = ({(7, 7): 0}, {(7, 7): 8})
    suspects = {
        (1, 2, 5): ([3, 5], "(1, 2), rank 1, was merged before (2, 5), rank 0: the merges were taken by the id "
                            "they make (3 < 6) or the highest rank first, not by their place in the ranks"),
        (1, 2, 1, 2): ([3, 3], "every place of (1, 2) was merged at once: merge one place, then look again, "
                               "since the (3, 1) that the first merge makes ranks earlier than (1, 2)"),
        (7, 7, 7): ([7, 8], "the rightmost place of (7, 7) was merged first, not the leftmost"),
    }
    for ids, (ranks, merges), expected in [([97, 98, 99, 97, 98], abcab, [257, 256]), ([1, 2, 5], by_rank, [1, 6]),
                                           ([1, 2, 1, 2], one_place, [4, 2]), ([7, 7, 7], sevens, [8, 7]),
                                           ([5], sevens, [5]), ([], sevens, [])]:
        what = f"apply_merges({ids}, ranks={ranks}, merges={merges})"
        got = assert_int_list(call(stage.apply_merges, ids, ranks, merges, what=what), what,
                              hint="Return a new list of ints.")
        wrong, observed = suspects.get(tuple(ids), (None, ""))
        if got == wrong:
            fail(f"{what}: expected {expected}, got {got}", HINT_APPLY, observed)
        assert_equal(got, expected, what, hint=HINT_APPLY)


# ---------------------------------------------------------------------------------------------
# training on hand-worked examples


def test_training_on_the_wikipedia_example(stage):
    """"aaabdaaabac", a=97 b=98 c=99 d=100, vocab_size 256 + 3 merges + 2 specials = 261.

    pairs (97,97):4 (97,98):2 (98,100):1 (100,97):1 (98,97):1 (97,99):1  -> (97, 97) becomes 256
    ids [256,97,98,100,256,97,98,97,99]; pairs (256,97):2 (97,98):2 ... a tie at 2: the smaller
    pair wins -> (97, 98) becomes 257; ids [256,257,100,256,257,97,99] -> (256, 257):2 becomes 258;
    ids [258,100,258,97,99] ("XdXac" on Wikipedia). Specials: <pad> 259, <eos> 260.
    """
    bpe = trained(stage, "aaabdaaabac", 261)
    assert_merges(bpe, "aaabdaaabac", [((97, 97), 256), ((97, 98), 257), ((256, 257), 258)],
                  "the merges learned from 'aaabdaaabac', in order",
                  hint="Most frequent pair first; on a tie the smallest pair (lowest first id, then second id); "
                       "each new pair gets the next id from 256 on.")
    assert_equal(bpe.ranks, {(97, 97): 0, (97, 98): 1, (256, 257): 2}, "ranks after training on 'aaabdaaabac'",
                 hint="train records each merge's rank too: its place in the order learned, 0 for the first "
                      "(ranks[pair] = new id - 256). encode applies the present pair of lowest rank first.")
    assert_equal(bpe.encode("aaabdaaabac"), [258, 100, 258, 97, 99], "encode('aaabdaaabac')",
                 hint="Encoding replays the merges in the order they were learned.")
    assert_equal((bpe.vocab_size, bpe.pad_id, bpe.eos_id), (261, 259, 260), "(vocab_size, pad_id, eos_id)",
                 hint="Special tokens take the last ids, after the merges, in the order given.")


def test_ties_go_to_the_smallest_pair(stage):
    """"bcab": pairs (98,99):1 (99,97):1 (97,98):1, all tied. The smallest is (97, 98) ("ab"),
    though (98, 99) is seen first and (99, 97) is the largest."""
    bpe = trained(stage, "bcab", 257, special_tokens=())
    assert_merges(bpe, "bcab", [((97, 98), 256)], "the merge learned from 'bcab'", special_tokens=(),
                  hint="A tie goes to the smallest pair, whatever order the pairs were counted in: a max over the "
                       "counts alone returns whichever tied pair the dict holds first.")


def test_pairs_never_cross_a_chunk_boundary_and_training_stops_when_nothing_is_left(stage):
    """"hi hi hi" is the chunks "hi", " hi", " hi".

    pairs (104,105):3 (32,104):2 -> "hi" becomes 256; chunks [256] [32,256] [32,256]: (32,256):2
    -> " hi" becomes 257; chunks [256] [257] [257] have no pairs left, so training stops after 2
    merges although vocab_size 256 + 5 + 2 was asked: vocab_size is 258 + 2 = 260.
    Counting over the whole byte string would have merged (105, 32), "i ", across two chunks.
    """
    bpe = trained(stage, "hi hi hi", 263)
    assert_merges(bpe, "hi hi hi", [((104, 105), 256), ((32, 256), 257)], "the merges learned from 'hi hi hi'",
                  hint="Count pairs inside each chunk of the chunk pattern only, never across the chunk boundary "
                       "(a word keeps its leading space, never a trailing one).")
    assert_equal((bpe.vocab_size, bpe.pad_id, bpe.eos_id), (260, 258, 259), "(vocab_size, pad_id, eos_id) after stopping early",
                 hint="Stop when no chunk has two ids left; the specials then follow the last merge.")
    assert_equal(bpe.encode("hi hi"), [256, 257], "encode('hi hi')", hint="'hi' is 256, ' hi' is 257.")


def test_chunk_frequencies_weight_the_pair_counts(stage):
    """"yzyz ab ab ab" is the chunks "yzyz" once and " ab" three times.

    Counted with frequencies: (121,122):2 (122,121):1 (32,97):3 (97,98):3 -> tie at 3, smallest
    (32, 97) becomes 256. Counting each different chunk once would wrongly pick (121, 122) (2 > 1).
    """
    bpe = trained(stage, "yzyz ab ab ab", 257, special_tokens=())
    assert_merges(bpe, "yzyz ab ab ab", [((32, 97), 256)], "the merge learned from 'yzyz ab ab ab'", special_tokens=(),
                   hint="Each different chunk's pairs count as many times as the chunk occurs in the text: "
                       "weight them by how often the chunk occurs.")


def test_encode_replays_merges_in_the_order_learned(stage):
    """Train on "abab.bc" (chunks "abab", ".", "bc"): (97,98):2 -> "ab" = 256; then (256,256):1 and
    (98,99):1 tie -> (98, 99) = 257 ("bc"). vocab_size 258, no specials.

    Encode "abcbcbc" = a b c b c b c: merge 256 first: [256, c, b, c, b, c]; then 257 (b c):
    [256, 99, 257, 257]. Merging the pair most frequent in "abcbcbc" first ((98, 99): 3) would
    give [97, 257, 257, 257] instead.
    """
    bpe = trained(stage, "abab.bc", 258, special_tokens=())
    assert_merges(bpe, "abab.bc", [((97, 98), 256), ((98, 99), 257)], "the merges learned from 'abab.bc'",
                  special_tokens=(), hint="Chunks 'abab', '.', 'bc'; the tie at count 1 goes to the smaller pair (98, 99).")
    assert_equal(bpe.encode("abcbcbc"), [256, 99, 257, 257], "encode('abcbcbc')",
                 hint="Apply merges in the order they were learned (lowest rank first), not the pair most "
                      "frequent in the text being encoded.")


# ---------------------------------------------------------------------------------------------
# the slow oracle


def test_training_and_encoding_match_a_slow_bpe(stage):
    """On 3 000 characters of the book with 40 merges, against slow_train / slow_encode above."""
    text = BOOK[:3000]
    merges = slow_train(text, 40)
    bpe = trained(stage, text, 256 + 40, special_tokens=())
    assert_merges(bpe, text, [(pair, 256 + rank) for rank, pair in enumerate(merges)],
                  "the 40 merges learned from the first 3 000 characters of the book", special_tokens=(),
                  hint="Each step: count pairs inside chunks (weighted by chunk frequency), take the most frequent "
                       "(ties: smallest), merge it everywhere, repeat.")
    held_out = BOOK[50_000:52_000] + " 🦙 naïve"
    assert_same_ids(bpe.encode(held_out), slow_encode(held_out, merges), "encode(2 000 other characters of the book)",
                 hint="Encode each chunk separately: its UTF-8 bytes, then the merges in the order they were learned.")


# ---------------------------------------------------------------------------------------------
# round trip and special tokens


def test_untrained_tokenizer_is_plain_utf8_bytes(stage):
    bpe = stage.ByteBPE()
    text = "héllo — 🦙"
    assert_equal(bpe.vocab_size, 256, "ByteBPE().vocab_size", hint="An untrained tokenizer has the 256 byte ids only.")
    ids = assert_int_list(bpe.encode(text), f"ByteBPE().encode({text!r})", hint="encode returns a list of ints.")
    assert_equal(ids, list(text.encode("utf-8")), f"ByteBPE().encode({text!r})",
                 hint="Without merges, the ids are the UTF-8 bytes of the text: list(text.encode('utf-8')).")
    assert_equal(bpe.decode(ids), text, "ByteBPE().decode(the bytes)", hint=HINT_ROUND_TRIP)


def test_round_trip_is_exact_for_text_never_seen_in_training(stage):
    bpe = book_tokenizer(stage)
    for text in UNSEEN:
        ids = assert_int_list(bpe.encode(text), f"encode({text!r})", hint="encode returns a list of ints.")
        out_of_range = [i for i in ids if not 0 <= i < bpe.vocab_size]
        if out_of_range:
            fail(f"encode({text!r}) produced ids {out_of_range[:5]} outside [0, {bpe.vocab_size})",
                 "Every id is a byte (0-255), a merge, or a special token.")
        assert_equal(bpe.decode(ids), text, f"decode(encode({text!r}))", hint=HINT_ROUND_TRIP)


def test_invalid_utf8_decodes_with_replacement_characters(stage):
    bpe = stage.ByteBPE()
    for ids in ([0xE2, 0x80], [104, 105, 0xFF], [0xF0, 0x9F, 0xA6]):
        expected = bytes(ids).decode("utf-8", errors="replace")
        assert_equal(bpe.decode(ids), expected, f"decode({ids}) (not valid UTF-8)",
                     hint="Join the bytes and decode once with errors='replace': invalid sequences become U+FFFD, "
                          "never an exception and never dropped.")


def test_special_tokens_take_the_last_ids_in_the_order_given(stage):
    bpe = trained(stage, BOOK[:5000], 300)
    assert_equal((bpe.vocab_size, bpe.pad_id, bpe.eos_id), (300, 298, 299), "(vocab_size, pad_id, eos_id), vocab_size 300",
                 hint="Bytes 0-255, then the merges, then the special tokens LAST: pad = V - 2, eos = V - 1.")
    merge_ids = sorted(new_id for _, new_id in merges_in_order(bpe))
    assert_equal(merge_ids, list(range(256, 298)), "the ids of the merges",
                 hint="The merges take 256, 257, ... up to V - len(specials) - 1; the specials come after them.")
    three = trained(stage, BOOK[:5000], 300, special_tokens=("<pad>", "<eos>", "<bos>"))
    assert_equal(three.special_tokens, {"<pad>": 297, "<eos>": 298, "<bos>": 299}, "special_tokens with three of them",
                 hint="Each special token gets the next id after the merges, in the order given.")


def test_special_tokens_encode_to_one_id_only_when_allowed(stage):
    bpe = trained(stage, BOOK[:5000], 300)
    text = "It was night.<eos><pad>"
    ids = bpe.encode(text, allowed_special=True)
    assert_int_list(ids, f"encode({text!r}, allowed_special=True)", hint="encode returns a list of ints.")
    plain = bpe.encode("It was night.")
    assert_equal(ids, plain + [bpe.eos_id, bpe.pad_id], f"encode({text!r}, allowed_special=True)",
                 hint="With allowed_special=True, split the text at the special tokens (re.split with a capturing "
                      "group keeps them); each becomes its one id, the rest is encoded as usual.")
    assert_equal(bpe.decode(ids), text, "decode of it", hint="A special token's id decodes to its string.")
    as_text = bpe.encode("<eos>")
    if bpe.eos_id in as_text or bpe.pad_id in as_text:
        fail(f"encode('<eos>') without allowed_special gave {as_text}, which holds a special id",
             "With allowed_special=False (the default), '<eos>' in the text is ordinary text: encode its bytes.")
    assert_equal(bpe.decode(as_text), "<eos>", "decode(encode('<eos>'))", hint=HINT_ROUND_TRIP)


# ---------------------------------------------------------------------------------------------
# size, determinism, and the whole book


def test_vocab_size_is_respected_and_too_small_is_an_error(stage):
    bpe = trained(stage, BOOK[:20_000], 280)
    assert_equal(bpe.vocab_size, 280, "vocab_size after train(text, 280)",
                 hint="vocab_size counts everything: 256 bytes + merges + special tokens, so make "
                      "280 - 256 - 2 = 22 merges, not 280 - 256.")
    assert_equal(len(bpe.merges), 22, "len(merges) after train(text, 280)", hint="280 - 256 - 2 special tokens = 22 merges.")
    with pytest.raises(ValueError):
        stage.ByteBPE().train("some text", 257)
        fail("train(text, vocab_size=257) did not raise ValueError", "256 bytes + 2 special tokens need vocab_size >= 258.")


def test_training_is_deterministic_and_retraining_starts_afresh(stage):
    text = BOOK[10_000:30_000]
    first = merges_in_order(trained(stage, text, 320))
    second = merges_in_order(trained(stage, text, 320))
    assert_equal(second, first, "merges from a second training on the same text",
                 hint="Same text, same merges: no randomness, no set() iteration order, a tie rule that ignores dict order.")
    bpe = trained(stage, BOOK[:2000], 300)
    bpe.train(text, 320)
    assert_equal(merges_in_order(bpe), first, "merges after training an already-trained tokenizer again",
                 hint="train starts from bytes only: reset merges, vocab and special tokens first.")


def test_no_learned_token_spans_two_chunks(stage):
    bpe = book_tokenizer(stage)
    bad = []
    for (a, b), new_id in merges_in_order(bpe):
        piece = bpe.decode([new_id]).encode("utf-8", errors="replace")
        if not piece.isspace() and b" " in piece[1:]:
            bad.append(bpe.decode([new_id]))
    if bad:
        fail(f"{len(bad)} learned token(s) have a space after their first character: {bad[:5]}",
             "Pairs are counted inside chunks only (a word keeps one LEADING space): cut the text with "
             "CHUNK_PATTERN before counting, and never merge across chunk boundaries.")


def test_book_trains_to_512_and_compresses_better_than_bytes(stage):
    """Measured on the reference: 421 530 bytes -> 195 876 tokens, 2.15 bytes per token (GPT-2 pattern)."""
    bpe = book_tokenizer(stage)
    assert_equal((bpe.vocab_size, len(bpe.merges)), (512, 254), "(vocab_size, len(merges)) on the book",
                 hint="512 = 256 bytes + 254 merges + 2 special tokens.")
    ids = bpe.encode(BOOK)
    ratio = len(BOOK.encode("utf-8")) / max(len(ids), 1)
    if ratio < 2.0:
        fail(f"the book encodes to {len(ids)} tokens, {ratio:.2f} bytes per token; expected more than 2.0",
             "With 254 merges common words become single tokens: are the merges applied in the order learned, "
             "and were pairs counted with each chunk's frequency?")
    if bpe.decode(ids) != BOOK:
        fail("decode(encode(book)) is not the book", HINT_ROUND_TRIP)


def test_longest_special_token_is_matched_first(stage):
    """Specials "<|endoftext|>" then "<|endoftext|><|endoftext|>" (the longer registered SECOND).

    Trained on "ab" with vocab_size 256 + 1 merge + 2 = 259: "ab" is 256, the short special 257,
    the long one 258. Three in a row: the longest match at the start is the double one (258),
    then the single (257): [258, 257]. Trying the specials in the order given finds the short one
    first every time and never produces 258.
    """
    short, double = "<|endoftext|>", "<|endoftext|><|endoftext|>"
    bpe = trained(stage, "ab", 259, special_tokens=(short, double))
    assert_equal(bpe.special_tokens, {short: 257, double: 258}, "special_tokens",
                 hint="Each special token gets the next id after the merges, in the order given.")
    text = short * 3 + "ab"
    assert_equal(bpe.encode(text, allowed_special=True), [258, 257, 256], f"encode({text!r}, allowed_special=True)",
                 hint="Where two special tokens start at the same place, the LONGEST wins: build the alternation "
                      "from the specials sorted by length, longest first (a regex takes the first alternative "
                      "that matches, not the longest).")


# ---------------------------------------------------------------------------------------------
# GPT-2's chunk pattern


def test_chunks_follow_gpt2_pattern(stage):
    """GPT-2's pattern, alternative by alternative (the first that matches wins, left to right):

    "I'll"      -> "I", "'ll"             a contraction is its own chunk
    " don't"    -> " don", "'t"
    " 1999th"   -> " 1999", "th"          digits and letters never share a chunk
    " naïve"    -> " naïve"               \\p{L}: a letter in any script, accents included
    "!!"        -> "!!"                   a run of other symbols
    "  ok"      -> " ", " ok"             whitespace before text keeps its last space for the word
    "\\n\\n\\t"   -> "\\n\\n\\t"             whitespace at the end is one run
    """
    bpe = stage.ByteBPE()
    text = "I'll don't 1999th naïve!!  ok\n\n\t"
    expected = ["I", "'ll", " don", "'t", " 1999", "th", " naïve", "!!", " ", " ok", "\n\n\t"]
    assert_equal(bpe.chunks(text), expected, f"ByteBPE().chunks({text!r})",
                 hint="Cut with GPT2_PATTERN (regex.compile(GPT2_PATTERN).findall(text)), not the simple pattern: "
                      "contractions, letters (\\p{L}+) and digits (\\p{N}+) are separate alternatives.")


def test_the_chunk_pattern_is_a_choice_of_training(stage):
    """train(..., pattern=SIMPLE_PATTERN) cuts "it's 42nd" as "it", "'", "s", " 42nd" (\\w+ takes digits
    and letters together), GPT-2's as "it", "'s", " 42", "nd". One merge from "42nd 42nd":
    SIMPLE: chunks "42nd", " 42nd": pairs (52,50):2 (50,110):2 (110,100):2 (32,52):1 -> a tie at 2,
    the smallest pair (50, 110) ("2n") becomes 256.
    GPT-2: chunks "42", "nd", " 42", "nd": (52,50):2 (110,100):2 (32,52):1 -> (52, 50) ("42") is 256.
    """
    simple = stage.ByteBPE()
    simple.train("42nd 42nd", 257, special_tokens=(), pattern=stage.SIMPLE_PATTERN)
    assert_equal(merges_in_order(simple), [((50, 110), 256)], "the merge learned from '42nd 42nd' with SIMPLE_PATTERN",
                 hint="train(text, vocab_size, special_tokens, pattern) cuts the text with the pattern it is given.")
    assert_equal(simple.chunks("it's 42nd"), ["it", "'", "s", " 42nd"], "chunks('it's 42nd') after training with SIMPLE_PATTERN",
                 hint="The tokenizer keeps the pattern it was trained with and cuts with it when encoding.")
    gpt2 = trained(stage, "42nd 42nd", 257, special_tokens=())
    assert_equal(merges_in_order(gpt2), [((52, 50), 256)], "the merge learned from '42nd 42nd' with GPT2_PATTERN (the default)",
                 hint="The default pattern is GPT-2's: digits and letters are different chunks, so '2n' never forms.")


# ---------------------------------------------------------------------------------------------
# reading a tokenizer.json


def test_bytes_to_unicode_is_gpt2s_byte_alphabet(stage):
    """Printable bytes stand for themselves ("A" is "A"); the 68 others take chr(256), chr(257), ... in
    order: byte 0 -> "Ā" (256), 10 -> "Ċ" (266), 32 (space) -> "Ġ" (288), 127 -> "ġ" (289), 173 -> "Ń" (323)."""
    table = stage.bytes_to_unicode()
    if type(table) is not dict or sorted(table) != list(range(256)):
        fail(f"bytes_to_unicode(): expected a dict with the keys 0..255, got {type(table).__name__} "
             f"with {len(table) if hasattr(table, '__len__') else '?'} entries",
             "Map every byte value 0..255 to one character.")
    for byte, char in [(65, "A"), (0, "Ā"), (10, "Ċ"), (32, "Ġ"), (127, "ġ"), (173, "Ń"), (255, "ÿ")]:
        assert_equal(table[byte], char, f"bytes_to_unicode()[{byte}]",
                     hint="Bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for themselves; the other 68, in increasing "
                          "order, take chr(256), chr(257), ... (so the space, byte 32, is the 33rd: chr(288), 'Ġ').")
    assert_equal(table, BYTE_ALPHABET, "bytes_to_unicode() (all 256 entries)", hint="See the rule above.")


HAND_SHORT, HAND_DOUBLE = "<|endoftext|>", "<|endoftext|><|endoftext|>"
HAND_MERGES = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["e", "e"]]  # as newer files write them; GPT-2's: "Ġ t"
HAND_MERGED = {"Ġt": 258, "he": 259, "Ġthe": 260, "ee": 261}


def hand_byte_id(byte: int) -> int:
    """In the hand-written file the byte tokens come in REVERSE order after the two specials: byte b is 257 - b."""
    return 2 + (255 - byte)


def hand_tokenizer_json(spelling: str = "pairs", **changes) -> dict:
    """A tiny byte-level BPE as Hugging Face saves it: ids 0-1 specials, 2-257 bytes (reversed), 258-261 merges.

    spelling "pairs" writes each merge as [a, b] (newer files), "strings" as "a b" (GPT-2's files);
    changes replace top-level keys, or model keys when prefixed "model_".
    """
    vocab = {HAND_SHORT: 0, HAND_DOUBLE: 1} | {BYTE_ALPHABET[b]: hand_byte_id(b) for b in range(256)} | HAND_MERGED
    config = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, content in enumerate((HAND_SHORT, HAND_DOUBLE))],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": HAND_MERGES},
    }
    for key, value in changes.items():
        target, name = (config["model"], key.removeprefix("model_")) if key.startswith("model_") else (config, key)
        target[name] = value
    if spelling == "strings":
        config["model"]["merges"] = [" ".join(pair) for pair in config["model"]["merges"]]
    return config


def load_hand(stage, tmp_path, spelling: str = "pairs", **changes):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(hand_tokenizer_json(spelling, **changes), ensure_ascii=False), encoding="utf-8")
    return stage.ByteBPE.from_tokenizer_json(path)


HAND_CASES = [
    # text, expected ids, what the docstring of the test works out
    ("a", [hand_byte_id(97)], "byte 97 is id 257 - 97 = 160 in this file, not 97"),
    ("é", [hand_byte_id(195), hand_byte_id(169)], "é is the bytes 195 169: ids 62 88"),
    (" the", [260], "Ġ t h e: merge 258 (Ġ t), then 259 (h e), then 260 (Ġt he): one token"),
    ("thee", [hand_byte_id(116), 259, hand_byte_id(101)], "t h e e: (h e) 259 before (e e) 261: t he e; no merge left"),
    ("eee", [261, hand_byte_id(101)], "e e e: (e e) 261 from the left: ee e"),
    (" the the", [260, 260], "chunks ' the' ' the'"),
    (HAND_SHORT * 3, [1, 0], "the longest special first: double, then single"),
]


@pytest.mark.parametrize("spelling", ["pairs", "strings"])
def test_from_tokenizer_json_reads_vocabulary_merges_and_specials(stage, tmp_path, spelling):
    """The hand-written file: specials 0 "<|endoftext|>" and 1 "<|endoftext|><|endoftext|>"; the byte
    tokens in REVERSE order, byte b at id 257 - b ("a" = 97 is 160, " " = 32 is "Ġ" at 225); merges
    258 Ġ t -> "Ġt", 259 h e -> "he", 260 Ġt he -> "Ġthe", 261 e e -> "ee", written ["Ġ", "t"] in
    newer files ("pairs") and "Ġ t" in GPT-2's ("strings").

    " the"  = Ġ t h e = [225, 141, 153, 156]: merge 258 first -> [258, 153, 156]; 259 -> [258, 259];
              260 -> [260].
    "thee"  = t h e e: (h, e) is 259, (e, e) 261: 259 first -> [141, 259, 156], nothing left.
    "eee"   = e e e -> (e, e) from the left: [261, 156].
    """
    bpe = load_hand(stage, tmp_path, spelling)
    if not isinstance(bpe, stage.ByteBPE):
        fail(f"ByteBPE.from_tokenizer_json returned {type(bpe).__name__}; expected a ByteBPE",
             "It is a classmethod that builds and returns a new tokenizer (cls()).")
    assert_equal(bpe.special_tokens, {HAND_SHORT: 0, HAND_DOUBLE: 1}, "special_tokens read from the file",
                 hint="Every added token with \"special\": true goes into special_tokens under its content.")
    assert_equal(bpe.vocab_size, 262, "vocab_size read from the file", hint="Ids 0..261: 2 specials, 256 bytes, 4 merges.")
    assert_equal(bpe.vocab.get(225), b" ", "vocab[225] (the token 'Ġ')",
                 hint="A token is written through bytes_to_unicode: map each character back to its byte ('Ġ' is 32).")
    assert_equal(bpe.vocab.get(260), b" the", "vocab[260] (the token 'Ġthe')", hint="'Ġthe' is the bytes b' the'.")
    assert_equal(bpe.vocab.get(1), HAND_DOUBLE.encode(), "vocab[1] (a special token)",
                 hint="A special token is written as itself: its bytes are its content in UTF-8.")
    assert_equal(merges_in_order(bpe), [((225, 141), 258), ((153, 156), 259), ((258, 259), 260), ((156, 156), 261)],
                 f"merges read from the file (written as {spelling})",
                 hint="Each merge is 'a b' (split at the space) or [a, b]; the pair is (id of a, id of b) and the "
                      "new id is the id of the token a + b, in the file's order.")
    for text, expected, why in HAND_CASES:
        got = assert_int_list(bpe.encode(text, allowed_special=True), f"encode({text!r}, allowed_special=True)",
                              hint="encode returns a list of ints.")
        assert_equal(got, expected, f"encode({text!r}, allowed_special=True) with the hand-written tokenizer.json ({why})",
                     hint="Bytes become the FILE's ids (byte_ids, not the byte values); then the present pair of "
                          "lowest rank (its place in the file's merges), repeatedly; special tokens longest first.")
        assert_equal(bpe.decode(got), text, f"decode(encode({text!r}))", hint=HINT_ROUND_TRIP)


def test_from_tokenizer_json_uses_the_files_chunk_pattern(stage, tmp_path):
    """A fifth merge "3 4" -> "34" (id 262). GPT-2's pattern keeps "12345" one chunk: 1 2 34 5.
    Llama 3's (a Split before ByteLevel) cuts digits in threes, "123" "45": the pair 3 4 straddles the
    cut, so no merge: five byte ids. SmolLM's Digits step cuts every digit alone: five byte ids too,
    and "x 12" is "x", " ", "1", "2" (the space cannot join a digit)."""
    merges = HAND_MERGES + [["3", "4"]]
    vocab = hand_tokenizer_json()["model"]["vocab"] | {"34": 262}
    digits = [hand_byte_id(ord(c)) for c in "12345"]
    llama3 = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    smollm = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    for name, pre, expected in [("GPT-2", None, digits[:2] + [262, digits[4]]), ("Llama 3", llama3, digits),
                                ("SmolLM", smollm, digits)]:
        changes = {"model_merges": merges, "model_vocab": vocab} | ({"pre_tokenizer": pre} if pre else {})
        bpe = load_hand(stage, tmp_path, **changes)
        assert_equal(bpe.encode("12345"), expected, f"encode('12345') with a {name}-style pre_tokenizer",
                     hint="Read the chunk pattern from the file's pre_tokenizer (supported_patterns gives it) and cut "
                          "with it: merges never cross a chunk boundary.")
    assert_equal(bpe.chunks("x 12"), ["x", " ", "1", "2"], "chunks('x 12') with SmolLM's pre_tokenizer",
                 hint="With two patterns, cut with the first, then cut every piece with the second.")


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_ignore_merges_takes_a_known_chunk_whole(stage, tmp_path):
    """Llama 3 files say "ignore_merges": true: a chunk whose bytes are a token is that token. Add the
    token "eee" (262), which no merge makes: with the flag "eee" is [262]; without it [261, e]."""
    vocab = hand_tokenizer_json()["model"]["vocab"] | {"eee": 262}
    plain = load_hand(stage, tmp_path, model_vocab=vocab)
    assert_equal(plain.encode("eee"), [261, hand_byte_id(101)], "encode('eee') without ignore_merges",
                 hint="Without the flag the merges decide: (e e) from the left.")
    whole = load_hand(stage, tmp_path, model_vocab=vocab, model_ignore_merges=True)
    assert_equal(whole.encode("eee"), [262], "encode('eee') with \"ignore_merges\": true",
                 hint="With ignore_merges a chunk whose bytes are a (non-special) token becomes that token directly "
                      "(whole_tokens), before any merge.")
    assert_equal(whole.encode(" thee"), [260, hand_byte_id(101)], "encode(' thee') with ignore_merges",
                 hint="A chunk that is not a token is merged as usual: 258 (Ġ t), 259 (h e), 260 (Ġt he), then e.")


# What published files do that a freshly trained tokenizer does not. Each file below is the hand-written
# one changed a little; the project's suite checks every expected id here against Hugging Face's tokenizers.


def holed_tokenizer_json() -> dict:
    """SmolLM2's hole: no token for byte 4 (written 'Ą'), and a fifth merge ! ! -> "!!" (262)."""
    config = hand_tokenizer_json(model_merges=HAND_MERGES + [["!", "!"]])
    del config["model"]["vocab"][BYTE_ALPHABET[4]]
    config["model"]["vocab"]["!!"] = 262
    return config


def reranked_tokenizer_json(duplicate: bool = False) -> dict:
    """The four merges listed in another order than their ids, as converted files list them: Ġ t, e e (261),
    h e (259), Ġt he; then ab a -> "aba" (263) BEFORE a b -> "ab" (262). With duplicate, the original
    order Ġ t, h e, e e, Ġt he, and h e listed a second time at the end instead."""
    if duplicate:
        return hand_tokenizer_json(model_merges=HAND_MERGES + [["h", "e"]])
    merges = [["Ġ", "t"], ["e", "e"], ["h", "e"], ["Ġt", "he"], ["ab", "a"], ["a", "b"]]
    return hand_tokenizer_json(model_merges=merges, model_vocab=hand_tokenizer_json()["model"]["vocab"] | {"ab": 262, "aba": 263})


def nfc_tokenizer_json() -> dict:
    """Qwen2's normalizer: compose characters (NFC) before anything else."""
    return hand_tokenizer_json(normalizer={"type": "NFC"})


def added_tokenizer_json() -> dict:
    """Qwen2.5's kind of added token: "<tool>" (262), with "special": false."""
    config = hand_tokenizer_json()
    config["added_tokens"].append({"id": 262, "content": "<tool>", "single_word": False, "lstrip": False,
                                   "rstrip": False, "normalized": False, "special": False})
    return config


A, B, E, H, T = (hand_byte_id(ord(c)) for c in "abeht")
QUIRK_CASES = {
    # file: [(text, allowed_special, expected ids, why)]
    "holed": [("!\x04!", True, [262], "one chunk '!\\x04!'; byte 4 has no token: dropped; ! ! merge into 262"),
              ("a\x04b", True, [A, B], "three chunks 'a' '\\x04' 'b'; the middle one has no id left"),
              ("\x04", True, [], "nothing left")],
    "reranked": [("thee", True, [T, H, 261], "(e e) ranks 1, (h e) 2: ee first, then no merge joins h + ee"),
                 (" the", True, [260], "Ġ t (rank 0), h e (2), Ġt he (3): one token, as before"),
                 ("abab", True, [263, B], "a b a b -> (a b) rank 5 at its leftmost place -> ab a b -> (ab a) "
                                          "rank 4 -> aba b")],
    "duplicate": [("thee", True, [T, H, 261], "h e is listed at places 1 and 4: it ranks 4, after e e (2)")],
    "nfc": [("e\u0301", True, [hand_byte_id(0xC3), hand_byte_id(0xA9)], "NFC makes 'e' + U+0301 the one "
             "character 'é', the bytes C3 A9"),
            ("\ufb01", True, [hand_byte_id(0xEF), hand_byte_id(0xAC), hand_byte_id(0x81)], "NFC keeps the "
             "ligature 'ﬁ' (NFKC would make it 'fi')")],
    "added": [("a<tool>b", False, [A, 262, B], "a token that is not special is found even when specials are not"),
              ("a<tool>b", True, [A, 262, B], "and with allowed_special too")],
}
QUIRK_FILES = {"holed": holed_tokenizer_json, "reranked": reranked_tokenizer_json,
               "duplicate": lambda: reranked_tokenizer_json(duplicate=True), "nfc": nfc_tokenizer_json,
               "added": added_tokenizer_json}


def load_config(stage, tmp_path, config: dict):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return stage.ByteBPE.from_tokenizer_json(path)


def assert_quirk(bpe, name: str, hint: str, suspects: dict | None = None) -> None:
    """Each of QUIRK_CASES[name] encoded; a result that is a known mistake's (suspects {why: ids}) is named."""
    __tracebackhide__ = True
    for text, allowed, expected, why in QUIRK_CASES[name]:
        what = f"encode({ascii(text)}, allowed_special={allowed}) with the {name} tokenizer.json ({why})"
        got = bpe.encode(text, allowed_special=allowed)
        for mistake, wrong in (suspects or {}).get(text, {}).items():
            if got == wrong and got != expected:
                fail(f"{what}: expected {expected}, got {got}", hint, mistake)
        assert_equal(assert_int_list(got, what, hint="encode returns a list of ints."), expected, what, hint=hint)


def test_a_byte_the_vocabulary_lacks_is_dropped_and_its_neighbours_merge(stage, tmp_path):
    """SmolLM2's vocabulary has no token for 21 bytes (control characters such as 4, and bytes that valid UTF-8
    never or hardly uses). Hugging Face's tokenizers then DROPS such a byte and merges what is left.
    The hand-written file without the byte token 'Ą' (byte 4), plus the merge ! ! -> 262:
        "!\\x04!"  is one chunk (a run of symbols): bytes 33 4 33 -> ids [224, 224] -> merged: [262]
        "a\\x04b"  is three chunks "a", "\\x04", "b": [160, 159]."""
    try:
        bpe = load_config(stage, tmp_path, holed_tokenizer_json())
    except ValueError as error:
        fail(f"from_tokenizer_json refused a file that lacks the byte token of byte 4: {error}",
             "Published files do lack bytes (SmolLM2 lacks 21): give such a byte no id (byte_ids[4] = None) and let "
             "encode drop it, as tokenizers does.")
    assert_equal(bpe.byte_ids[4], None, "byte_ids[4] (the file has no token for byte 4)",
                 hint="byte_ids[b] is None for a byte the vocabulary lacks: no id is better than a wrong one.")
    hint = ("Drop a byte whose byte_ids entry is None before merging, so its neighbours become neighbours: that is "
            "what tokenizers does when the model has no unknown token.")
    assert_quirk(bpe, "holed", hint, {"!\x04!": {"the merges did not join the two '!' once byte 4 was dropped: is "
                                                 "it dropped BEFORE the merges?": [224, 224],
                                                 "byte 4 was kept, as None, instead of being dropped BEFORE the "
                                                 "merges": [224, None, 224]}})
    assert_equal(bpe.decode([262]), "!!", "decode([262])", hint="The dropped byte is gone for good: decode gives '!!'.")


@pytest.mark.parametrize("name", ["reranked", "duplicate"])
def test_merges_apply_in_the_order_of_the_list_not_of_their_ids(stage, tmp_path, name):
    """A merge's RANK is its place in the file's list, and the present pair of lowest rank is merged first,
    at its leftmost place, ONE place at a time (as tokenizers and tiktoken do). Files converted from tiktoken
    list merges in an order that need not follow the ids, and may list a pair twice (the later place counts).
        reranked: Ġ t (0), e e -> 261 (1), h e -> 259 (2), Ġt he (3), ab a -> 263 (4), a b -> 262 (5)
            "thee" = t h e e: (h e) rank 2, (e e) rank 1 -> t h ee; (h, ee) is no merge: [141, 153, 261]
                   (by the lowest id, 259 < 261, it would be t he e: [141, 259, 156])
            "abab" = a b a b: only (a b), rank 5, at its leftmost place -> ab a b; now (ab a), rank 4,
                   comes first -> aba b: [263, 159] (merging every (a b) at once gives ab ab: [262, 262])
        duplicate: Ġ t (0), h e (1), e e (2), Ġt he (3), h e again (4): (h e) ranks 4, after (e e):
            "thee" -> t h ee: [141, 153, 261]"""
    bpe = load_config(stage, tmp_path, QUIRK_FILES[name]())
    hint = ("Keep each merge's place in the file's list (ranks, the later place when a pair is listed twice) and "
            "merge the present pair of lowest RANK, at its leftmost place only, then look again.")
    assert_quirk(bpe, name, hint, {
        "thee": {"the merges were applied by the id of the token they make (259 before 261), not by their place "
                 "in the list": [T, 259, E]},
        "abab": {"every place of (a b) was merged at once: merge one place, then look again, since (ab a) ranks "
                 "earlier than (a b)": [262, 262]}})


def test_nfc_normalization_is_applied_when_the_file_asks(stage, tmp_path):
    """Qwen2's file says "normalizer": {"type": "NFC"}: the text is composed before it is cut, so "e" + U+0301
    (the combining acute accent, bytes CC 81) becomes "é" (bytes C3 A9): ids [hand 195, hand 169] = [62, 88].
    NFC leaves the ligature "ﬁ" (U+FB01, bytes EF AC 81) alone: [18, 83, 176]."""
    try:
        bpe = load_config(stage, tmp_path, nfc_tokenizer_json())
    except ValueError as error:
        fail(f"from_tokenizer_json refused a file with an NFC normalizer: {error}",
             "Accept NFC (normalization_forms reads it) and apply unicodedata.normalize('NFC', text) before cutting.")
    decomposed = [E, hand_byte_id(0xCC), hand_byte_id(0x81)]
    assert_quirk(bpe, "nfc", "Apply the file's normalization (self.normalization, filled from normalization_forms) to "
                             "the text with unicodedata.normalize before cutting it into chunks.",
                 {"e\u0301": {"the text was not normalized: 'e' and U+0301 stayed two characters": decomposed},
                  "\ufb01": {"NFKC was applied, not NFC": [hand_byte_id(ord("f")), hand_byte_id(ord("i"))]}})
    assert_equal(bpe.decode(bpe.encode("e\u0301")), "é", "decode(encode('e\\u0301'))",
                 hint="The ids are those of the composed text: decode gives 'é', one character.")


def test_an_added_token_that_is_not_special_is_found_in_any_text(stage, tmp_path):
    """Qwen2.5's "<tool_call>" is an added token with "special": false: tokenizers finds it in any text, as a
    word of the vocabulary, whether special tokens are allowed or not. Here "<tool>" (262):
    "a<tool>b" -> [160, 262, 159] either way; "<|endoftext|>" stays special: plain text unless allowed."""
    try:
        bpe = load_config(stage, tmp_path, added_tokenizer_json())
    except ValueError as error:
        fail(f"from_tokenizer_json refused an added token with \"special\": false: {error}",
             "Accept it: keep it in added_tokens (not special_tokens), and find it in any text.")
    assert_equal(bpe.added_tokens, {"<tool>": 262}, "added_tokens read from the file",
                 hint="An added token whose \"special\" is false goes into added_tokens, a special one into special_tokens.")
    assert_equal(bpe.special_tokens, {HAND_SHORT: 0, HAND_DOUBLE: 1}, "special_tokens read from the file",
                 hint="Only the added tokens with \"special\": true are special tokens.")
    plain = [hand_byte_id(byte) for byte in "<tool>".encode()]
    assert_quirk(bpe, "added", "An added token that is not special is split out of the text before chunking "
                               "whatever allowed_special says; allowed_special decides only for the special ones.",
                 {"a<tool>b": {"'<tool>' was encoded as plain text": [A, *plain, B]}})
    assert_equal(bpe.encode(HAND_SHORT)[:1], [hand_byte_id(ord("<"))], f"encode({HAND_SHORT!r})[:1]",
                 hint="A special token is still plain text unless allowed_special=True.")
    assert_equal(bpe.decode([A, 262, B]), "a<tool>b", "decode([160, 262, 159])",
                 hint="An added token decodes to its content.")


@pytest.mark.parametrize("change, why", [
    ({"model_type": "WordPiece"}, "a WordPiece model"),
    ({"normalizer": {"type": "Lowercase"}}, "a lower-casing normalizer"),
    ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip"}]}}, "a Strip normalizer"),
    ({"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}}, "a SentencePiece-style pre-tokenizer"),
    ({"model_merges": HAND_MERGES + [["Ġ", "q"]]}, "a merge whose token 'Ġq' is not in the vocabulary"),
    ({"added_tokens": [{"id": 0, "content": HAND_SHORT, "special": True, "lstrip": True}]}, "an added token with lstrip"),
    ({"model_vocab": holed_tokenizer_json()["model"]["vocab"], "model_merges": holed_tokenizer_json()["model"]["merges"],
      "model_unk_token": HAND_SHORT}, "a missing byte and an unknown token (tokenizers would give the unknown id)"),
])
def test_from_tokenizer_json_refuses_what_it_cannot_encode_exactly(stage, tmp_path, change, why):
    with pytest.raises(ValueError) as caught:
        load_hand(stage, tmp_path, **change)
        fail(f"from_tokenizer_json accepted a file with {why}", "Refuse it with ValueError: it would encode differently "
             "from the library that wrote it. supported_patterns checks the model, normalizer and pre-tokenizer.")
    message = str(caught.value)
    if "\n" in message or not message:
        fail(f"the ValueError for {why} should be one line, got {message!r}", "Say in one line what is not supported.")


FILE_TEXTS = UNSEEN + [
    "I can't, won't; it's he'll she'd we're they've I'm. DON'T",  # GPT-2's contractions (lower case only)
    "In 1818 there were 1,234,567.89 pounds; 42nd street; ٣٤ ²",  # digits, other scripts' digits
    "the thee eee theee  the\tthe\nthe   ",  # the hand-written merges, whitespace runs, trailing spaces
    f"{HAND_DOUBLE}{HAND_SHORT} and {HAND_SHORT}x{HAND_SHORT * 3}<|endoftext|",  # specials, longest first
]


def test_tokenizer_json_encoding_matches_a_slow_reading_of_the_file_on_varied_text(stage, tmp_path):
    """The hand-written file on contractions, digits, accents, CJK, emoji, whitespace runs, control bytes
    and overlapping special tokens, against slow_encode_file above (which the project's suite checks
    against Hugging Face's tokenizers on files it trained): id for id, and back."""
    bpe = load_hand(stage, tmp_path)
    for text in FILE_TEXTS:
        expected = slow_encode_file(hand_tokenizer_json(), text)
        assert_same_ids(bpe.encode(text, allowed_special=True), expected,
                        f"encode({text!r}, allowed_special=True) with the hand-written tokenizer.json",
                        hint="GPT-2 chunks; each byte as its id in the FILE (byte_ids); the merges, lowest rank "
                             "first; special tokens longest first.")
        assert_equal(bpe.decode(expected), text, f"decode(the ids of {text!r})", hint=HINT_ROUND_TRIP)


# ---------------------------------------------------------------------------------------------
# streaming


def test_encode_iterable_equals_encode_of_the_whole_file(stage, tmp_path):
    """A file read line by line, and the same text in pieces cut in awkward places ("don" + "'t",
    "\\n" + "\\n" which GPT-2 keeps as one chunk), give the ids of the whole text."""
    bpe = book_tokenizer(stage)
    text = BOOK[20_000:26_000] + "I don't know.\n\n\n  Spaces   \n" + " ".join(UNSEEN) + "<eos>x<pad>"
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    whole = bpe.encode(text, allowed_special=True)
    with path.open(encoding="utf-8", newline="") as lines:
        got = bpe.encode_iterable(lines, allowed_special=True)
        if isinstance(got, (list, tuple)):
            fail(f"encode_iterable returned a {type(got).__name__}; expected a generator that yields ids",
                 "Write it with yield: a large file must never be held whole, in text or in ids.")
        got = list(got)
    assert_same_ids(got, whole, "list(encode_iterable(the lines of a file)) vs encode(the whole file)",
                 hint="Hold text back until a point no chunk can cross (SAFE_CUT), encode what comes before it, keep "
                      "the rest for the next piece.")
    cut = [text[i : i + 7] for i in range(0, len(text), 7)]  # pieces that split words, contractions, newline runs
    assert_same_ids(list(bpe.encode_iterable(cut, allowed_special=True)), whole,
                 "list(encode_iterable(the text in pieces of 7 characters))",
                 hint="A piece can end in the middle of a chunk ('don' + \"'t\"): never encode a piece on its own.")


@pytest.mark.parametrize("line", ["It was a dreary night of November.\n", "这是一个没有空格的句子。\n"])
def test_encode_iterable_is_lazy(stage, line):
    """Its first ids come out after the first few lines, long before a long stream is all read: for
    English (a space after a word is a safe cut) and for text without spaces (a line start is)."""
    bpe = book_tokenizer(stage)
    read = []

    def stream():
        for number in range(50):
            read.append(number)
            yield line

    first = list(itertools.islice(bpe.encode_iterable(stream()), 5))
    assert_equal(first, bpe.encode(line)[:5], "the first 5 ids of encode_iterable on a stream of 50 lines",
                 hint="The ids of each piece's text, up to its last safe cut, in order.")
    if len(read) > 2:
        fail(f"encode_iterable read {len(read)} of 50 lines {line!r} before yielding its first 5 ids; expected at "
             "most 2", "Yield the ids of the text before the last safe cut as soon as each piece arrives: a large "
             "file must never be read whole. A safe cut is a space after a non-space, or the start of a line after "
             "a lone newline (SAFE_CUT).")


# ---------------------------------------------------------------------------------------------
# SentencePiece-style BPE (Llama 2): "▁" for spaces, merges by rank, byte fallback

SPM_PIECES = ["▁", "a", "b", "c", "H", "e", "l", "o", "w", "r", "d",  # 259-269: single characters
              "bc", "ab", "ll", "▁H", "ell", "▁Hell", "▁Hello", "▁w", "or", "▁wor", "ld", "▁world", "▁▁"]  # 270-282
# the merges in RANK order (the first is applied first); "ab" (rank 0) has a HIGHER id (271) than "bc" (rank 1, 270)
SPM_MERGES = [["a", "b"], ["b", "c"], ["l", "l"], ["▁", "H"], ["e", "ll"], ["▁H", "ell"], ["▁Hell", "o"],
              ["▁", "w"], ["o", "r"], ["▁w", "or"], ["l", "d"], ["▁wor", "ld"], ["▁", "▁"]]
SPM_IDS = {piece: 259 + n for n, piece in enumerate(SPM_PIECES)}
OLDER = {"normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None}


def metaspace(prepend_scheme: str = "first", split: bool = False) -> dict:
    """The newer layout (transformers 5 writes prepend_scheme "first", split false): no normalizer."""
    return {"normalizer": None, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁",
                                                  "prepend_scheme": prepend_scheme, "split": split}}


def spm_byte_id(byte: int) -> int:
    """As in Llama 2: <unk> <s> </s> are 0 1 2, then "<0x00>".."<0xFF>" are 3..258: byte b is b + 3."""
    return 3 + byte


def spm_tokenizer_json(layout: dict, **changes) -> dict:
    """A tiny Llama 2-style tokenizer.json: specials 0-2, byte tokens 3-258, pieces 259-282 (SPM_PIECES)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": spm_byte_id(b) for b in range(256)} | SPM_IDS
    config = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, content in enumerate(("<unk>", "<s>", "</s>"))],
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": SPM_MERGES},
    } | layout
    for key, value in changes.items():
        target, name = (config["model"], key.removeprefix("model_")) if key.startswith("model_") else (config, key)
        target[name] = value
    return config


def load_spm(stage, tmp_path, layout: dict = OLDER, reader: str = "SentencePieceBPE", **changes):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spm_tokenizer_json(layout, **changes), ensure_ascii=False), encoding="utf-8")
    return getattr(stage, reader).from_tokenizer_json(path)


def spm_encode(spm, text: str, what: str, allowed_special: bool = False) -> list[int]:
    return assert_int_list(spm.encode(text, allowed_special=allowed_special), what, hint="encode returns a list of ints.")


SPM_HELLO = [SPM_IDS["▁Hello"], SPM_IDS["▁world"]]
SPM_E_ACUTE = [SPM_IDS["▁"], spm_byte_id(0xC3), spm_byte_id(0xA9)]


def test_sentencepiece_puts_a_marker_in_front_and_writes_spaces_as_markers(stage, tmp_path):
    """"Hello world" -> normalize: "▁Hello▁world" (one "▁" in front, the space written "▁") -> chunks "▁Hello" "▁world".
    "▁Hello": ▁ H e l l o: rank 2 (l l), 3 (▁ H), 4 (e ll), 5 (▁H ell), 6 (▁Hell o) -> [276].
    "▁world": ▁ w o r l d: rank 7 (▁ w), 8 (o r), 9 (▁w or), 10 (l d), 11 (▁wor ld) -> [281]."""
    spm = load_spm(stage, tmp_path)
    written = spm.normalize("Hello world")
    if written == "Hello▁world":
        fail(f"normalize('Hello world'): expected '▁Hello▁world', got {written!r}",
             "SentencePiece puts ONE '▁' in front of the text (the dummy prefix), so the first word has the same "
             "pieces as a word after a space.", "no '▁' in front of the first word: the dummy prefix is missing")
    assert_equal(written, "▁Hello▁world", "normalize('Hello world') (the older layout)",
                 hint="Spaces become '▁' and one '▁' goes in front.")
    assert_equal(spm.chunks("▁Hello▁world"), ["▁Hello", "▁world"], "chunks('▁Hello▁world')",
                 hint="The text is cut before each '▁' that follows another character.")
    got = spm_encode(spm, "Hello world", "encode('Hello world')")
    if got == [SPM_IDS["H"], SPM_IDS["ell"], SPM_IDS["o"], SPM_IDS["▁world"]]:
        fail(f"encode('Hello world'): expected {SPM_HELLO}, got {got}", "One '▁' goes in front of the text before "
             "the merges (the dummy prefix): 'Hello' alone is not a piece, '▁Hello' is.",
             "the ids of 'Hello' without the dummy prefix")
    assert_equal(got, SPM_HELLO, "encode('Hello world') with the hand-written Llama 2-style file",
                 hint="Each chunk starts as its characters' ids (piece_ids), then the merges by rank.")


def test_sentencepiece_merges_by_rank_not_by_id(stage, tmp_path):
    """"abc" -> "▁abc" -> ▁ a b c. (a b) has rank 0 but id 271; (b c) rank 1 but id 270. By rank:
    ▁ ab c = [259, 271, 261]. Taking the lowest new id first (ByteBPE's rule) would give ▁ a bc.
    With (a b) listed again at the end (place 13) it ranks 13, after (b c): ▁ a bc = [259, 260, 270]."""
    spm = load_spm(stage, tmp_path)
    got = spm_encode(spm, "abc", "encode('abc')")
    expected = [SPM_IDS["▁"], SPM_IDS["ab"], SPM_IDS["c"]]
    if got == [SPM_IDS["▁"], SPM_IDS["a"], SPM_IDS["bc"]]:
        fail(f"encode('abc'): expected {expected}, got {got}",
             "A merge's priority is its RANK, its place in the file's merges list, not the id of the piece it "
             "makes: in a SentencePiece vocabulary the ids need not follow the ranks. Keep each pair's rank.",
             "(b c) was merged before (a b): the merge with the lower new id went first")
    assert_equal(got, expected, "encode('abc')", hint="The present pair with the lowest rank, repeatedly.")
    listed_twice = load_spm(stage, tmp_path, model_merges=SPM_MERGES + [["a", "b"]])
    assert_equal(spm_encode(listed_twice, "abc", "encode('abc')"), [SPM_IDS["▁"], SPM_IDS["a"], SPM_IDS["bc"]],
                 "encode('abc') with (a b) listed a second time, last",
                 hint="A pair listed twice takes its LAST place in the list, as tokenizers reads any file's merges.")
    assert_equal(spm_encode(spm, "  Hello", "encode('  Hello')"), [SPM_IDS["▁▁"], SPM_IDS["▁Hello"]],
                 "encode('  Hello') (the older layout: '▁▁▁Hello')",
                 hint="▁ ▁ ▁ H e l l o: ranks 2-6 build '▁Hello' first, then rank 12 joins the two '▁' left.")


def test_sentencepiece_falls_back_to_the_utf8_bytes_of_an_unknown_character(stage, tmp_path):
    """"é" is not a piece: "▁é" -> "▁" [259], then é's UTF-8 bytes 0xC3 0xA9 as the tokens "<0xC3>" "<0xA9>",
    ids 0xC3 + 3 = 198 and 0xA9 + 3 = 172. "你" is three bytes E4 BD A0; "🦙" four."""
    spm = load_spm(stage, tmp_path)
    got = spm_encode(spm, "é", "encode('é')")
    observed = {(SPM_IDS["▁"], spm_byte_id(0xE9)): "one byte token, 0xE9: é's code point (Latin-1), not its UTF-8 bytes",
                (SPM_IDS["▁"], spm_byte_id(0xA9), spm_byte_id(0xC3)): "é's two UTF-8 bytes in reverse order",
                (SPM_IDS["▁"], 0xC3, 0xA9): "the byte values themselves as ids, not the ids of the tokens '<0xC3>' '<0xA9>'",
                (SPM_IDS["▁"], 0): "the <unk> id"}.get(tuple(got))
    if observed:
        fail(f"encode('é'): expected {SPM_E_ACUTE}, got {got}",
             "A character missing from the vocabulary becomes its UTF-8 bytes (char.encode('utf-8')), each the token "
             "'<0x%02X>' % byte, looked up in the file (byte_ids).", observed)
    assert_equal(got, SPM_E_ACUTE, "encode('é')", hint="'▁' is a piece; 'é' is not: its UTF-8 bytes as byte tokens.")
    for text in ["你", "a🦙"]:
        expected = [SPM_IDS["▁"]] + [SPM_IDS[c] for c in text if c in SPM_IDS] + [
            spm_byte_id(b) for c in text if c not in SPM_IDS for b in c.encode("utf-8")]
        assert_equal(spm_encode(spm, text, f"encode({text!r})"), expected, f"encode({text!r})",
                     hint="Every byte of a missing character's UTF-8 bytes becomes its byte token; no merge joins them.")


def test_sentencepiece_decode_fuses_bytes_and_strips_the_one_leading_space(stage, tmp_path):
    """[276, 281] is "▁Hello▁world" -> " Hello world" -> the ONE leading space off: "Hello world".
    [198, 172] (<0xC3> <0xA9>) -> "é"; [198] alone is no character: "\ufffd"; [198, 198, 172] (C3 C3 A9)
    is not valid UTF-8: one "\ufffd" per byte token, as tokenizers' ByteFallback decoder writes it.
    [282, 276] "▁▁" "▁Hello" -> "   Hello" -> "  Hello": only one space is stripped."""
    spm = load_spm(stage, tmp_path)
    got = spm.decode(SPM_HELLO)
    if got == " Hello world":
        fail(f"decode({SPM_HELLO}): expected 'Hello world', got ' Hello world'",
             "The '▁' that encode puts in front of the text is not the text's: decoding strips ONE leading space "
             "(the file's decoder ends in Strip).", "the leading space of the dummy prefix is still there")
    assert_equal(got, "Hello world", f"decode({SPM_HELLO})", hint="'▁' becomes ' '; then one leading space is stripped.")
    for ids, expected, hint in [
        (SPM_E_ACUTE, "é", "Consecutive byte tokens are joined into bytes and decoded as UTF-8 together."),
        ([spm_byte_id(0xC3)], "\ufffd", "A run of byte tokens that is not valid UTF-8 becomes U+FFFD."),
        ([spm_byte_id(0xC3), spm_byte_id(0xC3), spm_byte_id(0xA9)], "\ufffd" * 3,
         "A run that is not valid UTF-8 becomes one U+FFFD PER BYTE TOKEN (the library's ByteFallback), not "
         "bytes.decode(errors='replace')."),
        ([SPM_IDS["▁▁"], SPM_IDS["▁Hello"]], "  Hello", "Strip ONE leading space, not all of them."),
        ([1, SPM_IDS["▁Hello"], 2], "<s> Hello</s>", "A special token decodes to its string; only a space at the "
                                                     "very start is stripped."),
    ]:
        assert_equal(spm.decode(ids), expected, f"decode({ids})", hint=hint)
    for text in ["Hello world", "  Hello  ", "abc é 你 🦙\n\tcd", ""]:
        assert_equal(spm.decode(spm_encode(spm, text, f"encode({text!r})")), text, f"decode(encode({text!r}))",
                     hint="With the older layout every text comes back: '▁' to ' ', bytes fused, one space stripped.")


@pytest.mark.parametrize("layout, name, expected", [
    # "  Hello": the older layout always adds "▁" ("▁▁▁Hello"); Metaspace not before a space ("▁▁Hello")
    (OLDER, "older", {"  Hello": ["▁▁", "▁Hello"], "</s>Hello": ["</s>", "▁Hello"], "Hello  ": ["▁Hello", "▁▁"]}),
    (metaspace("always"), "Metaspace always",
     {"  Hello": ["▁", "▁Hello"], "</s>Hello": ["</s>", "▁Hello"], "Hello  ": ["▁Hello", "▁▁"]}),
    (metaspace("first"), "Metaspace first",
     {"  Hello": ["▁", "▁Hello"], "</s>Hello": ["</s>", "H", "ell", "o"], "Hello  ": ["▁Hello", "▁▁"]}),
    (metaspace("always", split=True), "Metaspace split",
     {"  Hello": ["▁", "▁Hello"], "</s>Hello": ["</s>", "▁Hello"], "Hello  ": ["▁Hello", "▁", "▁"]}),
])
def test_sentencepiece_reads_both_layouts(stage, tmp_path, layout, name, expected):
    """The older layout (normalizer Prepend + Replace) puts "▁" in front of every stretch of text, even one that
    starts with a space: "  Hello" -> "▁▁▁Hello" -> "▁▁" "▁Hello". Metaspace (the newer layout) does not when it
    already starts with "▁": "▁▁Hello" -> "▁" "▁Hello". After a special token (allowed_special) "always" puts
    one in front again, "first" does not: "Hello" -> H ell o. split=true also cuts between two "▁"."""
    spm = load_spm(stage, tmp_path, layout)
    for text, pieces in expected.items():
        ids = [SPM_IDS.get(piece, {"</s>": 2}.get(piece)) for piece in pieces]
        assert_equal(spm_encode(spm, text, f"encode({text!r})", allowed_special=True), ids,
                     f"encode({text!r}, allowed_special=True) with the {name} layout ({' '.join(pieces)})",
                     hint="Read the layout from the file (sentencepiece_layout): whether '▁' goes in front of every "
                          "stretch between special tokens or only the first, whether even before a space, and "
                          "Metaspace's split.")


def spm_added_tokens(*normalized: str) -> list[dict]:
    """The added tokens <unk> <s> </s> (ids 0-2), those named marked "normalized": true (Meta's Llama 2 upload
    marks all three so; later uploads mark them false)."""
    return [{"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": content in normalized, "special": True} for i, content in enumerate(("<unk>", "<s>", "</s>"))]


def spm_id(piece: str) -> int:
    """The id of a piece of the hand-written file: a byte token ("<0x3C>"), a special token, or one of SPM_PIECES."""
    if piece.startswith("<0x"):
        return spm_byte_id(int(piece[3:5], 16))
    return {"<unk>": 0, "<s>": 1, "</s>": 2, "▁</s>": 2}.get(piece, SPM_IDS.get(piece))


# text -> (expected pieces, {a known mistake's ids: what it did})
SPM_NORMALIZED_CASES = {
    "Hello </s> world": (["▁Hello", "▁</s>", "▁world"], {
        (276, 259, 2, 259, 281): "'</s>' was found in the text as written, so the spaces around it stayed text",
        (276, 259, 2, 281): "'</s>' itself was looked for in the normalized text, not '▁</s>' (the token normalized)"}),
    "Hello</s>": (["▁Hello", "<0x3C>", "<0x2F>", "<0x73>", "<0x3E>"], {
        (276, 2): "'</s>' was found right after 'Hello': the normalized text '▁Hello</s>' holds no '▁</s>'"}),
    "</s>Hello": (["▁</s>", "H", "ell", "o"], {
        (2, 276): "'Hello' got a '▁' of its own: '</s>' is found in the normalized text '▁</s>Hello', where it "
                  "takes the '▁' in front of it, and the rest is not normalized again"}),
    "<s>Hello </s>": (["<s>", "▁Hello", "▁</s>"], {}),
}


def test_sentencepiece_finds_a_normalized_special_token_in_the_normalized_text(stage, tmp_path):
    """The older layout with "</s>" marked "normalized": true ("<s>" false). tokenizers finds "<s>" in the text
    as written; each stretch between is normalized; then it finds "</s>" in the NORMALIZED stretch, written as the
    normalizer writes it: "▁</s>". allowed_special=True throughout:
        "Hello </s> world" -> "▁Hello▁</s>▁world" -> "▁Hello" | ▁</s> | "▁world"   -> [276, 2, 281]
        "Hello</s>"        -> "▁Hello</s>": no "▁</s>" in it: "</s>" is text, its four bytes (no piece has them)
                              -> [276, 63, 50, 118, 65]
        "</s>Hello"        -> "▁</s>Hello" -> ▁</s> | "Hello": no second "▁" -> H e l l o -> H ell o: [2, 263, 274, 266]
        "<s>Hello </s>"    -> "" | <s> | "Hello </s>" -> "▁Hello▁</s>" -> "▁Hello" | ▁</s> -> [1, 276, 2]
    The id's piece is "▁</s>" too: decode([276, 2, 281]) = " Hello </s> world" less the first space."""
    try:
        spm = load_spm(stage, tmp_path, added_tokens=spm_added_tokens("</s>"))
    except ValueError as error:
        fail(f"SentencePieceBPE.from_tokenizer_json refused a file whose '</s>' is marked \"normalized\": true: {error}",
             "Meta's Llama 2 upload marks its special tokens so: read it, and find such a token in the normalized "
             "text (normalized_tokens), as tokenizers does.")
    for text, (pieces, mistakes) in SPM_NORMALIZED_CASES.items():
        expected = [spm_id(piece) for piece in pieces]
        got = spm_encode(spm, text, f"encode({text!r})", allowed_special=True)
        what = f"encode({text!r}, allowed_special=True) with '</s>' marked normalized ({' '.join(pieces)})"
        hint = ("Two passes: the tokens marked \"normalized\": false are split out of the text as written; each "
                "stretch between is normalized; the tokens marked true are split out of the NORMALIZED stretch, "
                "written as the normalizer writes them ('▁</s>').")
        if tuple(got) in mistakes and got != expected:
            fail(f"{what}: expected {expected}, got {got}", hint, mistakes[tuple(got)])
        assert_equal(got, expected, what, hint=hint)
    assert_equal(spm.decode([SPM_IDS["▁Hello"], 2, SPM_IDS["▁world"]]), "Hello </s> world", "decode([276, 2, 281])",
                 hint="A token marked normalized decodes as its normalized piece, '▁</s>': ' </s>'.")
    assert_equal(spm.decode([2]), "</s>", "decode([2])", hint="' </s>', then the one leading space stripped.")


def test_byte_bpe_from_tokenizer_json_hands_a_sentencepiece_file_on(stage, tmp_path):
    """One call reads either kind: ByteBPE.from_tokenizer_json on a Llama 2-style file returns a SentencePieceBPE."""
    spm = load_spm(stage, tmp_path, reader="ByteBPE")
    if not isinstance(spm, stage.SentencePieceBPE):
        fail(f"ByteBPE.from_tokenizer_json on a Llama 2-style file returned {type(spm).__name__}",
             "Its first step: when is_sentencepiece_file(path), return SentencePieceBPE.from_tokenizer_json(path).")
    assert_equal(spm_encode(spm, "Hello world", "encode('Hello world')"), SPM_HELLO, "encode('Hello world')",
                 hint="The same file, read by SentencePieceBPE.")
    assert_equal((spm.special_tokens, spm.vocab_size, spm.bos_id, spm.eos_id),
                 ({"<unk>": 0, "<s>": 1, "</s>": 2}, 283, 1, 2), "(special_tokens, vocab_size, bos_id, eos_id)",
                 hint="The added tokens are the special tokens; vocab_size is the largest id + 1.")


@pytest.mark.parametrize("change, why", [
    ({"model_byte_fallback": False}, "no byte fallback"),
    ({"model_vocab": {k: v for k, v in spm_tokenizer_json(OLDER)["model"]["vocab"].items() if k != "<0xA9>"}},
     "a missing byte token"),
    ({"decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}}, "a decoder without ByteFallback"),
    ({"normalizer": {"type": "NFKC"}}, "another normalizer"),
    ({"model_merges": SPM_MERGES + [["▁", "q"]]}, "a merge of pieces missing from the vocabulary"),
])
def test_sentencepiece_refuses_what_it_cannot_encode_exactly(stage, tmp_path, change, why):
    with pytest.raises(ValueError) as caught:
        load_spm(stage, tmp_path, **change)
        fail(f"SentencePieceBPE.from_tokenizer_json accepted a file with {why}",
             "Refuse it with ValueError: it would encode differently from the library that wrote it "
             "(sentencepiece_layout checks the model, normalizer, pre-tokenizer and decoder).")
    message = str(caught.value)
    if "\n" in message or not message:
        fail(f"the ValueError for {why} should be one line, got {message!r}", "Say in one line what is not supported.")
