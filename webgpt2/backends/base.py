"""The backend interface: the operations the model, layers and samplers are written against.

A backend owns its tensors. The model never looks inside one; it passes them from
operation to operation, and host data crosses only at the edges (`upload`, `tensor`,
`to_list`, the samplers' token ids). The operation set is chosen so that a GPU backend can
fuse work and keep weights and the KV cache resident: a linear layer carries its bias, an
optional tanh-GELU and an optional residual; attention writes this step's keys and values
into the cache itself; sampling returns token ids, not logits.

Shapes use these names: B batch, S new positions, T the cache's max length, H hidden size,
V vocabulary size, L layers, nh heads, hd head size (H = nh * hd).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "float16", "bfloat16", "int32")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4}


class BackendError(RuntimeError):
    """A backend could not be created or an operation failed on the device."""


@dataclass(frozen=True)
class HostTensor:
    """Host-side tensor data: little-endian bytes, a dtype name and a shape.

    This is how weights cross from the loader to a backend. It needs no numpy, so the
    core runs in a Pyodide that has none.

    Example:
        >>> t = HostTensor.from_floats([1.0, 2.0, 3.0, 4.0], (2, 2))
        >>> t.shape, t.dtype, t.nbytes
        ((2, 2), 'float32', 16)
    """

    dtype: str
    shape: tuple[int, ...]
    data: Any  # bytes, bytearray or memoryview

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported; expected one of {DTYPES}")
        expected = self.size * ITEMSIZE[self.dtype]
        if len(memoryview(self.data).cast("B")) != expected:
            raise ValueError(
                f"tensor of shape {self.shape} and dtype {self.dtype} needs {expected} bytes; "
                f"got {len(memoryview(self.data).cast('B'))}"
            )

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]

    @classmethod
    def from_floats(cls, values: Sequence[float], shape: tuple[int, ...]) -> HostTensor:
        return cls("float32", tuple(shape), struct.pack(f"<{len(values)}f", *values))


class Backend:
    """The interface every backend implements. Tensors are the backend's own objects.

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> x = b.tensor([[1.0, 2.0, 3.0]], "float32")
        >>> b.shape(x)
        (1, 3)
    """

    name: str = "abstract"

    # ---- host <-> backend -------------------------------------------------------------
    def upload(self, host: HostTensor, layout: str = "plain", dtype: str | None = None) -> Any:
        """Copy weight data to the backend once.

        layout: "plain" (as given), "linear" (a Hugging Face Conv1D weight, [in, out]: the
        backend may store it transposed), "embedding" ([V, H], used by `embedding` and by
        `reverse_embedding`). dtype: the storage dtype ("float32" default, "float16" where
        the backend supports it); arithmetic stays float32.
        """
        raise NotImplementedError

    def tensor(self, values: Any, dtype: str) -> Any:
        """A tensor from nested Python lists (token ids, small float inputs)."""
        raise NotImplementedError

    def to_list(self, x: Any) -> list:
        """Nested Python lists of the tensor's values (a read back on a device)."""
        raise NotImplementedError

    def shape(self, x: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> Any:
        raise NotImplementedError

    def release(self, x: Any) -> None:
        """Free a tensor's device memory now (a no-op where memory is garbage collected)."""

    # ---- model operations -------------------------------------------------------------
    def embedding(self, token_ids: Any, token_table: Any, position_table: Any,
                  start_position: int) -> Any:
        """hidden [B, S, H] = token_table[token_ids] + position_table[start + arange(S)].

        token_ids [B, S] int32. Ids outside [0, V) raise ValueError naming the id.
        """
        raise NotImplementedError

    def layer_norm(self, x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
        """Layer norm over the last axis, biased variance, as torch.nn.LayerNorm."""
        raise NotImplementedError

    def linear(self, x: Any, weight: Any, bias: Any | None = None,
               activation: str | None = None, residual: Any | None = None) -> Any:
        """y = activation(x @ W + bias) + residual. x [..., K]; W uploaded with layout
        "linear" from [K, N]; activation None or "gelu" (tanh approximation, GPT-2's
        gelu_new); residual [..., N] or None."""
        raise NotImplementedError

    def cached_attention(self, qkv: Any, cache: Any, layer_index: int,
                         cache_update_index: int, num_heads: int) -> Any:
        """Causal multi-head attention through the KV cache.

        qkv [B, S, 3H] (queries, keys, values concatenated as GPT-2's c_attn makes them).
        Writes this step's keys and values into cache[:, layer_index, 0|1,
        cache_update_index:cache_update_index + S] (in place), then attends query i (at
        absolute position cache_update_index + i) to cache positions 0..that position, with
        scores scaled by 1/sqrt(hd) and a numerically stable softmax. Returns [B, S, H].
        cache [B, L, 2, T, nh, hd].
        """
        raise NotImplementedError

    def select_position(self, x: Any, index: int) -> Any:
        """x[:, index:index+1, :] — [B, S, H] -> [B, 1, H]."""
        raise NotImplementedError

    def reverse_embedding(self, x: Any, token_table: Any) -> Any:
        """logits [B, S, V] = x [B, S, H] @ token_table[V, H]^T (the tied LM head)."""
        raise NotImplementedError

    # ---- sampling primitives (token ids out, not logits) --------------------------------
    def argmax(self, logits: Any) -> list[int]:
        """Index of the largest logit of each row (the first on ties). logits [B, V] or
        [B, 1, V]."""
        raise NotImplementedError

    def sample(self, logits: Any, uniforms: Sequence[float], temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0) -> list[int]:
        """One token id per row drawn from softmax(filtered logits / temperature).

        Filtering follows transformers' warpers in their order (temperature, then top-k, then
        top-p): top-k keeps logits >= the k-th largest; top-p keeps the smallest set of most
        probable tokens whose probability reaches top_p (tokens whose cumulative probability in
        ascending order is <= 1 - top_p are removed; the most probable always stays). The draw
        is by inverse CDF over token ids in increasing order: the first id whose cumulative
        probability exceeds uniforms[row] * total. The host supplies the uniform numbers so the
        same seed draws the same tokens on every backend.
        """
        raise NotImplementedError

    def token_log_probs(self, logits: Any, target_ids: Any) -> list[list[float]]:
        """log_softmax(logits)[b, s, target_ids[b, s]] for scoring. logits [B, S, V],
        target_ids [B, S] int32. Returns [B][S] floats."""
        raise NotImplementedError

    # ---- device information -----------------------------------------------------------
    def describe(self) -> dict:
        """What this backend runs on (for `webgpt2 info`)."""
        return {"name": self.name}
