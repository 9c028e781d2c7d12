"""GPT-2 preprocessing: text -> padded ``token_ids`` and ``padding_mask``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
from webgpt2.tokenizers.start_end_packer import StartEndPacker

Inputs = str | Sequence[str]


class GPT2Preprocessor:
    """Tokenizes text and packs it for ``GPT2Backbone`` (KerasHub's ``GPT2Preprocessor``).

    Each string becomes ``<|endoftext|>`` + its ids + ``<|endoftext|>`` (start and end
    tokens as ``add_start_token``/``add_end_token`` say), cut to ``sequence_length`` from
    the right and padded on the right with the pad id. ``padding_mask`` is True where a
    position holds a real token (start and end included). A string gives one row (flat
    lists); a list of strings gives a batch (lists of rows). Everything is plain Python.

    Args:
        tokenizer: a ``GPT2Tokenizer``.
        sequence_length: row length.
        add_start_token: put ``tokenizer.start_token_id`` first.
        add_end_token: put ``tokenizer.end_token_id`` last.

    Example:

    >>> from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
    >>> from webgpt2.models.gpt2.gpt2_preprocessor import GPT2Preprocessor
    >>> vocabulary = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|endoftext|>": 5}
    >>> preprocessor = GPT2Preprocessor(
    ...     GPT2Tokenizer(vocabulary, ["a b", "Ġ ab"]), sequence_length=5
    ... )
    >>> preprocessor("ab ab")
    {'token_ids': [5, 3, 4, 5, 5], 'padding_mask': [True, True, True, True, False]}
    >>> preprocessor(["ab", "ab ab ab ab"])["token_ids"]
    [[5, 3, 5, 5, 5], [5, 3, 4, 4, 5]]
    """

    def __init__(
        self,
        tokenizer: GPT2Tokenizer,
        sequence_length: int = 1024,
        add_start_token: bool = True,
        add_end_token: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.add_start_token = add_start_token
        self.add_end_token = add_end_token
        self.packer = StartEndPacker(
            sequence_length=sequence_length,
            start_value=tokenizer.start_token_id,
            end_value=tokenizer.end_token_id,
            pad_value=tokenizer.pad_token_id,
            return_padding_mask=True,
        )

    @property
    def sequence_length(self) -> int:
        """Row length; setting it also sets the packer's."""
        return self._sequence_length

    @sequence_length.setter
    def sequence_length(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"sequence_length must be a positive int, got {value!r}")
        self._sequence_length = value
        if hasattr(self, "packer"):
            self.packer.sequence_length = value

    def __call__(
        self,
        x: Inputs,
        y: Any = None,
        sample_weight: Any = None,
        sequence_length: int | None = None,
    ) -> dict[str, list] | tuple[Any, ...]:
        """``{"token_ids", "padding_mask"}``, or ``(x, y[, sample_weight])`` given ``y``.

        The tuple form is ``keras.utils.pack_x_y_sample_weight``'s: ``y`` and
        ``sample_weight`` pass through untouched.
        """
        if isinstance(x, (list, tuple)) and not x:
            # An empty batch; the packer would read [] as one empty row.
            return pack_x_y_sample_weight({"token_ids": [], "padding_mask": []}, y, sample_weight)
        token_ids, padding_mask = self.packer(
            self.tokenizer.tokenize(x),
            sequence_length=sequence_length or self.sequence_length,
            add_start_value=self.add_start_token,
            add_end_value=self.add_end_token,
        )
        packed = {"token_ids": token_ids, "padding_mask": padding_mask}
        return pack_x_y_sample_weight(packed, y, sample_weight)


def pack_x_y_sample_weight(x: Any, y: Any = None, sample_weight: Any = None) -> Any:
    """``x`` alone, ``(x, y)`` or ``(x, y, sample_weight)``, as Keras packs them."""
    if y is None:
        return x
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)
