r"""Stage 13: BPE tokenizers: byte-level, trained from scratch (GPT-2, Llama 3), and SentencePiece-style (Llama 2).

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
chunks with a pattern; the default is GPT2_PATTERN, GPT-2's own: an English contraction ("'s",
"'t", "'ll"), a run of letters, a run of digits, or a run of other symbols, each with at most one
space in front of it, or a run of whitespace. So "the" and " the" may become tokens, but "e t"
never does, and "don't" is " don" + "'t". (\p{L} is "any letter", \p{N} "any digit" in any
script: Python's re lacks them, so the pattern is compiled with the ``regex`` package.) Cutting
into chunks also makes training fast: a book has about 90 000 chunks but only about 9 000
different ones, so pairs are counted once per different chunk and multiplied by how often that
chunk occurs; after a merge only the few chunks that contain the merged pair are recounted, which
is why training does not slow down as the merges pile up.

Special tokens ("<pad>", "<eos>") take the LAST ids, after the merges; they are whole tokens that
the text never produces unless asked to (``allowed_special=True``). When one special token starts
another ("<|endoftext|>" and "<|endoftext|><|endoftext|>"), the LONGEST one is matched first.

Published tokenizers (GPT-2, Llama 3, SmolLM, Qwen2) are the same algorithm, saved by Hugging Face
as a ``tokenizer.json``: a vocabulary {token: id}, the merges in order, the added tokens, the chunk
pattern, perhaps a Unicode normalization. ``ByteBPE.from_tokenizer_json`` reads one, id for id as
Hugging Face's ``tokenizers`` encodes it. What is new: the file writes bytes as characters (see
``bytes_to_unicode``); its ids are its own, so byte 97 is not necessarily id 97 (``byte_ids``) and
a merge's place in the list, its RANK, decides when it applies, whatever its id (``ranks``: files
converted from OpenAI's tiktoken list merges in an order that need not follow the ids, and list
several merges that make the same token); a vocabulary may lack some bytes (SmolLM2 has no token
for 21 of them), and such a byte is then DROPPED from the text, as ``tokenizers`` does; Qwen2's
file composes accents first (NFC: "e" + U+0301 becomes "é"); and an added token that is not
special (Qwen2.5's "<tool_call>") is found in any text, like a word.

Ids are Python ints throughout; V is the vocabulary size (bytes + merges + special tokens).

SentencePiece-style BPE (Llama 2, TinyLlama, Mistral 7B v0.1, Vicuna) is the other classic scheme;
``SentencePieceBPE`` reads it from a tokenizer.json. Its tokens are pieces of TEXT, not bytes: a
space is written "▁" (U+2581) and stays with the word after it, and one "▁" is put in front of
the text (the "dummy prefix"), so a word has the same tokens at the start of a text as after a
space. The file's merges are applied by RANK (their order in the file, the first the strongest):

    "Hello world" -> "▁Hello▁world" -> ▁ H e l l o ▁ w o r l d -> merges -> "▁Hello" "▁world"

A character missing from the vocabulary falls back to its UTF-8 bytes, each a token written
"<0x..>" that no merge touches ("é" is not in the vocabulary: "<0xC3>" "<0xA9>"), so nothing is
unknown here either and "<unk>" (id 0) is never produced; "<s>" (1) and "</s>" (2) mark the
start and end of a text. Decoding turns "▁" back into spaces, each run of byte tokens back into
its characters, and strips the ONE leading space that the prefix added.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex  # like re, plus \p{L} (any letter) and \p{N} (any digit) in every script

# GPT-2's chunk pattern, as Hugging Face's ByteLevel pre-tokenizer uses it: contractions, letters,
# digits, other symbols (each with at most one space in front), whitespace not followed by text
# (so "a  b" is "a", " ", " b": the last space stays with the word), any other whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# A simpler pattern (the one this kata used first): words (\w: letters, digits and "_" together),
# punctuation, whitespace. The pattern is a choice of training: train(..., pattern=SIMPLE_PATTERN).
SIMPLE_PATTERN = r" ?\w+| ?[^\w\s]+|\s+(?!\S)|\s+"
DIGITS_PATTERN = r"\p{N}|\P{N}+"  # each digit alone (SmolLM cuts with this first, then with GPT-2's)
# Where a stream may be cut without changing its chunks (see encode_iterable): before a space that
# follows a non-space, or between "X\n" and "Y" (X, Y not whitespace). (?r) searches from the end.
SAFE_CUT = regex.compile(r"(?r)(?<=\S) |(?<=\S\n)(?=\S)")
NOT_A_MERGE = float("inf")  # the rank of a pair that no merge joins: after every real rank


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value to one printable character, as tokenizer.json writes bytes.

    A tokenizer.json stores tokens as strings, but a token is a run of BYTES: it need not be
    UTF-8 on its own (the first half of "é" is the lone byte 195), and some bytes are invisible
    (the space, 32; the newline, 10). So every byte is written as ONE visible character: the 188
    bytes that are printable as Latin-1 characters ("!" to "~", "¡" to "¬", "®" to "ÿ") stand for
    themselves (byte 195 is "Ã"); the other 68 (0-32, 127-160, 173), in increasing order, take
    the characters 256, 257, ... (U+0100 "Ā" onwards). So byte 0 is "Ā",
    byte 10 (newline) is "Ċ" (266), byte 32 (space) is "Ġ" (288): the token " the" is written
    "Ġthe" in the file.

    Example:
        >>> table = bytes_to_unicode()
        >>> table[ord("A")], table[32], table[10], table[0], table[173]
        ('A', 'Ġ', 'Ċ', 'Ā', 'Ń')

    Returns:
        {byte: character} for all 256 bytes, every character different.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")


# kata: given
def supported_patterns(config: dict) -> list[str]:
    """The chunk patterns of a tokenizer.json, or ValueError when it is not a byte-level BPE this stage reads.

    Accepted: model type "BPE" without dropout, word prefixes/suffixes or byte fallback; no
    normalizer or a Unicode normalization (see normalization_forms); added tokens, special or not,
    matched as written (no lstrip, rstrip, single_word); and a pre-tokenizer that ends in
    ByteLevel, as the families write it:
        GPT-2:   ByteLevel(use_regex=True)                          -> [GPT2_PATTERN]
        SmolLM:  Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]
                                                                    -> [DIGITS_PATTERN, GPT2_PATTERN]
        Llama 3, Qwen2 (each its own regex P):
                 Sequence[Split(Regex=P, behavior="Isolated"), ByteLevel(use_regex=False)] -> [P]
    Anything else would cut text differently, so it is refused with one line naming what.

    Args:
        config: the parsed tokenizer.json.
    Returns:
        The regex sources, applied one after the other (see ByteBPE.chunks).
    """
    refusal = ("tokenizer.json: {} is not supported; this stage reads byte-level BPE tokenizers "
               "(GPT-2, Llama 3, SmolLM style)")

    model = config.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(refusal.format(f"model type {model.get('type')!r}"))
    for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(option):
            raise ValueError(refusal.format(f"model option {option}={model[option]!r}"))
    normalization_forms(config)  # refuses a normalizer other than Unicode normalization
    for token in config.get("added_tokens") or []:
        if any(token.get(key) for key in ("lstrip", "rstrip", "single_word")):
            raise ValueError(refusal.format(f"added token {token.get('content')!r} with lstrip/rstrip/single_word"))
    pre = config.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds[-1:] != ["ByteLevel"] or steps[-1].get("add_prefix_space"):
        raise ValueError(refusal.format(f"pre-tokenizer {kinds} (expected ByteLevel last, without add_prefix_space)"))
    byte_level_regex = steps[-1].get("use_regex", True)
    if kinds == ["ByteLevel"] and byte_level_regex:
        return [GPT2_PATTERN]
    first = steps[0]
    if kinds == ["Digits", "ByteLevel"] and first.get("individual_digits") and byte_level_regex:
        return [DIGITS_PATTERN, GPT2_PATTERN]
    if (kinds == ["Split", "ByteLevel"] and not byte_level_regex and "Regex" in (first.get("pattern") or {})
            and first.get("behavior") == "Isolated" and not first.get("invert")):
        return [first["pattern"]["Regex"]]
    raise ValueError(refusal.format(f"pre-tokenizer {kinds}"))


# kata: given
def normalization_forms(config: dict) -> list[str]:
    """The Unicode normalizations a tokenizer.json applies to text before cutting it, or ValueError.

    Qwen2's file says ``"normalizer": {"type": "NFC"}``: "e" followed by the combining acute
    accent U+0301 becomes the one character "é" (U+00E9) before anything else, so both spellings
    of "café" give the same ids. NFC, NFD, NFKC and NFKD are unicodedata.normalize's forms; a
    "Sequence" applies its normalizers one after the other; null is none. Any other normalizer
    (lower-casing, replacing, stripping, ...) is refused with one line naming it. (Python's tables
    are those of its Unicode version, 14.0 for Python 3.11: a character assigned later is left as
    it is, where the library's newer tables might change it.)

    Example:
        >>> normalization_forms({"normalizer": {"type": "NFC"}}), normalization_forms({"normalizer": None})
        (['NFC'], [])

    Args:
        config: the parsed tokenizer.json.
    Returns:
        The forms, in the order they apply (unicodedata.normalize(form, text) for each).
    """
    normalizer = config.get("normalizer")
    if normalizer is None:
        steps = []
    elif normalizer.get("type") == "Sequence":
        steps = normalizer.get("normalizers") or []
    else:
        steps = [normalizer]
    forms = [step.get("type") for step in steps]
    others = [form for form in forms if form not in ("NFC", "NFD", "NFKC", "NFKD")]
    if others:
        raise ValueError(f"tokenizer.json: normalizer {others[0]!r} is not supported; this stage applies only "
                         "Unicode normalization (NFC, NFD, NFKC, NFKD), alone or in a Sequence")
    return forms


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


def apply_merges(ids: list[int], ranks: dict[tuple[int, int], int], merges: dict[tuple[int, int], int]) -> list[int]:
    """Merge neighbouring ids, the pair of lowest rank first, ONE place at a time, until no merge applies.

    Repeatedly: among the pairs of neighbouring ids, take the one of lowest rank (the merge learned
    or listed earliest), at its LEFTMOST place when it occurs more than once, and replace that one
    place by merges[pair]; then look again. Stop when no neighbouring pair has a rank.

    Why one place at a time: a merge can make a pair that ranks even earlier than itself. With
    ranks (ab, a) 0 and (a, b) 1, "abab" is a b a b -> ab a b (the leftmost (a, b)) -> aba b
    ((ab, a) now comes first), whereas merging every (a, b) at once (merge_pair) gives ab ab.
    Hugging Face's tokenizers, tiktoken and sentencepiece all merge one place at a time
    (sentencepiece keeps the pairs in a priority queue, best first and leftmost on a tie, and
    merges the top one). Published files can have such ranks; in a tokenizer trained by
    ByteBPE.train a merge only makes pairs learned after it, and the two ways agree.

    Example (merges (97, 98) -> 256 rank 0, (256, 99) -> 257 rank 1; "abcab"):
        >>> apply_merges([97, 98, 99, 97, 98], {(97, 98): 0, (256, 99): 1}, {(97, 98): 256, (256, 99): 257})
        [257, 256]
    [97, 98, 99, 97, 98] -> [256, 99, 97, 98] -> [256, 99, 256] (rank 0, leftmost first, then the
    other) -> [257, 256] (rank 1).

    Args:
        ids: token ids (not modified).
        ranks: {(a, b): its rank}, 0 for the merge applied first; a pair not in it is never merged.
        merges: {(a, b): the id of the token that the two make}, for every pair in ranks.
    Returns:
        A new list of ids.
    """
    # 1) the pair of lowest rank among those present, the leftmost on a tie (min compares ranks, then places)
    # TODO
    # 2) merge that one place
    # TODO
    raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")


def split_out(text: str, tokens: Iterable[str]) -> list[str]:
    """Cut text around every occurrence of the given tokens, the LONGEST first: text, token, text, ..., text.

    Both tokenizers find their special (and added) tokens this way before encoding the text
    between them. Where two tokens could start at the same place ("<|endoftext|>" and
    "<|endoftext|><|endoftext|>"), the longer one is taken.

    Example:
        >>> split_out("a<eos>b<eos>", ["<eos>"])
        ['a', '<eos>', 'b', '<eos>', '']

    Args:
        text: any string.
        tokens: the strings to find (a dict's keys will do); none: the text is not cut.
    Returns:
        The pieces: at odd places the tokens found, at even places the text before, between and
        after them (possibly empty). [text] when there are no tokens.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")


# kata: given
def read_tokenizer_json(path: str | Path) -> dict:
    """The parsed tokenizer.json at path, or ValueError in one line when it is not one.

    Args:
        path: a tokenizer.json.
    Returns:
        Its top-level object.
    Raises:
        ValueError: the file cannot be read, is not UTF-8 JSON, or holds something other than an object.
    """
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as a tokenizer.json: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a tokenizer.json: it holds a {type(config).__name__}, not an object")
    return config


def read_merges(listed: list, token_ids: dict[str, int]) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """A tokenizer.json's model.merges as (merges, ranks): the same for byte-level and SentencePiece files.

    Each merge is written "a b" (two tokens and a space) or ["a", "b"] (newer files); its RANK is
    its place in the list. A pair listed twice takes its LAST place, as ``tokenizers`` does (the
    later entry replaces the earlier one).

    Example (token_ids {"a": 5, "b": 6, "ab": 7}):
        >>> read_merges(["a b"], {"a": 5, "b": 6, "ab": 7})
        ({(5, 6): 7}, {(5, 6): 0})

    Args:
        listed: model.merges, in the file's order.
        token_ids: model.vocab, {token: id}.
    Returns:
        merges {(id of a, id of b): id of a + b}, in the order of the ranks, and ranks {(id of a,
        id of b): place in the list}.
    Raises:
        ValueError: one line, when a merge is not two tokens or names a token missing from model.vocab.
    """
    # TODO: write this (the docstring above is the contract).
    raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")


class ByteBPE:
    """A byte-level BPE tokenizer: 256 byte ids, learned merges, then special tokens."""

    def __init__(self, pattern: str = GPT2_PATTERN) -> None:
        """An untrained tokenizer: bytes only, no merges, no special tokens (vocab_size 256).

        Its state, which train and from_tokenizer_json fill in:
            merges          {(a, b): new id}, in order of priority (the order they were learned)
            ranks           {(a, b): its rank}: its place in that order, 0 for the first merge;
                            encode applies the present pair of LOWEST rank first
            vocab           {id: its bytes}: bytes([i]) for i < 256 until a file says otherwise
            special_tokens  {"<eos>": its id}
            added_tokens    {"<tool_call>": its id}: a file's added tokens that are NOT special
            byte_ids        byte_ids[b] is the id of the one-byte token b: list(range(256)) here;
                            None where a file's vocabulary has no token for byte b
            patterns        [regex.compile(pattern)]: the chunk patterns, applied one after the other
            normalization   Unicode forms applied to text first ([] here; ["NFC"] for Qwen2's file)
            whole_tokens    {bytes: id}, empty unless a file asks for Llama 3's ignore_merges

        Args:
            pattern: the regex that cuts text into chunks (compiled with the ``regex`` package).
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> ByteBPE | SentencePieceBPE:
        """Read a byte-level BPE saved by Hugging Face (GPT-2, Llama 3, SmolLM, Qwen2): the same ids, id for id.

        The file (JSON) has ``model.vocab`` {token: id} with tokens written through
        bytes_to_unicode ("Ġthe" is the bytes b" the"), ``model.merges`` in priority order, each
        either "Ġ t" (two tokens and a space) or ["Ġ", "t"] (newer files), ``added_tokens``
        [{"id", "content", "special"}, ...], ``normalizer`` (see normalization_forms) and
        ``pre_tokenizer`` (see supported_patterns).

        Steps: refuse what this stage does not implement (supported_patterns); each added token
        into special_tokens, or added_tokens when its "special" is false, its bytes its content in
        UTF-8; vocab[id] = every other token's bytes, through bytes_to_unicode backwards;
        byte_ids[b] = the id of the token bytes_to_unicode()[b], or None when the vocabulary has
        no such token; merges and ranks from model.merges (read_merges). If the model says
        ``"ignore_merges": true`` (Llama 3), a chunk whose bytes are a token is that token,
        whatever the merges would do: whole_tokens maps those bytes to their id.

        Three things real files do that a freshly trained tokenizer does not:
        - The RANK of a merge is its place in the list, and it alone says which merge applies
          first. Files converted from tiktoken (Llama 3, Qwen2) list merges in an order that need
          not follow the ids of the tokens they make, and list several merges making the same
          token ("t" + "he" and "th" + "e" both make "the"). A pair listed twice takes its LAST
          place (as ``tokenizers`` does: the later entry replaces the earlier one).
        - A vocabulary may lack a byte token (SmolLM2 has none for 21 bytes: control characters
          such as 4 and 6, and bytes that valid UTF-8 never or hardly uses). With no unknown token
          in the model, ``tokenizers`` DROPS such a byte wherever it occurs, and its neighbours
          merge as if they touched; encode does the same, so decode(encode(text)) lacks it.
        - An added token that is not special is found in any text, allowed_special or not.

        Added tokens are found in the text as written, even one marked ``"normalized": true``;
        ``tokenizers`` would find such a token in the NFC text, which differs only for a token
        that NFC changes, or one that ends next to a combining mark.

        What the file's post_processor adds (Llama 3 puts "<|begin_of_text|>" before the text) is
        not applied: encode gives the ids of the text alone, so prepend the model's BOS id where
        it expects one. The decoder is always ByteLevel's, which decode already is.

        Example (a merge in both forms): "Ġ t" and ["Ġ", "t"] both mean the pair (id of b" ",
        id of b"t"), merged into the id of "Ġt" (b" t").

        A SentencePiece-style file (Llama 2: "▁" for spaces, <0x..> byte tokens; is_sentencepiece_file
        says) is not byte-level: it is handed on, first thing, to SentencePieceBPE.from_tokenizer_json,
        so one call reads either kind.

        Args:
            path: a tokenizer.json.
        Returns:
            A ByteBPE with the file's vocabulary, merges, ranks, added tokens, normalization and
            chunk patterns (a SentencePieceBPE for a SentencePiece-style file).
        Raises:
            ValueError: one line saying why, when the file is not JSON, not a byte-level BPE of
                a supported kind, or lacks a token that a merge needs.
        """
        # 1) added tokens are written as themselves, not through the byte alphabet
        # TODO
        # 2) the vocabulary: each other token string back to its bytes
        # TODO
        # 3) the id of each byte; None for a byte the vocabulary lacks: encode drops it
        # TODO
        # 4) the merges in priority order: a rank is a place in the list
        # TODO
        # 5) Llama 3: a chunk that is a whole token is taken as it is
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def train(self, text: str, vocab_size: int, special_tokens: tuple[str, ...] = ("<pad>", "<eos>"),
              pattern: str = GPT2_PATTERN) -> None:
        """Learn merges from ``text`` until the vocabulary has ``vocab_size`` ids, specials included.

        Steps: cut the text into chunks with ``pattern`` (self.chunks) and count each different
        chunk; turn each into its UTF-8 bytes; count the pairs inside the chunks (each chunk's
        pairs weighted by how often the chunk occurs; pairs never span two chunks). Then for each
        new id 256, 257, ...: take the most frequent pair, on a tie the smallest pair (lowest first
        id, then lowest second id); record the merge (merges and ranks); merge that pair in every chunk. Stop early
        when no chunk has two ids left. Finally the special tokens get the next ids, in order.

        Training is deterministic: the same text and vocab_size give the same merges.

        Why it is fast: the pair counts are kept up to date instead of recounted. A merge changes
        only the chunks that contain the merged pair, so only their pairs move: subtract that
        chunk's old pairs (times its frequency), merge, add its new pairs. Recounting everything
        after each merge costs (merges x all pairs of all chunks); the update recounts only the
        chunks that changed (a quick ``in`` test skips the others), fewer as the pairs get rarer. Counting the different chunks once each, weighted,
        rather than every occurrence, divides the work again by how often words repeat: the book
        trains to vocab_size 512 in about a second.

        Args:
            text: the training text.
            vocab_size: V, the size of the finished vocabulary: 256 bytes + merges + specials.
            special_tokens: strings that get their own ids after the merges; ("<pad>", "<eos>")
                gives pad_id = V - 2 and eos_id = V - 1.
            pattern: the regex that cuts text into chunks, kept for encoding (GPT-2's by default;
                SIMPLE_PATTERN is a simpler one).
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
        """V: 256 byte ids + the merges + the special tokens (the largest id + 1)."""
        return max(self.vocab) + 1

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

    def chunks(self, text: str) -> list[str]:
        """Cut text into chunks: with the first pattern, then each piece with the next pattern, and so on.

        After training there is one pattern (GPT-2's by default); a tokenizer.json may chain two
        (SmolLM: every digit alone, then GPT-2's). The patterns match every character, so the
        chunks joined are the text.

        Example (GPT2_PATTERN):
            >>> ByteBPE().chunks("I'll pay 1999 dollars!!  ok")
            ['I', "'ll", ' pay', ' 1999', ' dollars', '!!', ' ', ' ok']

        Args:
            text: any string.
        Returns:
            The chunks, in order.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one chunk: its bytes as ids (byte_ids), then the merges by rank (apply_merges).

        A byte without an id (byte_ids[b] is None) is dropped before the merges, so its
        neighbours may merge. A chunk in whole_tokens (Llama 3's ignore_merges) is that token.

        A helper for encode (which may also be written without it).

        Example (no merges yet, ByteBPE()): "é" is its two bytes [195, 169]; with the merges of
        apply_merges's example, "abcab" is [97, 98, 99, 97, 98] -> [257, 256].

        Args:
            chunk: one piece of text from self.chunks.
        Returns:
            Its ids.
        """
        # 1) Llama 3's ignore_merges: a chunk that is a token is taken whole
        # TODO
        # 2) the bytes as ids, dropping a byte the vocabulary lacks (as tokenizers does)
        # TODO
        # 3) the merges, the lowest rank first, one place at a time
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def encode(self, text: str, allowed_special: bool = False) -> list[int]:
        """Turn text into token ids.

        The text is normalized (self.normalization: [] unless a file asked, ["NFC"] for Qwen2),
        cut into chunks (self.chunks); each chunk becomes its UTF-8 bytes and the merges are
        applied in the order of their ranks (the order they were learned: 256, then 257, ...).
        Text never seen in training still encodes: at worst one id per byte.

        Added tokens are found first (split_out) and become their single id: those that are not
        special (added_tokens, say "<tool_call>") always, and the special tokens when
        allowed_special; the LONGEST one first where two could start at the same place
        ("<|endoftext|><|endoftext|>" before "<|endoftext|>"). The text between them is
        normalized and encoded as above. With allowed_special False a special token's string
        (say "<eos>") is ordinary text, encoded like the rest.

        Args:
            text: any string.
            allowed_special: if True, a special token's string in the text becomes its id.
        Returns:
            A list of ints in [0, V). decode(encode(text)) == text, except where a file's
            normalization changed the text (NFC joins "e" + U+0301 into "é") or its vocabulary
            lacks a byte of the text (that byte is dropped).
        """
        # 1) split out the added tokens to find: the special ones only when allowed
        # TODO
        # 2) the text between them: normalized, cut into chunks, each chunk encoded once
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def encode_iterable(self, texts: Iterable[str], allowed_special: bool = False) -> Iterator[int]:
        """Encode a long stream of text (say, the lines of an open file) piece by piece, lazily.

        The same ids as encode("".join(texts)), but only a little text is held at a time. The
        pieces cannot simply be encoded one by one: a chunk may continue into the next piece
        ("don" + "'t", or "\\n" + "\\n" which is one chunk "\\n\\n"). So text is held back until
        a SAFE CUT (SAFE_CUT): a space right after a character that is not whitespace, or the
        start of a line after a newline that follows one. No chunk of GPT-2's or Llama 3's
        pattern spans such a place (a space only ever starts a chunk or sits in a run of
        whitespace; a lone newline between two characters is a chunk of its own, or ends one),
        so whatever follows, the text before the cut is cut the same way. Everything before the
        last safe cut is encoded and yielded; the rest waits for more.

        Args:
            texts: any iterable of strings (a file object gives its lines).
            allowed_special: as in encode (a special token never holds a safe cut).
        Yields:
            The ids, in order.
        """
        # 1) the last safe cut, searching backwards from the end (never at 0: nothing before it)
        # TODO
        # 2) encode what comes before it, keep the rest
        # TODO
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


# How SentencePieceBPE cuts "▁" text into chunks, each encoded on its own (and cached): before every
# "▁" that follows another character ("▁▁the▁cat" -> "▁▁the", "▁cat"); a file that splits on "▁"
# (Metaspace split=true) also cuts between two "▁" ("▁", "▁the", "▁cat").
SPACE_RUN_WORDS = re.compile("▁*[^▁]+|▁+")
SPACE_WORDS = re.compile("▁[^▁]*|[^▁]+")


# kata: given
def is_sentencepiece_file(path: str | Path) -> bool:
    """Whether a tokenizer.json is SentencePiece-style (byte fallback, or "▁" for spaces): SentencePieceBPE's to read.

    Args:
        path: a tokenizer.json (False when it cannot be read: ByteBPE's reader then says why).
    Returns:
        True when the model has "byte_fallback": true or the normalizer or pre-tokenizer writes "▁".
    """
    try:
        config = read_tokenizer_json(path)
    except ValueError:
        return False
    steps = json.dumps([config.get("normalizer"), config.get("pre_tokenizer")], ensure_ascii=False)
    return bool((config.get("model") or {}).get("byte_fallback")) or "▁" in steps


# kata: given
def sentencepiece_layout(config: dict) -> dict:
    """How a SentencePiece-style tokenizer.json writes spaces, or ValueError when this stage cannot read it exactly.

    Accepted: model type "BPE" with "byte_fallback": true and no dropout, word prefixes or
    suffixes, or ignore_merges; added tokens that are special, without lstrip, rstrip or
    single_word (one marked "normalized": true is found in the NORMALIZED text in the older
    layout: see SentencePieceBPE.encode); the decoder Sequence[Replace("▁" -> " "),
    ByteFallback, Fuse] with or without Strip(" ", 1, 0) at the end; and spaces written "▁"
    in one of the two layouts found in published files:
        older (Llama 2, TinyLlama):  normalizer Sequence[Prepend("▁"), Replace(" " -> "▁")], no
            pre-tokenizer: every stretch of text between special tokens gets a "▁" in front;
            without the Prepend, none does.
        newer (transformers 5):       no normalizer, pre-tokenizer Metaspace("▁", prepend_scheme, split):
            "always" puts "▁" in front of every stretch that does not already start with one,
            "first" only in front of the first stretch of the text, "never" nowhere; split=true
            also cuts between two "▁".

    Args:
        config: the parsed tokenizer.json.
    Returns:
        {"prepend": "always", "first" or "never", "even_after_space": True when the "▁" is added
        even to text that starts with a space (the older layout), "split": Metaspace's split,
        "strip": whether decoding strips one leading space}.
    """
    refusal = ("tokenizer.json: {} is not supported; this stage reads SentencePiece-style BPE tokenizers "
               "(Llama 2, TinyLlama, Mistral 7B v0.1 style)")
    model = config.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(refusal.format(f"model type {model.get('type')!r}"))
    if model.get("byte_fallback") is not True:
        raise ValueError(refusal.format(f"model byte_fallback={model.get('byte_fallback')!r}"))
    for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"):
        if model.get(option):
            raise ValueError(refusal.format(f"model option {option}={model[option]!r}"))
    normalizer, pre = config.get("normalizer"), config.get("pre_tokenizer")
    for token in config.get("added_tokens") or []:
        if not token.get("special") or any(token.get(key) for key in ("lstrip", "rstrip", "single_word")):
            what = f"added token {token.get('content')!r} (not special, or with lstrip/rstrip/single_word)"
            raise ValueError(refusal.format(what))
    decoder = config.get("decoder") or {}
    steps = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    kinds = [step.get("type") for step in steps]
    strip = {"type": "Strip", "content": " ", "start": 1, "stop": 0}
    if (kinds not in (["Replace", "ByteFallback", "Fuse"], ["Replace", "ByteFallback", "Fuse", "Strip"])
            or steps[0].get("pattern") != {"String": "▁"} or steps[0].get("content") != " "
            or (kinds[-1] == "Strip" and steps[-1] != strip)):
        raise ValueError(refusal.format(f"decoder {kinds}"))
    layout = {"strip": kinds[-1] == "Strip", "split": False}
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    if pre is None and normalizer is not None:
        rules = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
        if rules == [{"type": "Prepend", "prepend": "▁"}, replace]:
            return layout | {"prepend": "always", "even_after_space": True}
        if rules == [replace]:
            return layout | {"prepend": "never", "even_after_space": True}
        raise ValueError(refusal.format(f"normalizer {[rule.get('type') for rule in rules]}"))
    if normalizer is None and pre is not None and pre.get("type") == "Metaspace" and pre.get("replacement") == "▁":
        scheme = pre.get("prepend_scheme") or ("always" if pre.get("add_prefix_space", True) else "never")
        if scheme in ("always", "first", "never"):
            return layout | {"prepend": scheme, "even_after_space": False, "split": bool(pre.get("split", True))}
    what = f"normalizer {(normalizer or {}).get('type')!r} with pre-tokenizer {(pre or {}).get('type')!r}"
    raise ValueError(refusal.format(what))


class SentencePieceBPE:
    """A SentencePiece-style BPE read from a tokenizer.json: "▁" for spaces, merges by rank, byte fallback."""

    def __init__(self) -> None:
        """An empty tokenizer; from_tokenizer_json fills it in.

        Its state:
            vocab           {id: its piece}: "▁the", "<0xC3>", "<s>" (the file's strings, not bytes)
            piece_ids       {piece: id}, the file's model.vocab (a character's id is piece_ids[char])
            byte_ids        byte_ids[b] is the id of the token "<0x%02X>" % b ("<0xC3>" for 195)
            merges          {(a, b): id of the merged piece}, in the file's order
            ranks           {(a, b): its place in that order}: 0 is applied first
            special_tokens  {"<s>": its id}, the file's added tokens
            normalized_tokens {"▁</s>": its id}: those of the special tokens that an older-layout file
                            marks "normalized": true, written as the normalizer writes them; encode
                            finds them in the normalized text, and vocab holds them so
            prepend, even_after_space, split, strip: the file's layout (sentencepiece_layout)
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> SentencePieceBPE:
        """Read a SentencePiece-style BPE saved by Hugging Face (Llama 2, TinyLlama, Mistral): the same ids, id for id.

        The file has ``model.vocab`` {piece: id} with pieces written as text ("▁the"; Llama 2
        gives <unk> <s> </s> ids 0 1 2 and the byte tokens "<0x00>".."<0xFF>" ids 3..258),
        ``model.merges`` in rank order, each "a b" or [a, b], ``added_tokens`` (the special
        tokens) and its layout (see sentencepiece_layout).

        Steps: the layout (sentencepiece_layout refuses what this stage does not implement);
        special_tokens from the added tokens; vocab and piece_ids from model.vocab; byte_ids[b] =
        the id of "<0x%02X>" % b for all 256 bytes; merges and ranks from model.merges
        (read_merges, as for ByteBPE). Ids need not follow the ranks, so keep the ranks.

        An added token marked ``"normalized": true`` in a file with a normalizer (the older
        layout; Meta's Llama 2 upload marks <unk> <s> </s> so) is matched AFTER normalizing, and
        the library normalizes the token itself too: "</s>" is looked for as normalize("</s>") =
        "▁</s>" (normalized_tokens), and that is also the id's piece in vocab, so it decodes as
        " </s>". Without a normalizer (the newer layout) "normalized" changes nothing.

        Args:
            path: a tokenizer.json.
        Returns:
            A SentencePieceBPE with the file's pieces, merges, byte tokens and special tokens.
        Raises:
            ValueError: one line naming the field, when the file is not JSON, not a SentencePiece-style
                BPE of a supported layout, lacks a byte token or a piece that a merge needs, or has
                a piece with "▁" after another character (the chunks would not be exact).
        """
        # 1) the pieces, and the special tokens (written as themselves too)
        # TODO
        # 2) a chunk ends before a "▁" that follows another character: no piece may hold one there
        # TODO
        # 3) every byte has its token: that is what makes any text encodable
        # TODO
        # 4) the merges, in rank order, as ByteBPE reads them
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    # kata: given
    @property
    def vocab_size(self) -> int:
        """V: the largest id + 1 (32 000 for Llama 2)."""
        return max(self.vocab) + 1

    # kata: given
    @property
    def bos_id(self) -> int:
        """The id of "<s>", which starts a text (1 in Llama 2)."""
        return self.special_tokens["<s>"]

    # kata: given
    @property
    def eos_id(self) -> int:
        """The id of "</s>", which ends a text (2 in Llama 2)."""
        return self.special_tokens["</s>"]

    def normalize(self, text: str, first: bool = True) -> str:
        """Write text as the file does: spaces as "▁", and the dummy prefix "▁" in front.

        The prefix: with prepend "always" every stretch of text gets a "▁" in front, with
        "first" only the first (first=True), with "never" none; an empty stretch gets none, and
        neither does one that already starts with "▁" unless even_after_space (the older layout,
        as SentencePiece itself: "  a" is "▁▁▁a" there, "▁▁a" with Metaspace). In the older
        layout this is the file's normalizer, Prepend("▁") then Replace(" " -> "▁"); in the
        newer one Metaspace does the same after the special tokens are found.

        Example (the older layout):
            >>> SentencePieceBPE().normalize("Hello  world")
            '▁Hello▁▁world'

        Args:
            text: a stretch of text (between special tokens, when they are allowed).
            first: whether it is the first stretch of the text.
        Returns:
            The text with spaces as "▁" and the prefix.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def chunks(self, written: str) -> list[str]:
        """Cut normalized text into chunks: before every "▁" that follows another character.

        With the layout's split, before every "▁" (SPACE_WORDS), else before a "▁" that follows
        another character (SPACE_RUN_WORDS). No piece crosses such a place, so each chunk can be
        encoded alone.

        Example:
            >>> SentencePieceBPE().chunks("▁Hello▁▁world")
            ['▁Hello', '▁▁world']

        Args:
            written: text as normalize writes it.
        Returns:
            The chunks; joined, they are the text.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one chunk: each character its piece's id, or its UTF-8 bytes' ids; then the merges (apply_merges).

        A helper for encode (which may also be written without it).

        Args:
            chunk: one piece of text from self.chunks.
        Returns:
            Its ids.
        """
        # 1) a character in the vocabulary is its piece; any other falls back to its bytes
        # TODO
        # 2) the merges by RANK, one place at a time, as sentencepiece does (byte tokens are in no merge)
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def encode(self, text: str, allowed_special: bool = False) -> list[int]:
        """Turn text into token ids, as the tokenizer.json's library does.

        Each stretch of text is normalized (normalize: spaces as "▁", and each stretch may get
        its own "▁" prefix), cut into chunks (chunks), and each different chunk encoded once (a
        cache) by _encode_chunk. The ids of "<s>" and "</s>" are not added: prepend bos_id where
        the model expects it.

        With allowed_special, special tokens are found in TWO passes, as ``tokenizers`` does,
        both with split_out (as in ByteBPE.encode):
            1) the tokens found as written (all but normalized_tokens) are cut out of the
               text itself;
            2) each stretch between them is normalized;
            3) the tokens in normalized_tokens ("normalized": true, older layout only) are cut
               out of that NORMALIZED stretch, written as the normalizer writes them ("▁</s>");
            4) what lies between is cut into chunks and encoded.
        Most files mark every token "normalized": false, and step 3 then finds nothing.

        Example (the vocabulary of the stage's tests):
            "Hello world" -> "▁Hello▁world" -> chunks "▁Hello" "▁world" -> their ids; "é", not a
            piece -> "▁" then the byte tokens <0xC3> <0xA9>.

        Example (two passes: "<s>" marked "normalized": false, "</s>" true), "<s>Hi </s> x</s>":
            1) "<s>" as written:       "" | <s> | "Hi </s> x</s>"
            2) that stretch normalized:          "▁Hi▁</s>▁x</s>"
            3) "▁</s>" in it:                    "▁Hi" | ▁</s> | "▁x</s>"
            4) "▁x</s>" has no "▁</s>" (the last "</s>" follows "x"): its characters are
               encoded as text. So with Llama 2's normalizer a "normalized": true "</s>" is a
               token only after a space or at the start of a stretch, and takes that "▁" with it.

        Args:
            text: any string.
            allowed_special: if True, a special token's string in the text ("</s>") becomes its
                id; if False it is ordinary text.
        Returns:
            A list of ints in [0, V).
        """
        # 1) the tokens found as written; split_out puts each one between two stretches of text
        # TODO
        # 2) the stretch between them, normalized
        # TODO
        # 3) the tokens found in the normalized stretch
        # TODO
        # 4) the rest cut into chunks, each chunk encoded once
        # TODO
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")

    def decode(self, ids: list[int]) -> str:
        """Turn token ids back into text: "▁" -> " ", runs of byte tokens -> their characters, one leading space off.

        A run of consecutive byte tokens is decoded as UTF-8 together (one character may take
        several); a run that is not valid UTF-8 becomes one U+FFFD per byte token (as the
        library's ByteFallback decoder does, unlike errors="replace"). Then, if strip, ONE space
        at the very start is removed: the one the prefix added. A special token decodes to its
        piece in vocab: "</s>", or "▁</s>", so " </s>", for one in normalized_tokens.

        Example (the stage's test vocabulary): the ids of "▁Hello" "▁world" -> " Hello world" ->
        "Hello world"; <0xC3> <0xA9> -> "é"; <0xC3> alone -> "\ufffd".

        Args:
            ids: ints in [0, V).
        Returns:
            The text.
        """
        # TODO: write this (the docstring above is the contract).
        raise NotImplementedError("s13_bpe: not written yet — python -m grader hint s13_bpe")
