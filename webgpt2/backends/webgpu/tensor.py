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


def flatten(values: Any) -> tuple[list, tuple[int, ...]]:
    """Nested lists -> (flat list, shape), checking that the nesting is rectangular."""
    if not isinstance(values, (list, tuple)):
        return [values], ()
    if not values:
        return [], (0,)
    parts = [flatten(v) for v in values]
    inner = parts[0][1]
    if any(shape != inner for _, shape in parts):
        raise ValueError(f"ragged nested list: rows have shapes {[s for _, s in parts]}")
    flat: list = []
    for part, _ in parts:
        flat.extend(part)
    return flat, (len(values),) + inner


def nest(flat: list, shape: Sequence[int]) -> Any:
    """The flat list's values as nested lists of this shape (the inverse of `flatten`)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


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
