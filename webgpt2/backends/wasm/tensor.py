"""The wasm backend's tensor (a block of linear memory) and its kernels module's bytes."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webgpt2.backends.host import BackendError
from webgpt2.backends.wasm.memory import LinearMemory

MODULE_PATH = Path(__file__).resolve().parent / "kernels.wasm"
# The same kernels built for a shared memory, run on several threads in an isolated page.
THREADS_MODULE_PATH = MODULE_PATH.with_name("kernels-threads.wasm")
# Both again with relaxed SIMD: the matrix products' multiply-adds are f32x4.relaxed_madd,
# one FMA where the engine and the CPU have it (wasm/common.h's MADD).
RELAXED_MODULE_PATH = MODULE_PATH.with_name("kernels-relaxed.wasm")
RELAXED_THREADS_MODULE_PATH = MODULE_PATH.with_name("kernels-relaxed-threads.wasm")
# "0" loads the modules without relaxed SIMD, "1" the relaxed ones (which do not compile on an
# engine without relaxed SIMD); unset (or "auto"), the driver's default: in a page the relaxed
# ones where the browser has relaxed SIMD, natively the baseline (wasmtime runs it faster).
RELAXED_ENV = "WEBGPT2_WASM_RELAXED"
# A module whose one function is an f32x4.relaxed_madd of its three v128 parameters: valid
# exactly where the engine has relaxed SIMD (WebAssembly.validate, Module.validate).
RELAXED_SIMD_PROBE = bytes.fromhex(
    "0061736d01000000"  # magic, version 1
    "010801" "60037b7b7b017b"  # types: (v128, v128, v128) -> v128
    "03020100"  # functions: one, of type 0
    "0a0d010b00" "200020012002" "fd8502" "0b"  # code: local.get 0, 1, 2; relaxed_madd; end
)


def module_path(threads: bool = False, relaxed: bool = False) -> Path:
    """The kernels module's file: with threads, the shared-memory build; with relaxed, the
    relaxed-SIMD build."""
    if relaxed:
        return RELAXED_THREADS_MODULE_PATH if threads else RELAXED_MODULE_PATH
    return THREADS_MODULE_PATH if threads else MODULE_PATH


def load_module(threads: bool = False, relaxed: bool = False) -> bytes:
    """The kernels module's bytes (built by tools/build_wasm.py from wasm/*.c); with threads,
    the shared-memory build; with relaxed, the relaxed-SIMD build."""
    path = module_path(threads, relaxed)
    try:
        return path.read_bytes()
    except OSError as e:
        raise BackendError(f"the wasm kernels module {path} is missing: build it with "
                           f"python tools/build_wasm.py ({e})") from e


def use_relaxed(default: bool, relaxed: bool | None = None) -> bool:
    """Whether a driver loads the relaxed-SIMD build: `relaxed` when given, else
    $WEBGPT2_WASM_RELAXED when set to 0 or 1, else the driver's `default`.

    Example:
        >>> use_relaxed(True, relaxed=False), use_relaxed(False, relaxed=True)
        (False, True)
    """
    if relaxed is not None:
        return bool(relaxed)
    setting = os.environ.get(RELAXED_ENV, "auto").strip().lower()
    if setting in ("", "auto"):
        return default
    if setting not in ("0", "1"):
        raise ValueError(f"${RELAXED_ENV} is {setting!r}; expected 0, 1 or auto")
    return setting == "1"


def module_name(module_bytes: bytes) -> str | None:
    """The file name of the shipped module with these bytes, or None (another module)."""
    for path in (MODULE_PATH, THREADS_MODULE_PATH, RELAXED_MODULE_PATH,
                 RELAXED_THREADS_MODULE_PATH):
        try:
            if path.stat().st_size == len(module_bytes) and path.read_bytes() == module_bytes:
                return path.name
        except OSError:
            continue
    return None


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
