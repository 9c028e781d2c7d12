"""The tied language-modelling head: logits = hidden_states @ token_embedding^T."""

from __future__ import annotations

from typing import Any

from webgpt2.layers.embedding import TokenEmbedding


class ReverseEmbedding:
    """Projects hidden states onto the vocabulary with the token embedding's own table.

    It has no parameters of its own (weight tying, as GPT-2 and KerasHub's
    `ReversibleEmbedding(reverse=True)` do).

    Example:
        >>> from webgpt2.backends import HostTensor
        >>> table = TokenEmbedding(3, 2, backend="cpu")
        >>> table.load_weights({"weight": HostTensor.from_floats([1, 0, 0, 1, 1, 1], (3, 2))})
        >>> head = ReverseEmbedding(table)
        >>> b = table.backend
        >>> b.to_list(head(b.tensor([[[2.0, 3.0]]], "float32")))
        [[[2.0, 3.0, 5.0]]]
    """

    def __init__(self, embedding: TokenEmbedding) -> None:
        self.embedding = embedding

    def __call__(self, hidden_states: Any, top_k: int = 0) -> Any:
        """The logits; with top_k > 0 those below each row's k-th largest may be -inf."""
        return self.embedding.backend.reverse_embedding(hidden_states, self.embedding.weights,
                                                        top_k)

    def argmax(self, hidden_states: Any) -> list[int]:
        """The index of each row's largest logit (first on ties), as argmax(self(hidden_states))
        gives it, without the logits where the backend can skip them. hidden_states [B, H] or
        [B, 1, H].

        Example:
            >>> from webgpt2.backends import HostTensor
            >>> table = TokenEmbedding(3, 2, backend="cpu")
            >>> table.load_weights({"weight": HostTensor.from_floats([1, 0, 0, 1, 1, 1], (3, 2))})
            >>> b = table.backend
            >>> ReverseEmbedding(table).argmax(b.tensor([[2.0, 3.0], [1.0, -1.0]], "float32"))
            [2, 0]
        """
        return self.embedding.backend.reverse_embedding_argmax(hidden_states,
                                                               self.embedding.weights)
