"""GPT-2's tokenizer: byte-level BPE with ``<|endoftext|>`` as its one special token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from webgpt2.io.jsonsafe import excerpt, loads
from webgpt2.tokenizers.byte_pair_tokenizer import (
    BytePairTokenizer,
    Merges,
    TokenizerError,
    Vocabulary,
    read_merges,
    read_vocabulary,
)

END_OF_TEXT = "<|endoftext|>"


class GPT2Tokenizer(BytePairTokenizer):
    """GPT-2's byte-level BPE tokenizer (KerasHub's ``GPT2Tokenizer``).

    ``<|endoftext|>`` is kept whole wherever it appears in the text, and it is GPT-2's
    start, end and padding token alike: ``start_token_id == end_token_id ==
    pad_token_id`` (50256 in GPT-2's own vocabulary).

    Args:
        vocabulary: token -> id, or a path to ``vocab.json``.
        merges: ``"a b"`` strings or ``(a, b)`` pairs in rank order, or a path to
            ``merges.txt`` (its ``#version`` line is skipped).
        **kwargs: passed to ``BytePairTokenizer`` (``use_fast``, ``add_prefix_space``,
            ``cache_size``).

    Example:

    >>> from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
    >>> vocabulary = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|endoftext|>": 5}
    >>> tokenizer = GPT2Tokenizer(vocabulary, ["a b", "Ġ ab"])
    >>> tokenizer.tokenize("ab ab<|endoftext|>")
    [3, 4, 5]
    >>> tokenizer.detokenize([3, 4])
    'ab ab'
    >>> tokenizer.end_token_id, tokenizer.pad_token_id
    (5, 5)

    GPT-2's own files (``vocab.json`` and ``merges.txt``, or ``tokenizer.json``)::

        tokenizer = GPT2Tokenizer.from_pretrained("path/to/gpt2")
        tokenizer.tokenize("Hello world")  # [15496, 995]
    """

    def __init__(self, vocabulary: Vocabulary, merges: Merges, **kwargs: Any) -> None:
        vocabulary = read_vocabulary(vocabulary)
        if END_OF_TEXT not in vocabulary:
            raise TokenizerError(
                f"GPT-2's vocabulary must hold {END_OF_TEXT!r} (its start, end and pad "
                f"token); this one has {len(vocabulary)} tokens and not that one"
            )
        kwargs.setdefault("unsplittable_tokens", [END_OF_TEXT])
        super().__init__(vocabulary, merges, **kwargs)
        self.end_token = END_OF_TEXT
        self.end_token_id = self._vocabulary[END_OF_TEXT]
        self.start_token = END_OF_TEXT
        self.start_token_id = self.end_token_id
        self.pad_token = END_OF_TEXT
        self.pad_token_id = self.end_token_id

    @property
    def special_tokens(self) -> list[str]:
        """The tokens generate_postprocess strips: ``["<|endoftext|>"]``."""
        return [END_OF_TEXT]

    @property
    def special_token_ids(self) -> list[int]:
        """Ids of ``special_tokens``."""
        return [self.end_token_id]

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **kwargs: Any) -> GPT2Tokenizer:
        """Read ``vocab.json`` + ``merges.txt`` from ``folder``, else its ``tokenizer.json``.

        ``tokenizer.json`` is Hugging Face's one-file format: ``model.vocab`` and
        ``model.merges`` (``"a b"`` strings, or ``[a, b]`` pairs since tokenizers 0.20).
        """
        folder = Path(folder)
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        if vocab_file.is_file() and merges_file.is_file():
            return cls(vocab_file, merges_file, **kwargs)
        tokenizer_file = folder / "tokenizer.json"
        if tokenizer_file.is_file():
            label = str(tokenizer_file)
            spec = loads(tokenizer_file.read_bytes(), label, error=TokenizerError)
            model = spec.get("model") if isinstance(spec, dict) else None
            if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" \
                    or not isinstance(model.get("vocab"), dict):
                found = model.get("type") if isinstance(model, dict) else model
                raise TokenizerError(
                    f"{label} does not hold a BPE model with a vocabulary "
                    f"(model.type is {excerpt(found)})"
                )
            vocabulary = read_vocabulary(model["vocab"], f"{label}: model.vocab")
            added_tokens = spec.get("added_tokens") or []
            if not isinstance(added_tokens, list):
                raise TokenizerError(f"{label}: added_tokens is {excerpt(added_tokens)}; "
                                     "expected a list")
            # Some files list <|endoftext|> only among the added tokens.
            for added in added_tokens:
                if not isinstance(added, dict) or not isinstance(added.get("content"), str):
                    raise TokenizerError(f"{label}: added token {excerpt(added)} has no "
                                         "string content")
                vocabulary.setdefault(added["content"], added.get("id"))
            vocabulary = read_vocabulary(vocabulary, f"{label}: added_tokens")
            merges = model.get("merges") or []
            if not isinstance(merges, list):
                raise TokenizerError(f"{label}: model.merges is {excerpt(merges)}; expected "
                                     "a list of 'a b' strings or [a, b] pairs")
            merges = read_merges(merges, f"{label}: model.merges")
            return cls(vocabulary, merges, **kwargs)
        raise FileNotFoundError(f"{folder} has neither vocab.json + merges.txt nor tokenizer.json")
