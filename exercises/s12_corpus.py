"""Stage 12: a plain-text corpus, and the (input, target) windows a language model trains on.

A language model learns to predict the next token. Its training data is one long sequence of
token ids, cut into windows of ``context`` tokens; the target of each window is the same stretch
shifted one token to the left, so that position t of the input is paired with token t + 1:

    tokens  = [10, 11, 12, 13, 14, 15, 16]          N = 7
    context = 3, stride = 3 (the default: windows do not overlap)

    window 0: x = [10, 11, 12]   y = [11, 12, 13]   (x starts at 0, y at 1)
    window 1: x = [13, 14, 15]   y = [14, 15, 16]   (x starts at 3, y at 4)
    a third window would need y up to index 9: there is none, so len(dataset) == 2.

    In general a window starting at s needs tokens s .. s + context, so the last start is
    N - context - 1 and len = (N - context - 1) // stride + 1.

The text itself is *Frankenstein* (Project Gutenberg #84), shipped in data/frankenstein.txt.
Books from Project Gutenberg come wrapped in a licence header and footer that are not part of the
book; they are cut at their marker lines:

    ...licence, credits...
    *** START OF THE PROJECT GUTENBERG EBOOK FRANKENSTEIN ***     <- this line and all above go
    Frankenstein; or, the Modern Prometheus ...                   <- the book is kept
    *** END OF THE PROJECT GUTENBERG EBOOK FRANKENSTEIN ***       <- this line and all below go
    ...licence...

The shipped file is already stripped; a book downloaded from Gutenberg is not.

Validation data is the END of the token sequence, not a random sample of windows: windows that
overlap or sit next to each other share text, and a model would be graded on what it trained on.

Shapes: N the number of tokens, S = context, the length of one window.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "frankenstein.txt"  # the shipped book
START_MARKER = "*** START OF"  # the line that ends a Project Gutenberg header
END_MARKER = "*** END OF"  # the line that starts a Project Gutenberg footer


def strip_gutenberg(text: str) -> str:
    """Cut a Project Gutenberg header and footer off a book, at their marker lines.

    The header is everything up to and including the line that contains START_MARKER
    ("*** START OF ..."); the footer is the line that contains END_MARKER ("*** END OF ...") and
    everything after it. Either marker may be missing: only what is marked is cut.

    Example:
        >>> strip_gutenberg("licence\\n*** START OF THE BOOK ***\\nIt was a dark night.\\n*** END OF THE BOOK ***\\nmore licence")
        'It was a dark night.'
        >>> strip_gutenberg("  no markers here\\n")
        'no markers here'

    Args:
        text: the whole file as one string.
    Returns:
        The book without header and footer, with the whitespace at both ends removed (a text
        without markers comes back unchanged apart from that).
    """
    # 1) header: drop everything up to the end of the START marker's line
    # TODO
    # 2) footer: drop the END marker's line and everything after it
    # TODO
    raise NotImplementedError("s12_corpus: not written yet — python -m grader hint s12_corpus")


def load_corpus(path: str | Path | None = None) -> str:
    """Read a UTF-8 text file and strip its Project Gutenberg header and footer.

    Args:
        path: the file to read; None reads DEFAULT_CORPUS, the shipped data/frankenstein.txt
            (looked up when the function is called, not when it is defined).
    Returns:
        The text, decoded as UTF-8 (the book has curly quotes and em dashes), after strip_gutenberg.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s12_corpus: not written yet — python -m grader hint s12_corpus")


class ShiftedWindows(Dataset):
    """(input, target) windows over one long token sequence; the target is the input shifted by one."""

    def __init__(self, tokens: torch.Tensor, context: int, stride: int | None = None) -> None:
        """Remember the tokens and how to cut them; nothing is copied.

        Args:
            tokens: (N,) torch.long, the whole corpus as token ids.
            context: S, the number of tokens in one input window (>= 1).
            stride: how far each window starts after the previous one (>= 1); None means
                ``context`` (windows side by side, no overlap). A stride below ``context`` makes
                overlapping windows (more examples from the same text).
        Raises:
            ValueError: tokens is not 1-D, context or stride is below 1, or there are fewer than
                context + 1 tokens (not even one window with its target).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s12_corpus: not written yet — python -m grader hint s12_corpus")

    def __len__(self) -> int:
        """The number of windows: (N - context - 1) // stride + 1.

        Returns:
            How many starts s = 0, stride, 2 * stride, ... leave room for the target, whose last
            token is tokens[s + context].
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s12_corpus: not written yet — python -m grader hint s12_corpus")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``index``: the input and, one token further on, its target.

        Args:
            index: 0 <= index < len(self); a negative index counts from the end, as for a list.
        Returns:
            (x, y), both (S,) torch.long: x = tokens[s : s + S] and y = tokens[s + 1 : s + S + 1],
            where s = index * stride. So y[t] is the token that follows x[t].
        Raises:
            IndexError: index out of range (this is what ends a ``for`` loop over the dataset).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s12_corpus: not written yet — python -m grader hint s12_corpus")


def split_tokens(tokens: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a token sequence into training and validation parts at one boundary, without shuffling.

    Example: 100 tokens, val_fraction 0.1 -> train = tokens[:90], val = tokens[90:].

    Args:
        tokens: (N,) the whole corpus.
        val_fraction: the share of the tokens, taken from the END, used for validation
            (0 < val_fraction < 1). The validation part has round(N * val_fraction) tokens.
    Returns:
        (train, val): (N - n_val,) and (n_val,), together exactly ``tokens`` in order; no token
        is in both.
    Raises:
        ValueError: val_fraction is not strictly between 0 and 1.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s12_corpus: not written yet — python -m grader hint s12_corpus")
