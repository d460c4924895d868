"""Stage 13: a byte-level BPE tokenizer, trained from scratch (the scheme of GPT-2 and Llama 3).

Text is first turned into its UTF-8 bytes, so ids 0..255 are the 256 byte values and ANY string,
in any script, with emoji, can be encoded: nothing is ever unknown. Byte-pair encoding then learns
shortcuts: it repeatedly finds the most frequent pair of neighbouring ids and gives that pair a new
id (256, 257, ...), replacing it everywhere. Encoding replays those merges in the order they were
learned; decoding glues the bytes of each id back together and decodes the whole byte string as
UTF-8 at once (one character can span several tokens: "é" is the two bytes 195 169).

Worked example (Wikipedia's, also minbpe's first test), text "aaabdaaabac", a=97 b=98 c=99 d=100:

    ids    [97, 97, 97, 98, 100, 97, 97, 97, 98, 97, 99]
    pairs  (97, 97): 4   (97, 98): 2   (98, 100): 1   (100, 97): 1   (98, 97): 1   (97, 99): 1
    merge 1: (97, 97) -> 256   "aa", the most frequent pair
    ids    [256, 97, 98, 100, 256, 97, 98, 97, 99]          ("aaa" -> "aa" "a": left to right)
    pairs  (256, 97): 2   (97, 98): 2   (98, 100): 1   (100, 256): 1   (98, 97): 1   (97, 99): 1
    merge 2: (97, 98) -> 257   a tie at 2: the SMALLER pair wins ((97, 98) < (256, 97))
    ids    [256, 257, 100, 256, 257, 97, 99]
    merge 3: (256, 257) -> 258  "aaab", the only pair left that occurs twice
    ids    [258, 100, 258, 97, 99]                          11 ids became 5: "XdXac" on Wikipedia

The tie rule (highest count, then the smallest pair) is the one Hugging Face's tokenizers use; it
does not depend on the order in which pairs were counted, so any correct counting gives the same
merges.

Pairs never cross the edge of a *chunk*. Before training and encoding, the text is cut into
chunks with CHUNK_PATTERN (a simplified GPT-2 pattern): a word with the space in front of it,
a run of punctuation, or whitespace. So "the" and " the" may become tokens, but "e t" never
does. Cutting into chunks also makes training fast: a book has about 90 000 chunks but only
about 9 000 different ones, so pairs are counted once per different chunk and multiplied by
how often that chunk occurs.

Special tokens ("<pad>", "<eos>") take the LAST ids, after the merges; they are whole tokens that
the text never produces unless asked to (``allowed_special=True``).

Ids are Python ints throughout; V is the vocabulary size (bytes + merges + special tokens).
"""

from __future__ import annotations

import re
from collections import Counter

CHUNK_PATTERN = re.compile(r" ?\w+| ?[^\w\s]+|\s+(?!\S)|\s+")  # word, punctuation, whitespace


def get_pair_counts(ids: list[int], counts: dict | None = None, weight: int = 1) -> dict[tuple[int, int], int]:
    """Count how often each pair of neighbouring ids occurs.

    Example:
        >>> get_pair_counts([1, 2, 3, 1, 2])
        {(1, 2): 2, (2, 3): 1, (3, 1): 1}

    Args:
        ids: a list of token ids.
        counts: None, or a dict to add to (it is updated in place and returned), so the pairs
            of many chunks can be counted into one dict.
        weight: what each occurrence adds (the number of times this chunk occurs in the text).
    Returns:
        {(a, b): count}: ``counts`` itself when it was given (with these pairs added), else a
        new dict.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right.

    Occurrences do not overlap: in [7, 7, 7] the pair (7, 7) is found at the start, and the third
    7 is left alone.

    Example:
        >>> merge_pair([5, 6, 6, 7, 9, 1], (6, 7), 99)
        [5, 6, 99, 9, 1]
        >>> merge_pair([7, 7, 7], (7, 7), 256)
        [256, 7]

    Args:
        ids: a list of token ids (not modified).
        pair: the two neighbouring ids to replace.
        new_id: the id that stands for the pair.
    Returns:
        A new list.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")


class ByteBPE:
    """A byte-level BPE tokenizer: 256 byte ids, learned merges, then special tokens."""

    def __init__(self) -> None:
        """An untrained tokenizer: bytes only, no merges, no special tokens (vocab_size 256)."""
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def train(self, text: str, vocab_size: int, special_tokens: tuple[str, ...] = ("<pad>", "<eos>")) -> None:
        """Learn merges from ``text`` until the vocabulary has ``vocab_size`` ids, specials included.

        Steps: cut the text into chunks with CHUNK_PATTERN and count each different chunk; turn
        each into its UTF-8 bytes; count the pairs inside the chunks (each chunk's pairs weighted by
        how often the chunk occurs; pairs never span two chunks). Then for each new id 256, 257,
        ...: take the most frequent pair, on a tie the smallest pair (lowest first id, then lowest
        second id); record the merge; merge that pair in every chunk. Stop early when no chunk has
        two ids left. Finally the special tokens get the next ids, in the order given.

        Training is deterministic: the same text and vocab_size give the same merges. Counting
        over the different chunks, not the whole id list, and after a merge recounting only the
        chunks that changed, is what makes training on a book to vocab_size 512 take a second.

        Args:
            text: the training text.
            vocab_size: V, the size of the finished vocabulary: 256 bytes + merges + specials.
            special_tokens: strings that get their own ids after the merges; ("<pad>", "<eos>")
                gives pad_id = V - 2 and eos_id = V - 1.
        Raises:
            ValueError: vocab_size is smaller than 256 + len(special_tokens).
        """
        # 1) the different chunks as byte lists, each with how often it occurs in the text
        # TODO
        # 2) count the pairs once; after each merge only the chunks that change are recounted
        # TODO
        # 3) the most frequent pair; on a tie the smallest (a rule that ignores dict order)
        # TODO
        # 4) merge it in every chunk that has it, moving that chunk's counts from old pairs to new
        # TODO
        # 5) special tokens take the last ids
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    # kata: given
    @property
    def vocab_size(self) -> int:
        """V: 256 byte ids + the merges + the special tokens."""
        return len(self.vocab)

    # kata: given
    @property
    def pad_id(self) -> int:
        """The id of "<pad>" (V - 2 after training with the default special tokens)."""
        return self.special_tokens["<pad>"]

    # kata: given
    @property
    def eos_id(self) -> int:
        """The id of "<eos>" (V - 1 after training with the default special tokens)."""
        return self.special_tokens["<eos>"]

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one chunk: its UTF-8 bytes, then the merges replayed in the order they were learned.

        A helper for encode (which may also be written without it).

        Args:
            chunk: one piece of text from CHUNK_PATTERN.
        Returns:
            Its ids.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def encode(self, text: str, allowed_special: bool = False) -> list[int]:
        """Turn text into token ids.

        The text is cut into chunks with CHUNK_PATTERN; each chunk becomes its UTF-8 bytes and
        the merges are applied in the order they were learned (merge 256 first, then 257, ...).
        Text never seen in training still encodes: at worst one id per byte.

        Args:
            text: any string.
            allowed_special: if True, a special token's string in the text (say "<eos>") becomes
                its single id; if False it is ordinary text, encoded like the rest.
        Returns:
            A list of ints in [0, V); decode(encode(text)) == text.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def decode(self, ids: list[int]) -> str:
        """Turn token ids back into text.

        Join the BYTES of all the ids first and decode the result as UTF-8 once: a character can
        be split across tokens, and decoding token by token would break it. A byte sequence that
        is not valid UTF-8 (possible for arbitrary ids) becomes U+FFFD (errors="replace").

        Args:
            ids: ints in [0, V); a special token's id decodes to its string ("<eos>").
        Returns:
            The text.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")
