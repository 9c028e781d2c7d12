"""Scoring ragged batches: per-token log-likelihoods, loss and perplexity of each sequence.

`score_sequences` packs sequences of different lengths on the right (as generate does),
scores them in one batched `model.score` call with the padding masked out, and returns
each sequence's own numbers, equal to scoring it alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class SequenceScore:
    """One sequence's scores: log_likelihoods[i] = log p(token_ids[i + 1] | token_ids[:i + 1]).

    Example:
        >>> s = SequenceScore([50256, 15496], [-2.0])
        >>> s.loss, round(s.perplexity, 4)
        (2.0, 7.3891)
    """

    token_ids: list[int]
    log_likelihoods: list[float]

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per predicted token (transformers' `loss`)."""
        return -sum(self.log_likelihoods) / len(self.log_likelihoods)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def score_sequences(model: Any, inputs: Sequence[str] | Sequence[Sequence[int]], *,
                    add_start_token: bool = True) -> list[SequenceScore]:
    """Score texts or token-id lists of any lengths in one batch, padding masked out.

    Texts are tokenized with the model's tokenizer; with add_start_token the start token
    (`<|endoftext|>`) is put first, so the first real token is predicted too. Each
    sequence needs at least 2 tokens after that.

    Example:
        >>> from webgpt2 import GPT2Backbone, GPT2CausalLM
        >>> backbone = GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
        ...                         hidden_dim=8, intermediate_dim=16,
        ...                         max_sequence_length=16, backend="cpu")
        >>> backbone.initialize_weights(seed=0)
        >>> lm = GPT2CausalLM(backbone)   # no tokenizer: token ids in and out
        >>> short, long = score_sequences(lm, [[1, 2], [1, 2, 3, 4]], add_start_token=False)
        >>> len(short.log_likelihoods), len(long.log_likelihoods)
        (1, 3)
        >>> abs(short.log_likelihoods[0] - long.log_likelihoods[0]) < 1e-6   # padding masked
        True
    """
    if isinstance(inputs, str) or not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError("inputs must be a non-empty list of texts or of token-id lists; got "
                         f"{inputs!r:.60}")
    tokenizer = getattr(model.preprocessor, "tokenizer", None)
    rows = []
    for item in inputs:
        if isinstance(item, str):
            if tokenizer is None:
                raise ValueError("this model has no tokenizer: pass token-id lists")
            ids = list(tokenizer.tokenize(item))
        elif isinstance(item, (list, tuple)) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in item):
            ids = list(item)
        else:
            raise ValueError(f"inputs holds {item!r:.60}; expected a text or a list of token ids")
        if add_start_token:
            if tokenizer is None:
                raise ValueError("add_start_token needs the model's tokenizer")
            ids = [tokenizer.start_token_id] + ids
        if len(ids) < 2:
            raise ValueError(f"{item!r:.60} gives {len(ids)} token(s); scoring needs at least 2")
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = getattr(tokenizer, "pad_token_id", 0) if tokenizer is not None else 0
    token_ids = [r + [pad] * (width - len(r)) for r in rows]
    padding_mask = [[True] * len(r) + [False] * (width - len(r)) for r in rows]
    scores = model.score(token_ids, padding_mask, scoring_mode="log_likelihood")
    return [SequenceScore(r, row[:len(r) - 1]) for r, row in zip(rows, scores)]
