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
chunks with a pattern; the default is GPT2_PATTERN, GPT-2's own: an English contraction ("'s",
"'t", "'ll"), a run of letters, a run of digits, or a run of other symbols, each with at most one
space in front of it, or a run of whitespace. So "the" and " the" may become tokens, but "e t"
never does, and "don't" is " don" + "'t". (\\p{L} is "any letter", \\p{N} "any digit" in any
script: Python's re lacks them, so the pattern is compiled with the ``regex`` package.) Cutting
into chunks also makes training fast: a book has about 90 000 chunks but only about 9 000
different ones, so pairs are counted once per different chunk and multiplied by how often that
chunk occurs; after a merge only the few chunks that contain the merged pair are recounted, which
is why training does not slow down as the merges pile up.

Special tokens ("<pad>", "<eos>") take the LAST ids, after the merges; they are whole tokens that
the text never produces unless asked to (``allowed_special=True``). When one special token starts
another ("<|endoftext|>" and "<|endoftext|><|endoftext|>"), the LONGEST one is matched first.

Published tokenizers (GPT-2, Llama 3, SmolLM) are the same algorithm, saved by Hugging Face as a
``tokenizer.json``: a vocabulary {token: id}, the merges in order, the special tokens, and the
chunk pattern. ``ByteBPE.from_tokenizer_json`` reads one. The only new idea is how the file
writes bytes: see ``bytes_to_unicode``. Ids there are the file's: byte 97 is not necessarily id
97, so the tokenizer keeps ``byte_ids`` (the id of each single byte).

Ids are Python ints throughout; V is the vocabulary size (bytes + merges + special tokens).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex  # like re, plus \p{L} (any letter) and \p{N} (any digit) in every script

# GPT-2's chunk pattern, as Hugging Face's ByteLevel pre-tokenizer uses it: contractions, letters,
# digits, other symbols (each with at most one space in front), whitespace not followed by text
# (so "a  b" is "a", " ", " b": the last space stays with the word), any other whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The pattern before this stage followed the real one: words (\w: letters, digits and "_"),
# punctuation, whitespace. Kept to show that the pattern is a choice: train(..., pattern=...).
SIMPLE_PATTERN = r" ?\w+| ?[^\w\s]+|\s+(?!\S)|\s+"
DIGITS_PATTERN = r"\p{N}|\P{N}+"  # each digit alone (SmolLM cuts with this first, then with GPT-2's)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value to one printable character, as tokenizer.json writes bytes.

    A tokenizer.json stores tokens as strings, but a token is a run of BYTES, and bytes such as
    the space (32), newline (10) or half of "é" (195) would be invisible, or not text at all. So
    every byte gets a visible stand-in: the 188 bytes that are printable characters already ("!"
    to "~", "¡" to "¬", "®" to "ÿ") stand for themselves; the other 68 (0-32, 127-160, 173), in
    increasing order, take the characters 256, 257, ... (U+0100 "Ā" onwards). So byte 0 is "Ā",
    byte 10 (newline) is "Ċ" (266), byte 32 (space) is "Ġ" (288): the token " the" is written
    "Ġthe" in the file.

    Example:
        >>> table = bytes_to_unicode()
        >>> table[ord("A")], table[32], table[10], table[0], table[173]
        ('A', 'Ġ', 'Ċ', 'Ā', 'Ń')

    Returns:
        {byte: character} for all 256 bytes, every character different.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    # 1) the 68 other bytes, in increasing order, take 256, 257, ...
    others = [byte for byte in range(256) if byte not in table]
    for n, byte in enumerate(others):
        table[byte] = chr(256 + n)
    return dict(sorted(table.items()))


# kata: given
def supported_patterns(config: dict) -> list[str]:
    """The chunk patterns of a tokenizer.json, or ValueError when it is not a byte-level BPE this stage reads.

    Accepted: model type "BPE" without dropout, word prefixes/suffixes or byte fallback; no
    normalizer; added tokens that are special and matched as written (no lstrip, rstrip,
    single_word); and a pre-tokenizer that ends in ByteLevel, as the three families write it:
        GPT-2:   ByteLevel(use_regex=True)                          -> [GPT2_PATTERN]
        SmolLM:  Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]
                                                                    -> [DIGITS_PATTERN, GPT2_PATTERN]
        Llama 3: Sequence[Split(Regex=P, behavior="Isolated"), ByteLevel(use_regex=False)] -> [P]
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
    if config.get("normalizer") is not None:
        raise ValueError(refusal.format(f"normalizer {config['normalizer'].get('type')!r}"))
    for token in config.get("added_tokens") or []:
        if not token.get("special") or any(token.get(key) for key in ("lstrip", "rstrip", "single_word")):
            what = f"added token {token.get('content')!r} (not special, or with lstrip/rstrip/single_word)"
            raise ValueError(refusal.format(what))
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
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


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
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2  # both ids are consumed: occurrences cannot overlap
        else:
            merged.append(ids[i])
            i += 1
    return merged


class ByteBPE:
    """A byte-level BPE tokenizer: 256 byte ids, learned merges, then special tokens."""

    def __init__(self, pattern: str = GPT2_PATTERN) -> None:
        """An untrained tokenizer: bytes only, no merges, no special tokens (vocab_size 256).

        Args:
            pattern: the regex that cuts text into chunks (compiled with the ``regex`` package).
        """
        self.merges: dict[tuple[int, int], int] = {}  # (a, b) -> new id, in order of priority
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}  # id -> its bytes
        self.special_tokens: dict[str, int] = {}  # "<eos>" -> its id
        self.byte_ids: list[int] = list(range(256))  # byte_ids[b]: the id of the one-byte token b
        self.patterns: list[regex.Pattern] = [regex.compile(pattern)]  # cut text, one after the other
        self.whole_tokens: dict[bytes, int] = {}  # chunks taken whole, merges skipped (Llama 3's ignore_merges)

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> ByteBPE:
        """Read a byte-level BPE saved by Hugging Face (GPT-2, Llama 3, SmolLM): the same ids, id for id.

        The file (JSON) has ``model.vocab`` {token: id} with tokens written through
        bytes_to_unicode ("Ġthe" is the bytes b" the"), ``model.merges`` in priority order, each
        either "Ġ t" (two tokens and a space) or ["Ġ", "t"] (newer files), ``added_tokens``
        [{"id", "content", "special"}, ...], and ``pre_tokenizer`` (see supported_patterns).

        Steps: refuse what this stage does not implement (supported_patterns); vocab[id] = the
        token's bytes (an added token's bytes are its content as UTF-8); byte_ids[b] = the id of
        the token bytes_to_unicode()[b]; for each merge a b in order, merges[(id of a, id of b)] =
        the id of the token a + b; each special added token into special_tokens. If the model
        says ``"ignore_merges": true`` (Llama 3), a chunk whose bytes are a token is that token,
        whatever the merges would do: whole_tokens maps those bytes to their id.

        Encoding applies the present merge with the LOWEST new id first, so the file's merge
        order must agree with its ids (it does in every file Hugging Face writes: a merge's
        token is added after its parts); a file where it does not is refused.

        Example (a merge in both forms): "Ġ t" and ["Ġ", "t"] both mean the pair (id of b" ",
        id of b"t"), merged into the id of "Ġt" (b" t").

        Args:
            path: a tokenizer.json.
        Returns:
            A ByteBPE with the file's vocabulary, merges, special tokens and chunk patterns.
        Raises:
            ValueError: one line saying why, when the file is not JSON, not a byte-level BPE of
                a supported kind, or lacks a token that a merge or a byte needs.
        """
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read {path} as a tokenizer.json: {error}") from None
        patterns = supported_patterns(config)
        model = config["model"]
        bpe = cls()
        bpe.patterns = [regex.compile(pattern) for pattern in patterns]
        # 1) the vocabulary: each token string back to its bytes
        to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
        token_ids: dict[str, int] = model.get("vocab") or {}
        bpe.vocab = {}
        for token, token_id in token_ids.items():
            if not all(char in to_byte for char in token):
                raise ValueError(f"tokenizer.json: token {token!r} is not written in the byte alphabet: "
                                 "not a byte-level BPE")
            bpe.vocab[token_id] = bytes(to_byte[char] for char in token)
        # 2) special tokens are written as themselves, not through the byte alphabet
        bpe.special_tokens = {}
        for added in config.get("added_tokens") or []:
            bpe.special_tokens[added["content"]] = added["id"]
            bpe.vocab[added["id"]] = added["content"].encode("utf-8")
        # 3) every byte must have a token: that is what makes any text encodable
        alphabet = bytes_to_unicode()
        missing = [byte for byte in range(256) if alphabet[byte] not in token_ids]
        if missing:
            raise ValueError(f"tokenizer.json: the vocabulary lacks {len(missing)} of the 256 byte tokens (e.g. byte "
                             f"{missing[0]}, written {alphabet[missing[0]]!r}): not a byte-level BPE")
        bpe.byte_ids = [token_ids[alphabet[byte]] for byte in range(256)]
        # 4) the merges, in priority order, each "a b" or [a, b]
        bpe.merges, last_id = {}, -1
        for merge in model.get("merges") or []:
            a, b = merge.split(" ") if isinstance(merge, str) else merge
            if a not in token_ids or b not in token_ids or a + b not in token_ids:
                raise ValueError(f"tokenizer.json: the merge {a!r} + {b!r} names a token missing from the vocabulary")
            new_id = token_ids[a + b]
            if new_id < last_id:
                raise ValueError(f"tokenizer.json: the merge {a!r} + {b!r} comes after a merge with a higher id; "
                                 "this stage needs merges in the order of their ids")
            bpe.merges[(token_ids[a], token_ids[b])] = last_id = new_id
        # 5) Llama 3: a chunk that is a whole token is taken as it is
        if model.get("ignore_merges"):
            specials = set(bpe.special_tokens.values())
            bpe.whole_tokens = {data: i for i, data in bpe.vocab.items() if i not in specials}
        return bpe

    def train(self, text: str, vocab_size: int, special_tokens: tuple[str, ...] = ("<pad>", "<eos>"),
              pattern: str = GPT2_PATTERN) -> None:
        """Learn merges from ``text`` until the vocabulary has ``vocab_size`` ids, specials included.

        Steps: cut the text into chunks with ``pattern`` (self.chunks) and count each different chunk; turn
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
            pattern: the regex that cuts text into chunks, kept for encoding (GPT-2's by default;
                SIMPLE_PATTERN is a simpler one).
        Raises:
            ValueError: vocab_size is smaller than 256 + len(special_tokens).
        """
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least 256 + {len(special_tokens)} special tokens, got {vocab_size}")
        # start again from bytes only, even if this tokenizer was trained before
        self.__init__(pattern)
        # 1) the different chunks as byte lists, each with how often it occurs in the text
        chunks = [[list(chunk.encode("utf-8")), n] for chunk, n in Counter(self.chunks(text)).items()]
        # 2) count the pairs once; after each merge only the chunks that change are recounted
        counts: dict[tuple[int, int], int] = {}
        for ids, n in chunks:
            get_pair_counts(ids, counts, weight=n)
        for new_id in range(256, 256 + n_merges):
            if not counts:
                break  # every chunk is a single token: nothing left to merge
            # 3) the most frequent pair; on a tie the smallest (a rule that ignores dict order)
            pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
            self.merges[pair] = new_id
            self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
            # 4) merge it in every chunk that has it, moving that chunk's counts from old pairs to new
            for chunk in chunks:
                ids, n = chunk
                if pair[0] not in ids:
                    continue  # a quick test that skips most chunks
                merged = merge_pair(ids, pair, new_id)
                if len(merged) == len(ids):
                    continue  # pair[0] was there, but not followed by pair[1]
                for old in zip(ids, ids[1:]):
                    counts[old] -= n
                    if counts[old] == 0:
                        del counts[old]
                get_pair_counts(merged, counts, weight=n)
                chunk[0] = merged
        # 5) special tokens take the last ids
        for token in special_tokens:
            self.special_tokens[token] = len(self.vocab)
            self.vocab[len(self.vocab)] = token.encode("utf-8")

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
        pieces = [text]
        for pattern in self.patterns:
            pieces = [chunk for piece in pieces for chunk in pattern.findall(piece)]
        return pieces

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one chunk: its bytes as ids (byte_ids), then the merges, the lowest new id first.

        A helper for encode (which may also be written without it).

        Args:
            chunk: one piece of text from self.chunks.
        Returns:
            Its ids.
        """
        data = chunk.encode("utf-8")
        if data in self.whole_tokens:
            return [self.whole_tokens[data]]  # Llama 3's ignore_merges: a known token is taken whole
        ids = [self.byte_ids[byte] for byte in data]
        while len(ids) > 1:
            # the pair learned EARLIEST among those present, not the most frequent one here
            pair = min(get_pair_counts(ids), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break  # no learned merge applies any more
            ids = merge_pair(ids, pair, self.merges[pair])
        return ids

    def encode(self, text: str, allowed_special: bool = False) -> list[int]:
        """Turn text into token ids.

        The text is cut into chunks (self.chunks); each chunk becomes its UTF-8 bytes and the
        merges are applied in the order they were learned (the lowest new id first: 256, then
        257, ...). Text never seen in training still encodes: at worst one id per byte.

        Args:
            text: any string.
            allowed_special: if True, a special token's string in the text (say "<eos>") becomes
                its single id, the LONGEST one first where two could start at the same place
                ("<|endoftext|><|endoftext|>" before "<|endoftext|>"); if False it is ordinary
                text, encoded like the rest.
        Returns:
            A list of ints in [0, V); decode(encode(text)) == text.
        """
        if allowed_special and self.special_tokens:
            # the capturing group keeps the special tokens in the result of re.split; the regex
            # takes the first alternative that matches, so the longest must come first
            longest_first = sorted(self.special_tokens, key=len, reverse=True)
            parts = re.split("(" + "|".join(re.escape(token) for token in longest_first) + ")", text)
        else:
            parts = [text]
        ids: list[int] = []
        cache: dict[str, list[int]] = {}  # a book repeats its chunks: encode each different one once
        for part in parts:
            if allowed_special and part in self.special_tokens:
                ids.append(self.special_tokens[part])
                continue
            for chunk in self.chunks(part):
                if chunk not in cache:
                    cache[chunk] = self._encode_chunk(chunk)
                ids.extend(cache[chunk])
        return ids

    def encode_iterable(self, texts: Iterable[str], allowed_special: bool = False) -> Iterator[int]:
        """Encode a long stream of text (say, the lines of an open file) piece by piece, lazily.

        The same ids as encode("".join(texts)), but only a little text is held at a time. The
        pieces cannot simply be encoded one by one: a chunk may continue into the next piece
        ("don" + "'t", or "\n" + "\n" which is one chunk "\n\n"). So text is held back until a
        SAFE CUT: a space right after a character that is not whitespace. No chunk of GPT-2's
        or Llama 3's pattern holds such a pair (a space only ever starts a chunk, or sits in a
        run of whitespace), so whatever follows, the text before the cut is cut the same way.
        Everything before the last safe cut is encoded and yielded; the rest waits for more.

        Args:
            texts: any iterable of strings (a file object gives its lines).
            allowed_special: as in encode (a special token never holds a safe cut).
        Yields:
            The ids, in order.
        """
        held = ""
        for text in texts:
            held += text
            # 1) the last safe cut: a space after a character that is not whitespace
            cut = held.rfind(" ")
            while cut > 0 and held[cut - 1].isspace():
                cut = held.rfind(" ", 0, cut)
            # 2) encode what comes before it, keep the rest
            if cut > 0:
                yield from self.encode(held[:cut], allowed_special)
                held = held[cut:]
        yield from self.encode(held, allowed_special)

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
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")
