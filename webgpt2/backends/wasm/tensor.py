"""The wasm backend's tensor (a block of linear memory) and its kernels module's bytes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webgpt2.backends.host import BackendError
from webgpt2.backends.wasm.memory import LinearMemory

MODULE_PATH = Path(__file__).resolve().parent / "kernels.wasm"
# The same kernels built for a shared memory, run on several threads in an isolated page.
THREADS_MODULE_PATH = MODULE_PATH.with_name("kernels-threads.wasm")


def load_module(threads: bool = False) -> bytes:
    """The kernels module's bytes (built by tools/build_wasm.py from wasm/*.c); with threads,
    the shared-memory build."""
    path = THREADS_MODULE_PATH if threads else MODULE_PATH
    try:
        return path.read_bytes()
    except OSError as e:
        raise BackendError(f"the wasm kernels module {path} is missing: build it with "
                           f"python tools/build_wasm.py ({e})") from e


def _head_major_order(shape: Sequence[int]) -> list[int]:
    """For a cache [..., T, nh, hd]: the position-major index of each head-major element."""
    *outer, length, heads, head_dim = shape
    block = length * heads * head_dim
    order: list[int] = []
    for base in range(0, math.prod(outer) * block, block):
        for h in range(heads):
            for t in range(length):
                start = base + (t * heads + h) * head_dim
                order.extend(range(start, start + head_dim))
    return order


class WasmTensor:
    """A tensor in the kernels module's linear memory: an offset, a shape, a storage dtype
    and a layout.

    Activations are float32 or int32, row-major ("plain"). Weights uploaded with layout
    "linear" keep the host's shape (K, N) but are stored [N, K]; "embedding" tables are
    stored as given; both may be stored float16, packed for the kernels (scaled by 2^10,
    permuted in groups of 8, padded to whole groups: weights.py, wasm/common.h). A KV cache
    ("cache", a 6-D float tensor made by `zeros` or `tensor`) is stored [B, L, 2, nh, T, hd]
    for the shape [B, L, 2, T, nh, hd]. A token table may carry the greedy head's screen
    (`screen`, greedy.py), built on first use and freed with it.
    """

    __slots__ = ("shape", "dtype", "layout", "offset", "nbytes", "host", "screen", "_memory")

    def __init__(self, shape: Sequence[int], dtype: str, offset: int, nbytes: int,
                 layout: str = "plain", memory: LinearMemory | None = None) -> None:
        self.shape = tuple(map(int, shape))
        self.dtype = dtype
        self.layout = layout
        self.offset = offset
        self.nbytes = nbytes
        self.host: list | None = None  # the values of an int tensor made from host lists
        self.screen: Any = None  # greedy.py: None (not built yet), False (none) or a Screen
        # Who gets the block back, once: on release() or when the tensor is collected (a
        # __del__ costs a fraction of a weakref.finalize, and a decode step makes ~100).
        self._memory = memory

    def _free(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            memory.free(self.offset, self.nbytes)
        if self.screen:
            self.screen.block._free()

    def __del__(self) -> None:
        self._free()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return (f"WasmTensor(shape={self.shape}, dtype={self.dtype!r}, "
                f"layout={self.layout!r}, offset={self.offset})")
