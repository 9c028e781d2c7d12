"""Layer normalisation over the last axis (GPT-2: epsilon 1e-5, biased variance)."""

from __future__ import annotations

from typing import Any

from webgpt2.backends import Backend
from webgpt2.layers.layer import Layer


class LayerNorm(Layer):
    """Example:
    >>> from webgpt2.backends import HostTensor
    >>> norm = LayerNorm(2, backend="cpu")
    >>> norm.load_weights({"weight": HostTensor.from_floats([1.0, 1.0], (2,)),
    ...                    "bias": HostTensor.from_floats([0.0, 0.0], (2,))})
    >>> [round(v, 3) for v in norm.backend.to_list(norm(norm.backend.tensor([[1.0, 3.0]],
    ...                                                                      "float32")))[0]]
    [-1.0, 1.0]
    """

    def __init__(self, dim: int, epsilon: float = 1e-5,
                 backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        self.dim, self.epsilon = dim, epsilon

    def weight_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"weight": ((self.dim,), "plain"), "bias": ((self.dim,), "plain")}

    def __call__(self, x: Any) -> Any:
        return self.backend.layer_norm(x, self.weight("weight"), self.weight("bias"),
                                       self.epsilon)
