"""Stage 12: the corpus (Gutenberg stripping, the shipped book) and shifted (input, target) windows.

The oracles: a synthetic Gutenberg file whose header, body and footer are written out here; the
shipped book read with Path.read_text; for the windows, a slow loop in this file that lists every
start s = 0, stride, 2 * stride, ... for which tokens s .. s + context exist, and slices the tokens
itself. Tokens are distinct values (a permutation), so a window taken from the wrong place cannot
look right by accident.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from checks import assert_close, assert_equal, assert_tensor, assert_unchanged, call, fail, snapshot

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "data" / "frankenstein.txt"

HEADER = (
    "The Project Gutenberg eBook of A Tiny Book\n"
    "This eBook is for the use of anyone anywhere at no cost.\n"
    "\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK A TINY BOOK ***\n"
)
BODY = (
    "Chapter 1\n"
    "\n"
    "“It was a dark night,” said she—and the rain fell.\n"
    "The end."
)
FOOTER = (
    "\n\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK A TINY BOOK ***\n"
    "\n"
    "Updated editions will replace the previous one.\n"
)

HINT_START = ("Cut everything up to the END of the line holding '*** START OF' (the START marker line "
              "itself goes too), then strip the whitespace.")
HINT_FOOTER = "The footer starts at the line holding '*** END OF': cut it and everything after it."


def slow_windows(tokens: torch.Tensor, context: int, stride: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every (x, y): a start s needs tokens s .. s + context, so s + context + 1 <= N."""
    n = tokens.numel()
    return [
        (tokens[s : s + context], tokens[s + 1 : s + context + 1])
        for s in range(0, n, stride)
        if s + context + 1 <= n
    ]


def distinct_tokens(n: int) -> torch.Tensor:
    """n distinct token ids in a scrambled order (a seeded permutation)."""
    return torch.randperm(n) + 100


# ---------------------------------------------------------------------------------------------
# strip_gutenberg


def test_strip_gutenberg_cuts_header_and_footer_at_their_markers(stage):
    text = HEADER + BODY + FOOTER
    got = stage.strip_gutenberg(text)
    if type(got) is not str:
        fail(f"strip_gutenberg: expected a str, got {type(got).__name__}", "Return the text itself.")
    if "*** START OF" in got:
        fail(f"strip_gutenberg kept the START marker line: the result begins {got[:70]!r}", HINT_START)
    if "Updated editions" in got or "*** END OF" in got:
        fail(f"strip_gutenberg kept the footer: the result ends {got[-70:]!r}", HINT_FOOTER)
    assert_equal(got, BODY, "strip_gutenberg(header + body + footer)",
                 hint=HINT_START + " " + HINT_FOOTER + " Only the outer whitespace is removed.")


def test_strip_gutenberg_leaves_text_without_markers_unchanged(stage):
    text = "\n\n  Frankenstein;\n\nor, the Modern Prometheus  *** a line of stars ***\n\n"
    assert_equal(stage.strip_gutenberg(text), text.strip(), "strip_gutenberg(text without markers)",
                 hint="Without '*** START OF' and '*** END OF' nothing is cut (str.find returns -1 when a "
                      "marker is missing: is -1 used as an index?); only the outer whitespace goes.")


def test_strip_gutenberg_cuts_only_the_marker_that_is_present(stage):
    assert_equal(stage.strip_gutenberg(HEADER + BODY), BODY, "strip_gutenberg(header + body), no footer",
                 hint=HINT_START + " A missing END marker means there is no footer to cut.")
    assert_equal(stage.strip_gutenberg(BODY + FOOTER), BODY, "strip_gutenberg(body + footer), no header",
                 hint=HINT_FOOTER + " A missing START marker means there is no header to cut.")


def test_strip_gutenberg_handles_windows_line_endings(stage):
    crlf = (HEADER + BODY + FOOTER).replace("\n", "\r\n")
    assert_equal(stage.strip_gutenberg(crlf), BODY.replace("\n", "\r\n"), "strip_gutenberg(text with \\r\\n)",
                 hint="The START marker's line ends at '\\n' (a '\\r' before it is whitespace that strip removes).")


# ---------------------------------------------------------------------------------------------
# load_corpus


def test_load_corpus_reads_utf8_and_strips_gutenberg(stage, tmp_path):
    path = tmp_path / "tiny_book.txt"
    path.write_bytes((HEADER + BODY + FOOTER).encode("utf-8"))
    for given in (path, str(path)):
        got = stage.load_corpus(given)
        if type(got) is not str:
            fail(f"load_corpus({type(given).__name__}): expected a str, got {type(got).__name__}",
                 "Read the file as text and return strip_gutenberg of it.")
        if "â€" in got:
            fail("load_corpus: the curly quotes came back as 'â€œ': the UTF-8 bytes were decoded as Latin-1",
                 "Read with encoding='utf-8' (never rely on the platform's default encoding).")
        assert_equal(got, BODY, f"load_corpus({type(given).__name__} path)",
                     hint="Read the file with encoding='utf-8' and return strip_gutenberg(text); accept a str or a Path.")


def test_load_corpus_without_a_path_reads_default_corpus(stage, tmp_path, monkeypatch):
    default = Path(stage.DEFAULT_CORPUS)
    assert_equal(default.parts[-2:], ("data", "frankenstein.txt"), "DEFAULT_CORPUS (its last two parts)",
                 hint="DEFAULT_CORPUS is given: the shipped data/frankenstein.txt next to your tree.")
    fake = tmp_path / "default_book.txt"
    fake.write_text(HEADER + BODY + FOOTER, encoding="utf-8")
    monkeypatch.setattr(stage, "DEFAULT_CORPUS", fake)
    assert_equal(stage.load_corpus(), BODY, "load_corpus() with DEFAULT_CORPUS pointing at a Gutenberg file",
                 hint="With path None, read the module's DEFAULT_CORPUS at call time (not a path copied elsewhere), "
                      "then strip it.")


def test_shipped_corpus_loads_and_is_the_whole_book(stage):
    expected = SHIPPED.read_text(encoding="utf-8").strip()  # the shipped file has no markers left
    got = stage.load_corpus(SHIPPED)
    if type(got) is not str:
        fail(f"load_corpus(data/frankenstein.txt): expected a str, got {type(got).__name__}", "Return the text.")
    if len(got) < 400_000:
        fail(f"load_corpus(data/frankenstein.txt): expected the whole book (about 420 000 characters), got {len(got)}",
             "Read the whole file; cut only at '*** START OF' / '*** END OF' lines, which this file does not have.")
    for character in "“”’—":
        if character not in got:
            fail(f"load_corpus(data/frankenstein.txt): the book has {character!r} but the text you read does not",
                 "Read with encoding='utf-8': the book has curly quotes and em dashes.")
    assert_equal(got[:13], "Frankenstein;", "the first 13 characters of the book",
                 hint="Is something cut from the start of a file that has no START marker?")
    assert_equal(got[-30:], "lost in darkness and distance.", "the last 30 characters of the book",
                 hint="Is something cut from the end of a file that has no END marker?")
    assert_equal(got, expected, "load_corpus(data/frankenstein.txt)",
                 hint="The shipped book is already stripped: it must come back as the file's text, outer whitespace removed.")


# ---------------------------------------------------------------------------------------------
# ShiftedWindows: shapes, then the shift, then the count and the stride


def test_windows_are_pairs_of_context_long_tensors(stage):
    tokens = distinct_tokens(20)
    dataset = stage.ShiftedWindows(tokens, context=4)
    item = dataset[0]
    if type(item) is not tuple or len(item) != 2:
        fail(f"dataset[0]: expected a tuple (x, y), got {type(item).__name__}", "Return (x, y), a tuple of two tensors.")
    x, y = item
    assert_tensor(x, "x of window 0", shape=(4,), dtype=torch.long, hint="x is tokens[s : s + context], a slice of the 1-D tokens.")
    assert_tensor(y, "y of window 0", shape=(4,), dtype=torch.long, hint="y is tokens[s + 1 : s + context + 1], as long as x.")


def test_target_is_the_input_shifted_by_exactly_one(stage):
    """tokens t0 t1 ... t19, context 4: window 0 is x = t0..t3, y = t1..t4; window 1 is x = t4..t7, y = t5..t8."""
    tokens = distinct_tokens(20)
    dataset = stage.ShiftedWindows(tokens, context=4)
    for i, (x_expected, y_expected) in enumerate(slow_windows(tokens, 4, 4)):
        x, y = dataset[i]
        assert_tensor(x, f"x of window {i}", shape=(4,), dtype=torch.long, hint="x is tokens[s : s + context].")
        assert_tensor(y, f"y of window {i}", shape=(4,), dtype=torch.long, hint="y is tokens[s + 1 : s + context + 1].")
        assert_close(x, x_expected, f"x of window {i}", atol=0,
                     hint="Window i starts at s = i * stride; x = tokens[s : s + context].")
        assert_close(y, y_expected, f"y of window {i} (the targets)", atol=0,
                     hint="The targets must be the inputs shifted by exactly one: y = tokens[s + 1 : s + context + 1]. "
                          "y equal to x means no shift (the model learns to copy); s + 2 shifts twice.")


def test_len_counts_every_window_whose_target_fits(stage):
    for n, context, stride in [(20, 4, 4), (21, 4, 4), (20, 4, 1), (20, 4, 3), (5, 4, 4), (30, 7, 2)]:
        expected = len(slow_windows(distinct_tokens(n), context, stride))
        dataset = stage.ShiftedWindows(distinct_tokens(n), context, stride)
        assert_equal(len(dataset), expected, f"len(ShiftedWindows(N={n}, context={context}, stride={stride}))",
                     hint="A window starting at s needs tokens s .. s + context (context + 1 of them), so the last "
                          "window starts at most at N - context - 1: len = (N - context - 1) // stride + 1. "
                          "N // context counts one window too many when its target would run off the end.")


def test_last_window_is_in_range_and_the_next_index_raises(stage):
    """N = 20, context 4: starts 0, 4, 8, 12 (12 + 4 = 16 <= 19); start 16 would need y up to t20, which does not exist."""
    tokens = distinct_tokens(20)
    dataset = stage.ShiftedWindows(tokens, context=4)
    windows = slow_windows(tokens, 4, 4)
    assert_equal(len(dataset), len(windows), "len(ShiftedWindows(N=20, context=4))",
                 hint="The last window must have a full target: len = (N - context - 1) // stride + 1.")
    x, y = dataset[len(windows) - 1]
    assert_tensor(y, "y of the last window", shape=(4,), dtype=torch.long,
                  hint="The last window's target must be complete: is len one too large, so its y runs past the end?")
    assert_close(y, windows[-1][1], "y of the last window", atol=0, hint="The last window starts at (len - 1) * stride.")
    x_neg, y_neg = dataset[-1]
    assert_close(y_neg, windows[-1][1], "y of dataset[-1]", atol=0,
                 hint="A negative index counts from the end, as for a list: add len(self) to it.")
    with pytest.raises(IndexError):
        dataset[len(windows)]
        fail(f"dataset[{len(windows)}] (one past the last window) returned instead of raising IndexError",
             "Raise IndexError for an index outside [-len, len): a for loop over the dataset stops on it.")


def test_iterating_over_the_windows_stops_after_the_last_one(stage):
    tokens = distinct_tokens(21)
    dataset = stage.ShiftedWindows(tokens, context=4)
    seen = list(itertools.islice(iter(dataset), 20))  # iter() uses __getitem__ until IndexError
    assert_equal(len(seen), len(slow_windows(tokens, 4, 4)), "the number of windows a for loop over the dataset yields",
                 hint="A for loop calls dataset[0], dataset[1], ... until IndexError: raise it past the last window.")


def test_stride_sets_where_each_window_starts(stage):
    tokens = distinct_tokens(20)
    for stride in (1, 3):
        dataset = stage.ShiftedWindows(tokens, context=4, stride=stride)
        windows = slow_windows(tokens, 4, stride)
        assert_equal(len(dataset), len(windows), f"len(ShiftedWindows(N=20, context=4, stride={stride}))",
                     hint="With a stride the windows start at 0, stride, 2 * stride, ...: len = (N - context - 1) // stride + 1.")
        for i, (x_expected, y_expected) in enumerate(windows):
            x, y = dataset[i]
            assert_close(x, x_expected, f"x of window {i} with stride {stride}", atol=0,
                         hint="Window i starts at i * stride, not i * context: is the stride ignored?")
            assert_close(y, y_expected, f"y of window {i} with stride {stride}", atol=0,
                         hint="y starts one after x: tokens[i * stride + 1 : i * stride + context + 1].")


def test_default_stride_is_context_so_windows_do_not_overlap(stage):
    tokens = distinct_tokens(17)
    dataset = stage.ShiftedWindows(tokens, context=4)
    inputs = torch.cat([dataset[i][0] for i in range(len(dataset))])
    assert_close(inputs, tokens[: 4 * len(dataset)], "the inputs of all windows, concatenated (default stride)", atol=0,
                 hint="stride=None means stride = context: windows side by side, every token an input exactly once.")


def test_windows_batch_with_a_dataloader(stage):
    tokens = distinct_tokens(41)
    dataset = stage.ShiftedWindows(tokens, context=5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False)
    x, y = next(iter(loader))
    assert_tensor(x, "the first batch of x", shape=(3, 5), dtype=torch.long, hint="Each item is (x (S,), y (S,)).")
    assert_close(y[:, :-1], x[:, 1:], "y[:, :-1] vs x[:, 1:] in a batch", atol=0,
                 hint="Within a window the target is the input shifted by exactly one.")


def test_too_few_tokens_for_one_window_raises(stage):
    with pytest.raises(ValueError):
        stage.ShiftedWindows(distinct_tokens(4), context=4)
        fail("ShiftedWindows(4 tokens, context=4) did not raise ValueError",
             "One window needs context + 1 tokens (the target reaches one further): raise ValueError with fewer.")


# ---------------------------------------------------------------------------------------------
# split_tokens


def test_windows_and_split_leave_the_tokens_unchanged(stage):
    tokens = distinct_tokens(20)
    before = snapshot(tokens)
    dataset = call(stage.ShiftedWindows, tokens, 4, what="ShiftedWindows(tokens, 4)")
    for index in range(len(dataset)):
        call(dataset.__getitem__, index, what=f"ShiftedWindows(tokens, 4)[{index}]")
    assert_unchanged(before, [tokens], "reading every window of ShiftedWindows(tokens, 4)", names=["tokens"])
    call(stage.split_tokens, tokens, 0.25, what="split_tokens(tokens, 0.25)")


def test_split_is_one_boundary_without_overlap(stage):
    """100 tokens, val_fraction 0.1: round(100 * 0.1) = 10 for validation -> train t0..t89, val t90..t99."""
    tokens = distinct_tokens(100)
    result = stage.split_tokens(tokens, 0.1)
    if type(result) is not tuple or len(result) != 2:
        fail(f"split_tokens: expected a tuple (train, val), got {type(result).__name__}", "Return (train, val).")
    train, val = result
    assert_tensor(train, "train", dtype=torch.long, hint="train holds token ids.")
    assert_tensor(val, "val", dtype=torch.long, hint="val holds token ids.")
    shared = set(train.tolist()) & set(val.tolist())
    if shared:
        fail(f"split_tokens: {len(shared)} token position(s) are in both train and val (an overlap at the boundary)",
             "Slice at one boundary b: train = tokens[:b], val = tokens[b:]; tokens[:b + 1] puts one in both.")
    assert_tensor(train, "train", shape=(90,), hint="train is tokens[:N - n_val], n_val = round(N * val_fraction).")
    assert_tensor(val, "val", shape=(10,), hint="val is the last round(N * val_fraction) tokens.")
    assert_close(torch.cat([train, val]), tokens, "torch.cat([train, val])", atol=0,
                 hint="Together the two parts are the whole sequence in order: no shuffling, nothing dropped.")


def test_split_sizes_follow_val_fraction(stage):
    tokens = distinct_tokens(1000)
    train, val = stage.split_tokens(tokens, val_fraction=0.25)
    assert_equal((train.numel(), val.numel()), (750, 250), "(len(train), len(val)) for N=1000, val_fraction=0.25",
                 hint="The validation part is the LAST round(N * val_fraction) tokens.")
    assert_close(val, tokens[750:], "val", atol=0, hint="Validation is the end of the text, not a random sample.")
    train, val = stage.split_tokens(distinct_tokens(50))
    assert_equal((train.numel(), val.numel()), (45, 5), "(len(train), len(val)) with the default val_fraction",
                 hint="val_fraction defaults to 0.1.")


def test_split_rejects_a_fraction_outside_zero_and_one(stage):
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            stage.split_tokens(distinct_tokens(10), bad)
            fail(f"split_tokens(val_fraction={bad}) did not raise ValueError",
                 "Both parts must be non-empty shares: raise ValueError unless 0 < val_fraction < 1.")
