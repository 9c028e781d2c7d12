"""The base of every layer: a backend, named weights, and loading them from a checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from webgpt2.backends import Backend, HostTensor, get_backend


class Layer:
    """A layer owns backend tensors named like the Hugging Face checkpoint's.

    Subclasses list their weights in `weight_specs()` as name -> (shape, layout) and
    sub-layers in `children()`: together the only definition of a model's weight names and
    shapes (`expected_weights`). `load_weights` walks both.
    """

    def __init__(self, backend: Backend | str | None = None) -> None:
        # Chosen on first use, so that a layer built only for its weight schema
        # (`expected_weights`) starts no backend.
        self._backend_choice = backend
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._weights: dict[str, Any] = {}

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = get_backend(self._backend_choice)
        return self._backend

    def weight_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {}

    def children(self) -> dict[str, Layer]:
        return {}

    @property
    def built(self) -> bool:
        return all(n in self._weights for n in self.weight_specs()) and all(
            c.built for c in self.children().values()
        )

    def weight(self, name: str) -> Any:
        try:
            return self._weights[name]
        except KeyError:
            raise RuntimeError(
                f"{type(self).__name__} has no weights loaded ({name!r} is missing); "
                "load a checkpoint with from_pretrained/from_preset or call load_weights"
            ) from None

    def expected_weights(self, prefix: str = "") -> dict[str, tuple[int, ...]]:
        """Every weight this layer and its children need, by full name, with its shape."""
        shapes = {prefix + n: shape for n, (shape, _) in self.weight_specs().items()}
        for child_name, child in self.children().items():
            shapes.update(child.expected_weights(f"{prefix}{child_name}."))
        return shapes

    def count_params(self) -> int:
        """How many numbers this layer's weights hold (KerasHub's `count_params`)."""
        return sum(math.prod(shape) for shape in self.expected_weights().values())

    def load_weights(self, weights: Mapping[str, HostTensor], prefix: str = "",
                     dtype: str | None = None,
                     uploaded: Callable[[int], None] | None = None) -> None:
        """Upload this layer's weights (named `prefix + name`) to its backend.

        `uploaded(nbytes)` is called after each weight, for progress bars."""
        for name, (shape, layout) in self.weight_specs().items():
            full = prefix + name
            if full not in weights:
                raise ValueError(f"weight {full!r} is missing from the checkpoint")
            host = weights[full]
            if tuple(host.shape) != tuple(shape):
                raise ValueError(
                    f"weight {full!r} has shape {tuple(host.shape)}; expected {tuple(shape)}"
                )
            # Vectors (biases, norms) stay float32: they are tiny and precision-sensitive.
            self._weights[name] = self.backend.upload(
                host, layout, dtype if layout != "plain" else None
            )
            if uploaded is not None:
                uploaded(host.nbytes)
        for child_name, child in self.children().items():
            child.load_weights(weights, f"{prefix}{child_name}.", dtype, uploaded)
