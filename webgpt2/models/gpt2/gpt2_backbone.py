"""The GPT-2 decoder stack: embeddings, `num_layers` decoder blocks, final layer norm."""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Mapping
from typing import Any

from webgpt2.backends import Backend, HostTensor
from webgpt2.layers import Layer, LayerNorm, PositionEmbedding, TokenEmbedding, TransformerDecoder
from webgpt2.layers.embedding import embed


class GPT2Backbone(Layer):
    """GPT-2 core network with hyperparameters, as KerasHub's `GPT2Backbone`.

    Weights are named like Hugging Face's `GPT2Model` (`wte.weight`, `h.0.attn.c_attn.weight`,
    ..., `ln_f.bias`) so that a checkpoint loads by name. A new backbone has no weights:
    load a checkpoint (`GPT2CausalLM.from_pretrained`) or call `initialize_weights(seed)`.

    Example:
        >>> backbone = GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2,
        ...                         hidden_dim=8, intermediate_dim=32,
        ...                         max_sequence_length=16, backend="cpu")
        >>> backbone.initialize_weights(seed=0)
        >>> hidden = backbone([[1, 2, 3]])
        >>> backbone.backend.shape(hidden)
        (1, 3, 8)
    """

    def __init__(self, vocabulary_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 intermediate_dim: int, dropout: float = 0.1, max_sequence_length: int = 1024,
                 layer_norm_epsilon: float = 1e-5, backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        for name, value in (("vocabulary_size", vocabulary_size), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("hidden_dim", hidden_dim),
                            ("intermediate_dim", intermediate_dim),
                            ("max_sequence_length", max_sequence_length)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} is {value!r}; expected a positive integer")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout  # kept for the config; inference applies no dropout
        self.max_sequence_length = max_sequence_length
        self.layer_norm_epsilon = layer_norm_epsilon
        self.token_embedding = TokenEmbedding(vocabulary_size, hidden_dim, backend=backend)
        self.position_embedding = PositionEmbedding(max_sequence_length, hidden_dim,
                                                    backend=backend)
        self.transformer_layers = [
            TransformerDecoder(num_heads, hidden_dim, intermediate_dim, i, layer_norm_epsilon,
                               backend=backend)
            for i in range(num_layers)
        ]
        self.layer_norm = LayerNorm(hidden_dim, layer_norm_epsilon, backend=backend)

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    def children(self) -> dict[str, Layer]:
        layers: dict[str, Layer] = {"wte": self.token_embedding, "wpe": self.position_embedding}
        layers.update({f"h.{i}": block for i, block in enumerate(self.transformer_layers)})
        layers["ln_f"] = self.layer_norm
        return layers

    def get_config(self) -> dict:
        return {"vocabulary_size": self.vocabulary_size, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
                "max_sequence_length": self.max_sequence_length,
                "layer_norm_epsilon": self.layer_norm_epsilon}

    def check_weights(self, weights: Mapping[str, HostTensor]) -> dict[str, HostTensor]:
        """The weights this backbone needs, in model order, after checking that none is
        missing, extra, mis-shaped or integer: one CheckpointError naming them all (before
        anything is uploaded). Names and shapes come from `expected_weights()` alone.

        Example:
            >>> b = GPT2Backbone(vocabulary_size=3, num_layers=1, num_heads=1, hidden_dim=2,
            ...                  intermediate_dim=8, max_sequence_length=4)
            >>> weights = {name: HostTensor("float32", shape, bytes(4 * math.prod(shape)))
            ...            for name, shape in b.expected_weights().items()}
            >>> len(b.check_weights(weights))
            16
            >>> del weights["ln_f.bias"]
            >>> b.check_weights(weights)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            webgpt2.io.checkpoint.CheckpointError: ...: 1 missing tensors: ln_f.bias
        """
        from webgpt2.io.checkpoint import CheckpointError

        expected = self.expected_weights()
        missing = [name for name in expected if name not in weights]
        extra = sorted(name for name in weights if name not in expected)
        misshaped = [
            f"{name} expected {list(shape)}, got {list(weights[name].shape)}"
            for name, shape in expected.items()
            if name in weights and tuple(weights[name].shape) != shape
        ]
        not_float = [f"{name} is {weights[name].dtype}" for name in expected
                     if name in weights and weights[name].dtype == "int32"]
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing tensors: {_first(missing)}")
        if extra:
            problems.append(f"{len(extra)} unexpected tensors: {_first(extra)}")
        if misshaped:
            problems.append(f"{len(misshaped)} mis-shaped tensors: {_first(misshaped)}")
        if not_float:
            problems.append(f"{len(not_float)} integer weights (expected float32, float16 or "
                            f"bfloat16): {_first(not_float)}")
        if problems:
            summary = (f"num_layers={self.num_layers}, hidden_dim={self.hidden_dim}, "
                       f"intermediate_dim={self.intermediate_dim}, "
                       f"vocabulary_size={self.vocabulary_size}, "
                       f"max_sequence_length={self.max_sequence_length}")
            raise CheckpointError(f"the weights do not match the GPT-2 config ({summary}): "
                                  + "; ".join(problems))
        return {name: weights[name] for name in expected}

    def load_weights(self, weights: Mapping[str, HostTensor], prefix: str = "",
                     dtype: str | None = None,
                     uploaded: Callable[[int], None] | None = None) -> None:
        """Upload every weight, after `check_weights` (nothing is uploaded if one is wrong)."""
        if prefix:
            weights = {name.removeprefix(prefix): w for name, w in weights.items()
                       if name.startswith(prefix)}
        super().load_weights(self.check_weights(weights), "", dtype, uploaded)

    def initialize_weights(self, seed: int = 0, stddev: float = 0.02) -> None:
        """GPT-2's initialisation (normal(0, 0.02) matrices, ones/zeros norms, zero biases).

        Pure Python, so meant for small configs: tests and examples.
        """
        rng = random.Random(seed)
        weights = {}
        for name, shape in self.expected_weights().items():
            size = math.prod(shape)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                values = array("f", [1.0]) * size
            elif len(shape) == 1:
                values = array("f", bytes(4 * size))
            else:
                values = array("f", (rng.gauss(0.0, stddev) for _ in range(size)))
            if values.itemsize != 4:
                raise RuntimeError("array('f') is not 4 bytes on this platform")
            weights[name] = HostTensor("float32", shape, values.tobytes())
        self.load_weights(weights)

    def new_cache(self, batch_size: int, cache_length: int) -> Any:
        """A zeroed cache [batch, num_layers, 2, cache_length, num_heads, head_dim]."""
        if cache_length > self.max_sequence_length:
            raise ValueError(f"cache length {cache_length} exceeds this model's "
                             f"max_sequence_length {self.max_sequence_length}")
        return self.backend.zeros((batch_size, self.num_layers, 2, cache_length,
                                   self.num_heads, self.head_dim))

    def forward(self, token_ids: Any, cache: Any, cache_update_index: int,
                last_position_only: bool = False) -> Any:
        """hidden_states [B, S, H] after the final layer norm; fills `cache` at the index.

        last_position_only: return [B, 1, H] for the last position, skipping the last
        block's projection and MLP for the others (their keys and values are in the cache;
        nothing else reads them). That is all a prefill for generation needs.
        """
        x = embed(token_ids, self.token_embedding, self.position_embedding, cache_update_index)
        last_block = len(self.transformer_layers) - 1
        for i, block in enumerate(self.transformer_layers):
            x_next = block(x, cache, cache_update_index,
                           last_position_only and i == last_block)
            self.backend.release(x)
            x = x_next
        out = self.layer_norm(x)
        self.backend.release(x)
        return out

    def __call__(self, token_ids: Any) -> Any:
        """A full forward pass without a caller-visible cache: hidden_states [B, S, H]."""
        shape = _shape_of(self.backend, token_ids)
        cache = self.new_cache(shape[0], shape[1])
        ids = token_ids if not isinstance(token_ids, list) else self.backend.tensor(
            token_ids, "int32")
        hidden = self.forward(ids, cache, 0)
        self.backend.release(cache)
        return hidden


def _shape_of(backend: Backend, token_ids: Any) -> tuple[int, ...]:
    if isinstance(token_ids, list):
        return (len(token_ids), len(token_ids[0]) if token_ids else 0)
    return backend.shape(token_ids)


def _first(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")
