"""Stage 1: a vocabulary for the toy tasks, with special tokens and padded batches.

A model reads integers, not symbols. A ``Vocab`` maps each token (a string) to an id and back.
Four special tokens come first, always with the same ids:

    id 0  "<pad>"  fills the end of short sequences in a batch; the model must ignore it
    id 1  "<bos>"  begin of sequence: the decoder's first input
    id 2  "<eos>"  end of sequence: generation stops when the model produces it
    id 3  "<unk>"  stands for any token the vocabulary does not know

Example:
    >>> vocab = Vocab(["a", "b", "c", "b"])
    >>> vocab.encode(["a", "c", "z"], add_bos=True, add_eos=True)
    [1, 4, 6, 3, 2]
    >>> vocab.decode([1, 4, 6, 3, 2, 0, 0])
    ['a', 'c', '<unk>']
    >>> pad_batch([[4, 5, 6], [7]], pad_id=0)
    tensor([[4, 5, 6],
            [7, 0, 0]])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # their ids are their positions: pad 0, bos 1, eos 2, unk 3


class Vocab:
    """A two-way mapping between tokens and ids, with the four special tokens first."""

    def __init__(self, tokens: Iterable[str]) -> None:
        """Build the vocabulary: ids 0-3 are SPECIALS, then each new token in order of first appearance.

        Args:
            tokens: any iterable of strings; repeats and special tokens in it are ignored.
        Attributes:
            itos: list[str], id -> token (``itos[0] == "<pad>"``); ``__len__`` reads it.
            stoi: dict[str, int], token -> id, the inverse of itos; the *_id properties read it.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s01_vocab: not written yet — python -m grader hint s01_vocab")

    # kata: given
    def __len__(self) -> int:
        """The number of ids, specials included."""
        return len(self.itos)

    # kata: given
    @property
    def pad_id(self) -> int:
        """The id of "<pad>" (0)."""
        return self.stoi[PAD]

    # kata: given
    @property
    def bos_id(self) -> int:
        """The id of "<bos>" (1)."""
        return self.stoi[BOS]

    # kata: given
    @property
    def eos_id(self) -> int:
        """The id of "<eos>" (2)."""
        return self.stoi[EOS]

    # kata: given
    @property
    def unk_id(self) -> int:
        """The id of "<unk>" (3)."""
        return self.stoi[UNK]

    def encode(self, tokens: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Map tokens to ids; a token not in the vocabulary becomes unk_id.

        Args:
            tokens: the tokens of one sequence.
            add_bos: put bos_id in front.
            add_eos: put eos_id at the end.
        Returns:
            A list of ints, ``len(tokens) + add_bos + add_eos`` long.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s01_vocab: not written yet — python -m grader hint s01_vocab")

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> list[str]:
        """Map ids back to tokens.

        Args:
            ids: ints, or a 1-D tensor of them.
            skip_special: drop pad, bos and eos (unk is kept: it stands for real content),
                and stop at the first eos: what follows it is not part of the sequence.
        Returns:
            The list of tokens.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s01_vocab: not written yet — python -m grader hint s01_vocab")


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Stack sequences of different lengths into one tensor, padding each at the end.

    Args:
        sequences: B lists of ids (at least one; each may be empty).
        pad_id: the id written after the end of each shorter sequence.
    Returns:
        A (B, S) torch.long tensor, S the length of the longest sequence; row b starts with
        sequences[b] and continues with pad_id.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s01_vocab: not written yet — python -m grader hint s01_vocab")
