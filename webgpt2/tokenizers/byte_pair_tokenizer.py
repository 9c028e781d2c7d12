"""Byte-level BPE tokenization, GPT-2 style, in pure Python.

The pure-Python path needs only the standard library (``re``, ``heapq``, ``codecs``) so it
runs in a Pyodide with no packages at all. When Hugging Face ``tokenizers`` is importable,
``tokenize`` hands the work to it instead; both paths give the same ids (the tests hold them
to ``tokenizers`` on the real GPT-2 vocabulary).
"""

from __future__ import annotations

import codecs
import functools
import heapq
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from webgpt2.io.jsonsafe import excerpt, loads
from webgpt2.tokenizers._unicode_classes import (
    LETTER_RANGES,
    NUMBER_RANGES,
    WHITESPACE_RANGES,
    Ranges,
)

PathLike = str | os.PathLike[str]
Vocabulary = Mapping[str, int] | PathLike
Merges = Sequence[str] | Sequence[Sequence[str]] | PathLike

# Pieces longer than this skip the cache: they are rare (long runs of one character
# class), and caching them would let one big input evict every common word.
_MAX_CACHED_PIECE_LENGTH = 64
# Ids index tables (id -> bytes here, the embedding in the model): bounded so that a stray
# huge id is an error, not a multi-gigabyte allocation. Far above any GPT-2 vocabulary.
MAX_TOKEN_ID = (1 << 24) - 1


class TokenizerError(ValueError):
    """A vocabulary, merges list or tokenizer file that cannot make a tokenizer."""


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character.

    Printable Latin-1 bytes map to themselves; the others (controls, space, 0x7F-0xA0,
    0xAD) map to U+0100 onwards, so that no token contains whitespace or a control.

    Example:

    >>> from webgpt2.tokenizers import bytes_to_unicode
    >>> bytes_to_unicode()[ord(" ")], bytes_to_unicode()[ord("a")]
    ('Ġ', 'a')
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def _char_class(ranges: Ranges) -> str:
    # \U escapes keep "-", "]", "^" and "\" literal inside the class.
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@functools.cache
def gpt2_split_pattern() -> re.Pattern[str]:
    r"""GPT-2's pre-tokenizer pattern, with \p{L}, \p{N} and \s spelled out for ``re``.

    ``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+``.
    Python's ``re`` is a backtracking, leftmost-first engine like Oniguruma, so once the
    classes match (see ``_unicode_classes``) the pieces match too.
    """
    letter = _char_class(LETTER_RANGES)
    number = _char_class(NUMBER_RANGES)
    space = _char_class(WHITESPACE_RANGES)
    return re.compile(
        r"'s|'t|'re|'ve|'m|'ll|'d"
        f"| ?[{letter}]+"
        f"| ?[{number}]+"
        f"| ?[^{space}{letter}{number}]+"
        f"|[{space}]+(?![^{space}])"
        f"|[{space}]+"
    )


def read_vocabulary(vocabulary: Vocabulary, label: str = "the vocabulary") -> dict[str, int]:
    """Token -> id from a mapping or a ``vocab.json`` path, checked: tokens are strings, ids
    integers from 0 to ``MAX_TOKEN_ID``. Raises TokenizerError naming the file and entry."""
    if isinstance(vocabulary, (str, os.PathLike)):
        label = os.fspath(vocabulary)
        with open(vocabulary, "rb") as f:
            vocabulary = loads(f.read(), label, error=TokenizerError)
        if not isinstance(vocabulary, dict):
            raise TokenizerError(f"{label} holds {excerpt(vocabulary)}; expected a JSON object "
                                 "of token -> id")
    elif not isinstance(vocabulary, Mapping):
        raise TypeError(
            "vocabulary must be a dict of token -> id or a path to vocab.json, "
            f"got {type(vocabulary).__name__}"
        )
    for token, id in vocabulary.items():
        if not isinstance(token, str):
            raise TokenizerError(f"{label}: token {excerpt(token)} is not a string")
        if not isinstance(id, int) or isinstance(id, bool) or not 0 <= id <= MAX_TOKEN_ID:
            raise TokenizerError(f"{label}: token {excerpt(token)} has id {excerpt(id)}; "
                                 f"expected an integer from 0 to {MAX_TOKEN_ID}")
    return dict(vocabulary)


def read_merges(merges: Merges, label: str = "merges") -> list[tuple[str, str]]:
    """(a, b) pairs in rank order from a list or a ``merges.txt`` path."""
    if isinstance(merges, (str, os.PathLike)):
        label = os.fspath(merges)
        with open(merges, "rb") as f:
            data = f.read()
        try:
            lines = data.decode("utf-8").split("\n")
        except UnicodeDecodeError as error:
            raise TokenizerError(f"{label} is not UTF-8 text: byte {error.start} is "
                                 f"{data[error.start:error.start + 1]!r}") from None
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [line.rstrip("\r") for line in lines if line.rstrip("\r")]
    elif not isinstance(merges, Sequence):
        raise TypeError(
            "merges must be a list of 'a b' strings or [a, b] pairs, or a path to "
            f"merges.txt, got {type(merges).__name__}"
        )
    pairs = []
    for merge in merges:
        if isinstance(merge, str):
            pair = merge.split(" ")
        elif isinstance(merge, (list, tuple)):
            pair = list(merge)
        else:
            pair = []
        if len(pair) != 2 or not all(isinstance(part, str) and part for part in pair):
            raise TokenizerError(f"{label}: a merge must be two tokens 'a b', got "
                                 f"{excerpt(merge)}")
        pairs.append((pair[0], pair[1]))
    return pairs


class BytePairTokenizer:
    """Byte-level BPE tokenizer with GPT-2's pre-tokenizer (KerasHub's ``BytePairTokenizer``).

    Text is split into ``unsplittable_tokens`` (special tokens, kept whole wherever they
    occur) and the text between them; that text is cut into pieces by GPT-2's pattern,
    each piece's UTF-8 bytes are mapped to printable characters and merged by ``merges``
    rank. Ids are those of Hugging Face ``tokenizers`` with a ``ByteLevel`` pre-tokenizer.

    Args:
        vocabulary: token -> id, or a path to ``vocab.json``.
        merges: ``"a b"`` strings or ``(a, b)`` pairs in rank order, or a path to
            ``merges.txt`` (a ``#version`` first line is skipped).
        add_prefix_space: put a space before text that does not start with one, so that
            the first word is tokenized like any other.
        unsplittable_tokens: tokens matched whole before pre-tokenization, such as
            ``"<|endoftext|>"``; each must be in ``vocabulary``.
        use_fast: ``None`` tokenizes with Hugging Face ``tokenizers`` when it imports,
            ``True`` requires it, ``False`` always uses the pure-Python path.
        cache_size: how many pieces (words) keep their ids in the LRU cache.

    Example:

    >>> from webgpt2.tokenizers import BytePairTokenizer
    >>> vocabulary = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|end|>": 5}
    >>> tokenizer = BytePairTokenizer(
    ...     vocabulary, ["a b", "Ġ ab"], unsplittable_tokens=["<|end|>"], use_fast=False
    ... )
    >>> tokenizer.tokenize("ab ab<|end|>")
    [3, 4, 5]
    >>> tokenizer.detokenize([3, 4, 5])
    'ab ab<|end|>'
    >>> tokenizer.tokenize(["ab", "b a"])
    [[3], [1, 2, 0]]
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        merges: Merges,
        *,
        add_prefix_space: bool = False,
        unsplittable_tokens: Sequence[str] | None = None,
        use_fast: bool | None = None,
        cache_size: int = 2**16,
    ) -> None:
        self._vocabulary = read_vocabulary(vocabulary)
        self._merges = read_merges(merges)
        self.add_prefix_space = add_prefix_space
        self.unsplittable_tokens = list(unsplittable_tokens or [])

        for token in self.unsplittable_tokens:
            if token not in self._vocabulary:
                raise ValueError(f"unsplittable token {token!r} is not in the vocabulary")
        for a, b in self._merges:
            # Hugging Face tokenizers refuses (or panics on) such merges; refuse them here
            # so that both paths accept the same files.
            for token in (a, b, a + b):
                if token not in self._vocabulary:
                    raise TokenizerError(f"merge {excerpt(a + ' ' + b)} uses token "
                                         f"{excerpt(token)}, which is not in the vocabulary")
        self._id_to_token = {i: t for t, i in self._vocabulary.items()}
        # A repeated merge keeps its last rank, as tokenizers' BPE builder does.
        self._ranks = {pair: rank for rank, pair in enumerate(self._merges)}
        self._byte_encoder = str.maketrans({chr(b): c for b, c in bytes_to_unicode().items()})
        self._id_to_bytes = self._build_id_to_bytes()

        if self.unsplittable_tokens:
            # Longest first, so that "<|a|>x" wins over a prefix "<|a|>" (leftmost-longest,
            # like the Aho-Corasick matcher in tokenizers).
            alternatives = sorted(self.unsplittable_tokens, key=len, reverse=True)
            self._special_split = re.compile(
                "(" + "|".join(re.escape(t) for t in alternatives) + ")"
            ).split
        else:
            self._special_split = None
        self._findall = gpt2_split_pattern().findall
        self._encode_piece_cached = functools.lru_cache(maxsize=cache_size)(self._encode_piece)

        self._fast = None
        if use_fast is not False:
            try:
                self._fast = self._build_fast_tokenizer()
            except ImportError:
                if use_fast:
                    raise

    # -- vocabulary -----------------------------------------------------------------------

    @property
    def vocabulary(self) -> dict[str, int]:
        """A copy of token -> id."""
        return dict(self._vocabulary)

    @property
    def merges(self) -> list[str]:
        """The merges as ``"a b"`` strings, in rank order."""
        return [f"{a} {b}" for a, b in self._merges]

    @property
    def uses_fast(self) -> bool:
        """Whether ``tokenize`` runs on Hugging Face ``tokenizers``."""
        return self._fast is not None

    def vocabulary_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return len(self._vocabulary)

    def get_vocabulary(self) -> list[str]:
        """All tokens, ordered by id."""
        return [t for t, _ in sorted(self._vocabulary.items(), key=lambda item: item[1])]

    def token_to_id(self, token: str) -> int:
        """The id of ``token``; KeyError if it is not in the vocabulary."""
        if token not in self._vocabulary:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return self._vocabulary[token]

    def id_to_token(self, id: int) -> str:
        """The token of ``id``; ValueError if no token has it."""
        if id not in self._id_to_token:
            raise ValueError(
                f"id {id} is not in the vocabulary (vocabulary_size is {self.vocabulary_size()})"
            )
        return self._id_to_token[id]

    # -- tokenize -------------------------------------------------------------------------

    def tokenize(self, inputs: str | Sequence[str]) -> list[int] | list[list[int]]:
        """Ids of one string, or a list of id lists for a list of strings."""
        try:
            return self._tokenize(inputs)
        except (TypeError, UnicodeEncodeError):
            # Both paths fail on lone surrogates (no UTF-8 form), each its own way.
            texts = [inputs] if isinstance(inputs, str) else inputs
            for text in texts if isinstance(texts, (list, tuple)) else ():
                for index, char in enumerate(text if isinstance(text, str) else ""):
                    if 0xD800 <= ord(char) <= 0xDFFF:
                        raise ValueError(
                            f"text holds a lone surrogate U+{ord(char):04X} at index {index}, "
                            "which has no UTF-8 form"
                        ) from None
            raise

    __call__ = tokenize

    def _tokenize(self, inputs: str | Sequence[str]) -> list[int] | list[list[int]]:
        if isinstance(inputs, str):
            if self._fast is not None:
                return self._fast.encode(inputs, add_special_tokens=False).ids
            return self._tokenize_python(inputs)
        if isinstance(inputs, (list, tuple)):
            for item in inputs:
                if not isinstance(item, str):
                    raise TypeError(
                        f"tokenize expects strings, got a list holding {type(item).__name__}"
                    )
            if self._fast is not None:
                return [e.ids for e in self._fast.encode_batch(inputs, add_special_tokens=False)]
            return [self._tokenize_python(text) for text in inputs]
        raise TypeError(f"tokenize expects a str or a list of str, got {type(inputs).__name__}")

    def _tokenize_python(self, text: str) -> list[int]:
        segments = self._special_split(text) if self._special_split else [text]
        ids: list[int] = []
        encode = self._encode_piece_cached
        # re.split with one capturing group alternates text, special, text, special, ...
        for index, segment in enumerate(segments):
            if index % 2:
                ids.append(self._vocabulary[segment])
                continue
            if not segment:
                continue
            if self.add_prefix_space and not segment.startswith(" "):
                segment = " " + segment
            for piece in self._findall(segment):
                if len(piece) <= _MAX_CACHED_PIECE_LENGTH:
                    ids.extend(encode(piece))
                else:
                    ids.extend(self._encode_piece(piece))
        return ids

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        word = piece.encode("utf-8").decode("latin-1").translate(self._byte_encoder)
        vocabulary = self._vocabulary
        # A symbol missing from the vocabulary is dropped, as tokenizers' BPE does without an
        # unk token; GPT-2's vocabulary holds all 256 byte symbols, so only toy ones miss any.
        return tuple(vocabulary[s] for s in self._bpe(word) if s in vocabulary)

    def _bpe(self, word: str) -> list[str]:
        # Lowest merge rank first, leftmost first among equal ranks: the order of
        # tokenizers' BPE. A heap over a linked list of symbols keeps long words
        # O(n log n) where the textbook "rescan all pairs" loop is quadratic.
        symbols: list[str | None] = list(word)
        n = len(symbols)
        if n < 2:
            return symbols  # type: ignore[return-value]
        rank_of = self._ranks.get
        next_index = list(range(1, n + 1))
        prev_index = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            rank = rank_of((symbols[i], symbols[i + 1]))
            if rank is not None:
                heap.append((rank, i))
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            left = symbols[i]
            j = next_index[i]
            if left is None or j >= n:
                continue
            right = symbols[j]
            # Stale entry: one side has merged since this pair was pushed.
            if rank_of((left, right)) != rank:
                continue
            merged = left + right
            symbols[i] = merged
            symbols[j] = None
            k = next_index[j]
            next_index[i] = k
            if k < n:
                prev_index[k] = i
                new_rank = rank_of((merged, symbols[k]))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, i))
            p = prev_index[i]
            if p >= 0:
                new_rank = rank_of((symbols[p], merged))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, p))
        return [s for s in symbols if s is not None]

    # -- detokenize -----------------------------------------------------------------------

    def _build_id_to_bytes(self) -> list[bytes | None]:
        byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        table: list[bytes | None] = [None] * (max(self._vocabulary.values(), default=-1) + 1)
        for token, id in self._vocabulary.items():
            try:
                table[id] = bytes(byte_decoder[c] for c in token)
            except KeyError:
                # A token outside the byte alphabet (an added token such as "<pad>" with
                # non-byte characters) decodes to its own UTF-8, as in tokenizers.
                table[id] = token.encode("utf-8")
        return table

    def ids_to_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes that ``ids`` stand for (before UTF-8 decoding)."""
        table = self._id_to_bytes
        ids = list(ids)
        try:
            # min() first: a negative id would index from the end of the table.
            if not ids or min(ids) >= 0:
                return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            pass
        for i in ids:
            if not hasattr(i, "__index__"):
                raise TypeError(f"token ids must be integers, got {type(i).__name__}")
            if not 0 <= i < len(table) or table[i] is None:
                raise ValueError(
                    f"token id {i} is not in the vocabulary (vocabulary_size is "
                    f"{self.vocabulary_size()})"
                )
        raise AssertionError("unreachable: every id was valid")

    def detokenize(self, inputs: Sequence[int] | Sequence[Sequence[int]]) -> str | list[str]:
        """Text of one id list, or a list of texts for a batch of id lists.

        Bytes that are not valid UTF-8 become U+FFFD, as in ``tokenizers``' decoder.
        """
        if hasattr(inputs, "tolist"):
            inputs = inputs.tolist()
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(
                f"detokenize expects a list of ids or a list of id lists, got "
                f"{type(inputs).__name__}"
            )
        if inputs and isinstance(inputs[0], (list, tuple)):
            return [self.detokenize(ids) for ids in inputs]
        return self.ids_to_bytes(inputs).decode("utf-8", errors="replace")

    def streaming_detokenizer(self) -> StreamingDetokenizer:
        """A fresh ``StreamingDetokenizer`` over this tokenizer."""
        return StreamingDetokenizer(self)

    # -- fast path ------------------------------------------------------------------------

    def _build_fast_tokenizer(self) -> Any:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        tokenizer = Tokenizer(models.BPE(vocab=self._vocabulary, merges=self._merges))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=self.add_prefix_space, use_regex=True
        )
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in self.unsplittable_tokens]
        )
        return tokenizer


class StreamingDetokenizer:
    """Turns ids into text one at a time, never splitting a UTF-8 character.

    A token can end in the middle of a multi-byte character (GPT-2 spells many emoji and
    CJK characters over two or three tokens); the incomplete bytes are held back until the
    tokens that complete them arrive. Concatenating every ``put`` and the final ``flush``
    gives exactly ``tokenizer.detokenize(all_ids)``.

    Example:

    >>> from webgpt2.tokenizers import BytePairTokenizer, StreamingDetokenizer
    >>> from webgpt2.tokenizers import bytes_to_unicode
    >>> chars = bytes_to_unicode()
    >>> euro = "€".encode()  # three bytes: one token each in this toy vocabulary
    >>> vocabulary = {chars[b]: i for i, b in enumerate(euro)}
    >>> stream = StreamingDetokenizer(BytePairTokenizer(vocabulary, [], use_fast=False))
    >>> [stream.put(0), stream.put(1), stream.put(2), stream.flush()]
    ['', '', '€', '']
    """

    def __init__(self, tokenizer: BytePairTokenizer) -> None:
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def put(self, token_ids: int | Iterable[int]) -> str:
        """Add one id (or several) and return the text they complete."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        return self._decoder.decode(self.tokenizer.ids_to_bytes(ids))

    def flush(self) -> str:
        """Emit what is held back (incomplete bytes become U+FFFD) and start over."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    def reset(self) -> None:
        """Drop anything held back."""
        self._decoder.reset()
