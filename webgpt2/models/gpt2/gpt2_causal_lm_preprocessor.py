"""GPT-2 causal-LM preprocessing: next-token labels, and prompts in and out of generate."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from webgpt2.models.gpt2.gpt2_preprocessor import GPT2Preprocessor, Inputs


def _rows(value: Any) -> tuple[list, bool]:
    """(list of rows, whether the input was a batch); accepts lists or array-likes."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    value = list(value)
    batched = bool(value) and isinstance(value[0], (list, tuple))
    return ([list(row) for row in value] if batched else [value]), batched


class GPT2CausalLMPreprocessor(GPT2Preprocessor):
    """Preprocessing for ``GPT2CausalLM`` (KerasHub's ``GPT2CausalLMPreprocessor``).

    Called on text it returns ``(x, y, sample_weight)`` for scoring or training: ``x`` is
    ``{"token_ids", "padding_mask"}`` of length ``sequence_length``, ``y`` is the same ids
    shifted left by one (the next token at each position) and ``sample_weight`` the
    shifted padding mask. ``generate_preprocess`` packs prompts for generation (start
    token, no end token, right padding) and ``generate_postprocess`` turns generated rows
    back into text.

    Example:

    >>> from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
    >>> from webgpt2.models.gpt2.gpt2_causal_lm_preprocessor import (
    ...     GPT2CausalLMPreprocessor,
    ... )
    >>> vocabulary = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|endoftext|>": 5}
    >>> preprocessor = GPT2CausalLMPreprocessor(
    ...     GPT2Tokenizer(vocabulary, ["a b", "Ġ ab"]), sequence_length=4
    ... )
    >>> x, y, sample_weight = preprocessor("ab ab")
    >>> x["token_ids"], y, sample_weight
    ([5, 3, 4, 5], [3, 4, 5, 5], [True, True, True, False])
    >>> prompt = preprocessor.generate_preprocess("ab")
    >>> prompt
    {'token_ids': [5, 3, 5, 5], 'padding_mask': [True, True, False, False]}
    >>> preprocessor.generate_postprocess(prompt)
    'ab'
    """

    def __call__(
        self,
        x: Inputs,
        y: Any = None,
        sample_weight: Any = None,
        sequence_length: int | None = None,
    ) -> tuple[dict[str, list], list, list]:
        """``(x, y, sample_weight)`` with ``y`` the next token at each position."""
        if y is not None or sample_weight is not None:
            # The labels come from x itself; KerasHub ignores given ones the same way.
            warnings.warn(
                "GPT2CausalLMPreprocessor makes y and sample_weight from x; "
                "the given y and sample_weight are ignored",
                stacklevel=2,
            )
        if isinstance(x, (list, tuple)) and not x:
            # An empty batch; the packer would read [] as one empty row.
            return {"token_ids": [], "padding_mask": []}, [], []
        sequence_length = sequence_length or self.sequence_length
        # One extra position: the last token is only ever a label, never an input.
        token_ids, padding_mask = self.packer(
            self.tokenizer.tokenize(x),
            sequence_length=sequence_length + 1,
            add_start_value=self.add_start_token,
            add_end_value=self.add_end_token,
        )
        id_rows, batched = _rows(token_ids)
        mask_rows, _ = _rows(padding_mask)
        inputs = {
            "token_ids": [row[:-1] for row in id_rows],
            "padding_mask": [row[:-1] for row in mask_rows],
        }
        labels = [row[1:] for row in id_rows]
        weights = [row[1:] for row in mask_rows]
        if not batched:
            inputs = {key: rows[0] for key, rows in inputs.items()}
            return inputs, labels[0], weights[0]
        return inputs, labels, weights

    def generate_preprocess(self, x: Inputs, sequence_length: int | None = None) -> dict[str, list]:
        """Pack prompts for ``generate``: start token, the prompt, right padding.

        Unlike KerasHub this never cuts a prompt: one that does not fit raises.
        """
        sequence_length = sequence_length or self.sequence_length
        prompts = [x] if isinstance(x, str) else x
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompt must be a str or a list of str, got {type(x).__name__}")
        if not prompts:
            raise ValueError("prompt is empty: got an empty list of prompts")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__} at index {i}")
            if not prompt:
                where = "" if isinstance(x, str) else f" (index {i})"
                raise ValueError(f"prompt is empty{where}: give at least one character")
        token_ids = self.tokenizer.tokenize(list(prompts))
        start = 1 if self.add_start_token else 0
        for ids in token_ids:
            if len(ids) + start > sequence_length:
                needed = f"with the start token it needs {len(ids) + 1} positions, but "
                raise ValueError(
                    f"prompt is {len(ids)} tokens; {needed if start else ''}"
                    f"generate_preprocess's sequence_length is {sequence_length}"
                )
        packed_ids, padding_mask = self.packer(
            token_ids,
            sequence_length=sequence_length,
            add_start_value=self.add_start_token,
            add_end_value=False,
        )
        if isinstance(x, str):
            packed_ids, padding_mask = packed_ids[0], padding_mask[0]
        return {"token_ids": packed_ids, "padding_mask": padding_mask}

    def generate_postprocess(self, x: Mapping[str, Sequence]) -> str | list[str]:
        """Text of generated rows: padding and ``<|endoftext|>`` tokens are dropped.

        ``x`` is ``{"token_ids", "padding_mask"}`` as ``generate`` returns it (lists or
        array-likes); one row gives a str, a batch a list of str.
        """
        id_rows, batched = _rows(x["token_ids"])
        mask_rows, _ = _rows(x["padding_mask"])
        special = set(self.tokenizer.special_token_ids)
        kept = [
            [t for t, m in zip(ids, mask) if m and t not in special]
            for ids, mask in zip(id_rows, mask_rows)
        ]
        texts = [self.tokenizer.detokenize(ids) for ids in kept]
        return texts if batched else texts[0]
