"""Token and learned position embeddings (GPT-2's wte and wpe)."""

from __future__ import annotations

from typing import Any

from webgpt2.backends import Backend
from webgpt2.layers.layer import Layer


class TokenEmbedding(Layer):
    """The token table [vocabulary_size, hidden_dim], shared with `ReverseEmbedding`."""

    def __init__(self, vocabulary_size: int, hidden_dim: int,
                 backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        self.vocabulary_size, self.hidden_dim = vocabulary_size, hidden_dim

    def weight_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"weight": ((self.vocabulary_size, self.hidden_dim), "embedding")}

    @property
    def weights(self) -> Any:
        return self.weight("weight")


class PositionEmbedding(Layer):
    """Learned positions [max_sequence_length, hidden_dim]."""

    def __init__(self, max_sequence_length: int, hidden_dim: int,
                 backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        self.max_sequence_length, self.hidden_dim = max_sequence_length, hidden_dim

    def weight_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"weight": ((self.max_sequence_length, self.hidden_dim), "plain")}

    @property
    def weights(self) -> Any:
        return self.weight("weight")


def embed(token_ids: Any, token_embedding: TokenEmbedding,
          position_embedding: PositionEmbedding, start_position: int) -> Any:
    """hidden [B, S, H] = wte[token_ids] + wpe[start_position + arange(S)]."""
    return token_embedding.backend.embedding(token_ids, token_embedding.weights,
                                             position_embedding.weights, start_position)
