"""A Hugging Face `Conv1D`: y = activation(x @ W + b) (+ residual), W stored [in, out]."""

from __future__ import annotations

from typing import Any

from webgpt2.backends import Backend
from webgpt2.layers.layer import Layer


class Dense(Layer):
    """Example:
    >>> from webgpt2.backends import HostTensor
    >>> layer = Dense(2, 1, backend="cpu")
    >>> layer.load_weights({"weight": HostTensor.from_floats([1.0, 2.0], (2, 1)),
    ...                     "bias": HostTensor.from_floats([0.5], (1,))})
    >>> b = layer.backend
    >>> b.to_list(layer(b.tensor([[[1.0, 1.0]]], "float32")))
    [[[3.5]]]
    """

    def __init__(self, input_dim: int, output_dim: int, activation: str | None = None,
                 backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        self.input_dim, self.output_dim, self.activation = input_dim, output_dim, activation

    def weight_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"weight": ((self.input_dim, self.output_dim), "linear"),
                "bias": ((self.output_dim,), "plain")}

    def __call__(self, x: Any, residual: Any | None = None) -> Any:
        return self.backend.linear(x, self.weight("weight"), self.weight("bias"),
                                   self.activation, residual)
