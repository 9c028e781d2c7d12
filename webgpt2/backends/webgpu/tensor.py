"""The webgpu backend's tensor type, and its values' conversion to and from host lists.

No numpy here: host data is `array`, `bytes` and nested lists, so this runs in a Pyodide
without numpy.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Sequence
from typing import Any

# Shared with the wasm backend; imported from here by webgpu/backend.py.
from webgpt2.backends.host import flatten, nest  # noqa: F401


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class WebGPUTensor:
    """A tensor resident on the device: a buffer, a shape and a storage dtype.

    Activations are float32 or int32, row-major. Weights uploaded with layout "linear" are
    stored `[N, row_words * 4]` u32 words (shape stays the host's `(K, N)`); layout
    "embedding" tables are lists of row chunks, one buffer each; layout "cache" (a KV cache
    made by `zeros`) is [B, L, 2, nh, T, hd] in memory for the shape [B, L, 2, T, nh, hd].
    """

    __slots__ = ("shape", "dtype", "layout", "buffer", "buffer_size", "row_words", "chunks",
                 "host", "_finalizer", "__weakref__")

    def __init__(self, shape: Sequence[int], dtype: str, buffer: Any, buffer_size: int,
                 layout: str = "plain") -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.layout = layout
        self.buffer = buffer
        self.buffer_size = buffer_size
        self.row_words = 0  # vec4<u32> words per stored row (layouts linear / embedding)
        self.chunks: list[tuple[Any, int, int, int]] = []  # (buffer, size, first row, rows)
        self.host: list | None = None  # the values, for int tensors made from host lists
        self._finalizer: Any = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"WebGPUTensor(shape={self.shape}, dtype={self.dtype!r}, layout={self.layout!r})"


def row_words(values: int, storage: str) -> int:
    """vec4<u32> words per stored row of `values` numbers (two float16 values per u32)."""
    return ceil_div(values, 8 if storage == "float16" else 4)


def position_major(flat: list, shape: tuple[int, ...]) -> list:
    """A head-major cache's values ([B, L, 2, nh, T, hd] in memory) in the
    [B, L, 2, T, nh, hd] order of its shape."""
    *outer, length, heads, head_dim = shape
    block = length * heads * head_dim
    out: list = []
    for base in range(0, math.prod(outer) * block, block):
        for t in range(length):
            for h in range(heads):
                start = base + (h * length + t) * head_dim
                out.extend(flat[start:start + head_dim])
    return out


def stored_rows(data: bytes, rows: int, words: int, dtype: str, count: int) -> list[list]:
    """The first `count` values of each of `rows` stored rows of `words` vec4<u32> words
    (float32 values, or float16 values packed two per u32)."""
    row_bytes = words * 16
    out = []
    for r in range(rows):
        raw = data[r * row_bytes:(r + 1) * row_bytes]
        if dtype == "float16":
            out.append(list(struct.unpack(f"<{len(raw) // 2}e", raw))[:count])
        else:
            out.append(array("f", raw).tolist()[:count])
    return out
