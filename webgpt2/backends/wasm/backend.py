"""The wasm backend: SIMD kernels written in C (`wasm/*.c`), compiled into one WebAssembly
module (`kernels.wasm`, shipped in the package) and run through a `Driver`.

Tensors are blocks of the module's linear memory (`LinearMemory` hands them out); kernels
take their byte offsets. Weights are copied in once at upload: Conv1D weights [K, N] are
stored transposed, [N, K], so that every output of a linear layer is one dot product over
two contiguous rows and a decode step streams each weight matrix once, front to back; the
token table [V, H] already has that shape for the tied LM head. Weights may be stored as
float16 (halving what a decode step streams), widened to float32 inside the kernels. The KV
cache is head-major, [B, L, 2, nh, T, hd] in memory, so a query reads its head's keys as one
contiguous block; `shape` and `to_list` show the interface's [B, L, 2, T, nh, hd].

This module needs no numpy: host data crosses as `bytes`, `array` and Python lists, so it
runs unchanged in a Pyodide without numpy (with the browser driver, browser.py). Kernel
calls are recorded and run in one crossing (commands.py).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from webgpt2.backends.base import Backend
from webgpt2.backends.host import ITEMSIZE, HostTensor, nest, packed
from webgpt2.backends.replay import StepReplayer
from webgpt2.backends.wasm import greedy
from webgpt2.backends.wasm.commands import DEFAULT_CAPACITY, OPCODES, CommandList
from webgpt2.backends.wasm.driver import MAX_PAGES, PAGE_SIZE, Driver
from webgpt2.backends.wasm.memory import LinearMemory
from webgpt2.backends.wasm.tensor import (  # noqa: F401 - MODULE_PATH, load_module re-exported
    MODULE_PATH,
    THREADS_MODULE_PATH,
    WasmTensor,
    _head_major_order,
    load_module,
)
from webgpt2.backends.wasm.weights import upload

_NAN = b"\x00\x00\xc0\x7f"
# linear()'s flags (matmul.c).
_BIAS, _GELU, _RESIDUAL, _W16, _PANELS = 1, 2, 4, 8, 16


class WasmBackend(Backend):
    """GPT-2's operations as SIMD WebAssembly kernels (C, `wasm/`), run by wasmtime natively
    and by the browser's engine in a page.

    driver: a `Driver` (by default wasmtime's `NativeDriver`, or in Pyodide the
    `BrowserDriver`, threaded when the page is cross-origin isolated). dtype: the default storage
    dtype of linear weights and the token table ("float32" or "float16"; arithmetic is
    float32). max_memory: use at most this many bytes of linear memory (4 GiB, all of wasm32,
    by default); running out raises `WasmOutOfMemoryError` naming the sizes. Setting
    `poison = True` fills every new activation with NaN, so a kernel that leaves an element
    unwritten shows.

    Example:
        >>> from webgpt2.backends import HostTensor
        >>> from webgpt2.backends.wasm import WasmBackend
        >>> b = WasmBackend()
        >>> b.argmax(b.tensor([[0.1, 3.0, 2.0]], "float32"))
        [1]
        >>> w = b.upload(HostTensor.from_floats([1.0, 2.0, 3.0, 4.0], (2, 2)), "linear")
        >>> b.to_list(b.linear(b.tensor([[1.0, 1.0]], "float32"), w))
        [[4.0, 6.0]]
    """

    name = "wasm"
    storage_dtypes = ("float32", "float16")

    def __init__(self, driver: Driver | None = None, dtype: str = "float32",
                 max_memory: int = MAX_PAGES * PAGE_SIZE) -> None:
        if dtype not in self.storage_dtypes:
            raise ValueError(f"dtype {dtype!r}; expected 'float32' or 'float16'")
        if driver is None:
            if sys.platform == "emscripten":  # in a web page: the browser's WebAssembly
                from webgpt2.backends.wasm.browser import BrowserDriver

                driver = BrowserDriver()  # threads when the page is cross-origin isolated
            else:
                from webgpt2.backends.wasm.native import NativeDriver

                driver = NativeDriver()  # the baseline build (native.py says why)
        self.driver = driver
        self.dtype = dtype
        limit = min(int(max_memory), MAX_PAGES * PAGE_SIZE) // PAGE_SIZE * PAGE_SIZE
        self.memory = LinearMemory(driver, int(driver.call("heap_base")), limit)
        # Kernel calls are recorded and run in one crossing when the host needs memory
        # (commands.py): a call through Pyodide's bridge costs as much as a small kernel.
        self.commands = CommandList(driver, self.memory.allocate(DEFAULT_CAPACITY * 4))
        self.poison = False

    # ---- memory -------------------------------------------------------------------------
    def _new(self, shape: Sequence[int], dtype: str = "float32", layout: str = "plain",
             nbytes: int | None = None) -> WasmTensor:
        """A tensor with fresh memory (NaN-filled when poisoning, else undefined)."""
        if nbytes is None:
            nbytes = math.prod(shape) * ITEMSIZE[dtype]
        offset = self.memory.allocate(nbytes)
        tensor = WasmTensor(shape, dtype, offset, nbytes, layout, self.memory)
        if self.poison and dtype == "float32":
            self._call("fill_u32", offset, 0x7fc00000, -(-nbytes // 4))
        return tensor

    def release(self, x: WasmTensor) -> None:
        x._free()

    def step_replayer(self) -> StepReplayer:
        def install(driver: Any) -> Any:
            replaced, self.driver = self.driver, driver
            self.commands.driver = driver
            return replaced

        return StepReplayer(install, lambda: self.memory.allocations,
                            lambda: not len(self.commands), frozenset(("write", "call", "read")))

    def _temporary(self, nbytes: int) -> int:
        """Scratch memory for one operation; give it back with _done(offset, nbytes)."""
        return self.memory.allocate(nbytes)

    def _done(self, offset: int, nbytes: int) -> None:
        self.memory.free(offset, nbytes)

    def _call(self, name: str, *args: int | float) -> int | float | None:
        """Call a kernel: recorded in the command list when it returns nothing (commands.py),
        else run now, after the recorded ones."""
        if name in OPCODES:
            self.commands.call(name, *args)
            return None
        self.commands.flush()
        return self.driver.call(name, *args)

    def _write(self, offset: int, data: bytes | bytearray | memoryview | array) -> None:
        self.commands.flush()  # recorded kernels may still use (or free) this block
        self.driver.write(offset, data)

    def _read(self, offset: int, nbytes: int) -> bytes:
        self.commands.flush()
        return self.driver.read(offset, nbytes) if nbytes else b""

    def synchronize(self) -> None:
        """Run every recorded kernel call now."""
        self.commands.flush()

    # ---- host <-> backend ---------------------------------------------------------------
    def _tensor(self, values: Any, dtype: str) -> WasmTensor:
        data, shape, dtype = packed(values, dtype)
        layout = "plain"
        if len(shape) == 6 and dtype == "float32":
            layout = "cache"
            data = array("f", [data[i] for i in _head_major_order(shape)])
        tensor = self._new(shape, dtype, layout)
        if data:
            self._write(tensor.offset, data.tobytes())
        if dtype == "int32":
            tensor.host = list(data)
        return tensor

    def _int_values(self, x: WasmTensor) -> list[int]:
        if x.host is not None:
            return x.host
        return array("i", self._read(x.offset, x.size * 4)).tolist()

    def to_list(self, x: WasmTensor) -> list:
        if x.size == 0:
            return nest([], x.shape) if x.shape else []
        if x.dtype == "int32":
            return nest(array("i", self._read(x.offset, x.size * 4)).tolist(), x.shape)
        nbytes = x.size * 4
        scratch = self._temporary(2 * nbytes)
        try:
            source = x.offset
            if x.dtype == "float16" and x.layout == "linear":  # panels: to [K, N] directly
                self._call("widen_panels_f16", source, scratch, *x.shape)
                source = scratch
            elif x.dtype == "float16":
                self._call("widen_f16", source, scratch, x.size)
                source = scratch
            if x.layout == "linear" and x.dtype != "float16":  # [N, K]: to the host's [K, N]
                k, n = x.shape
                self._call("transpose_32", source, scratch + nbytes, n, k)
                source = scratch + nbytes
            flat = array("f", self._read(source, nbytes)).tolist()
        finally:
            self._done(scratch, 2 * nbytes)
        if x.layout == "cache":
            order = _head_major_order(x.shape)
            position_major = [0.0] * len(flat)
            for stored, index in enumerate(order):
                position_major[index] = flat[stored]
            flat = position_major
        return nest(flat, x.shape)

    def shape(self, x: WasmTensor) -> tuple[int, ...]:
        return x.shape

    def _zeros(self, shape: tuple[int, ...], dtype: str) -> WasmTensor:
        """Zeros; a float 6-D tensor is a KV cache, stored head-major (see WasmTensor)."""
        dtype = "int32" if dtype == "int32" else "float32"
        layout = "cache" if len(shape) == 6 and dtype == "float32" else "plain"
        tensor = self._new(shape, dtype, layout)
        self._call("memset", tensor.offset, 0, tensor.nbytes)
        if dtype == "int32":
            tensor.host = [0] * tensor.size
        return tensor

    def _upload(self, host: HostTensor, layout: str, dtype: str | None) -> WasmTensor:
        return upload(self, host, layout, dtype)

    # ---- model operations ---------------------------------------------------------------
    def _embedding(self, token_ids: WasmTensor, token_table: WasmTensor,
                   position_table: WasmTensor, start_position: int) -> WasmTensor:
        batch, seq_len = token_ids.shape
        hidden = token_table.shape[1]
        out = self._new((batch, seq_len, hidden))
        self._call("embedding", token_ids.offset, token_table.offset,
                         self._float32(position_table), out.offset, batch * seq_len, seq_len,
                         hidden, start_position, int(token_table.dtype == "float16"))
        return out

    def _float32(self, x: WasmTensor) -> int:
        """The offset of x's values as row-major float32; a ValueError for a tensor stored
        otherwise (biases, norms and the position table are uploaded "plain", always float32)."""
        if x.dtype == "float32" and x.layout == "plain":
            return x.offset
        raise ValueError(f"expected a float32 tensor uploaded with layout 'plain'; got {x!r}")

    def _layer_norm(self, x: WasmTensor, gamma: WasmTensor, beta: WasmTensor,
                    epsilon: float) -> WasmTensor:
        hidden = x.shape[-1]
        out = self._new(x.shape)
        self._call("layer_norm", x.offset, self._float32(gamma), self._float32(beta),
                         out.offset, x.size // hidden if hidden else 0, hidden, epsilon)
        return out

    def _matmul(self, x: WasmTensor, weight: int, n: int, w16: bool, out: WasmTensor,
                bias: WasmTensor | None = None, gelu: bool = False,
                residual: WasmTensor | None = None, panels: bool = False) -> None:
        k = x.shape[-1]
        flags = (_BIAS if bias is not None else 0) | (_GELU if gelu else 0) \
            | (_RESIDUAL if residual is not None else 0) | (_W16 if w16 else 0) \
            | (_PANELS if panels else 0)
        self._call("linear", x.offset, weight,
                         0 if bias is None else self._float32(bias),
                         0 if residual is None else residual.offset, out.offset,
                         x.size // k if k else 0, k, n, flags)

    def _linear(self, x: WasmTensor, weight: WasmTensor, bias: WasmTensor | None,
                activation: str | None, residual: WasmTensor | None) -> WasmTensor:
        k, n = weight.shape
        out = self._new(x.shape[:-1] + (n,))
        if weight.layout == "linear":
            self._matmul(x, weight.offset, n, weight.dtype == "float16", out, bias,
                         activation == "gelu", residual, panels=weight.dtype == "float16")
            return out
        # A weight uploaded "plain" [K, N]: transposed for this call.
        w = self._float32(weight)
        scratch = self._temporary(k * n * 4)
        try:
            self._call("transpose_32", w, scratch, k, n)
            self._matmul(x, scratch, n, False, out, bias, activation == "gelu", residual)
        finally:
            self._done(scratch, k * n * 4)
        return out

    def _cached_attention(self, qkv: WasmTensor, cache: WasmTensor, layer_index: int,
                          cache_update_index: int, num_heads: int,
                          last_position_only: bool) -> WasmTensor:
        if cache.layout != "cache":
            raise ValueError(f"the cache must come from zeros() or tensor(); got {cache!r}")
        batch, seq_len, three_hidden = qkv.shape
        hidden = three_hidden // 3
        _, layers, _, max_length, _, _ = cache.shape
        out = self._new((batch, 1 if last_position_only else seq_len, hidden))
        head_dim = hidden // num_heads
        # Sized for the whole cache, not this step's length: no allocation of a decode step
        # depends on its position, which is what lets replay.py replay one.
        scores_bytes = (4 * max_length + 4 * head_dim) * 4
        scores = self._temporary(scores_bytes)
        try:
            self._call("attention", qkv.offset, cache.offset, out.offset, scores, batch,
                             seq_len, hidden, num_heads, max_length, layers, layer_index,
                             cache_update_index, int(last_position_only))
        finally:
            self._done(scores, scores_bytes)
        return out

    def _select_position(self, x: WasmTensor, index: int) -> WasmTensor:
        batch, seq_len, hidden = x.shape
        out = self._new((batch, 1, hidden))
        for b in range(batch):
            self._call("memcpy", out.offset + b * hidden * 4,
                             x.offset + (b * seq_len + index) * hidden * 4, hidden * 4)
        return out

    def _reverse_embedding(self, x: WasmTensor, token_table: WasmTensor) -> WasmTensor:
        vocabulary = token_table.shape[0]
        out = self._new(x.shape[:-1] + (vocabulary,))
        self._matmul(x, token_table.offset, vocabulary, token_table.dtype == "float16", out)
        return out

    def _reverse_embedding_argmax(self, x: WasmTensor, token_table: WasmTensor) -> list[int]:
        return greedy.reverse_embedding_argmax(self, x, token_table)

    def _reverse_embedding_top_k(self, x: WasmTensor, token_table: WasmTensor,
                                 top_k: int) -> WasmTensor:
        return greedy.reverse_embedding_top_k(self, x, token_table, top_k)

    # ---- sampling primitives ------------------------------------------------------------
    @staticmethod
    def _rows(logits: WasmTensor) -> tuple[int, int]:
        return logits.shape[0], logits.shape[-1]

    def _argmax(self, logits: WasmTensor) -> list[int]:
        rows, vocabulary = self._rows(logits)
        out = self._temporary(rows * 4)
        try:
            self._call("argmax", logits.offset, rows, vocabulary, out)
            return array("i", self._read(out, rows * 4)).tolist()
        finally:
            self._done(out, rows * 4)

    def _sample(self, logits: WasmTensor, uniforms: list[float], temperature: float,
                top_k: int, top_p: float) -> list[int]:
        rows, vocabulary = self._rows(logits)
        # Uniforms as f64 (8 bytes each), then the ids, then the kernel's scratch.
        nbytes = rows * 8 + rows * 4 + (6 * vocabulary + 2048) * 4
        block = self._temporary(nbytes)
        try:
            self._write(block, array("d", uniforms).tobytes())
            ids = block + rows * 8
            # The top-p cut is compared in float32, as transformers and the cpu backend do.
            self._call("sample", logits.offset, block, ids, rows, vocabulary,
                             temperature, top_k, int(top_p < 1.0), 1.0 - top_p, ids + rows * 4)
            return array("i", self._read(ids, rows * 4)).tolist()
        finally:
            self._done(block, nbytes)

    def _token_log_probs(self, logits: WasmTensor, target_ids: WasmTensor
                         ) -> list[list[float]]:
        batch, seq_len, vocabulary = logits.shape
        rows = batch * seq_len
        out = self._temporary(rows * 4)
        try:
            self._call("token_log_probs", logits.offset, target_ids.offset, out, rows,
                             vocabulary)
            values = array("f", self._read(out, rows * 4)).tolist()
        finally:
            self._done(out, rows * 4)
        return [values[b * seq_len:(b + 1) * seq_len] for b in range(batch)]

    # ---- generation operations ----------------------------------------------------------
    def _log_softmax(self, logits: WasmTensor) -> WasmTensor:
        rows, vocabulary = self._rows(logits)
        out = self._new(logits.shape)
        self._call("log_softmax", logits.offset, out.offset, rows, vocabulary)
        return out

    def _top_k(self, x: WasmTensor, k: int) -> tuple[list[list[float]], list[list[int]]]:
        rows, vocabulary = self._rows(x)
        nbytes = 2 * rows * k * 4 + (4 * vocabulary + 2048) * 4
        block = self._temporary(nbytes)
        try:
            indices = block + rows * k * 4
            self._call("top_k", x.offset, rows, vocabulary, k, block, indices,
                             indices + rows * k * 4)
            values = array("f", self._read(block, rows * k * 4)).tolist()
            ids = array("i", self._read(indices, rows * k * 4)).tolist()
        finally:
            self._done(block, nbytes)
        return ([values[r * k:(r + 1) * k] for r in range(rows)],
                [ids[r * k:(r + 1) * k] for r in range(rows)])

    def _copy(self, x: WasmTensor) -> WasmTensor:
        out = self._new(x.shape, x.dtype, x.layout, x.nbytes)
        self._call("memcpy", out.offset, x.offset, x.nbytes)
        return out

    def _edit_rows(self, logits: WasmTensor, token_ids: Sequence[Sequence[int]], kernel: str,
                   value: float) -> WasmTensor:
        """A copy of the logits with `kernel` (repetition_penalty or mask_tokens) applied to
        each row's ids."""
        rows, vocabulary = self._rows(logits)
        out = self._copy(logits)
        for r, ids in enumerate(token_ids):
            if kernel == "repetition_penalty":
                ids = sorted(set(ids))  # each distinct id once
            ids = [int(t) for t in ids if 0 <= t < vocabulary]
            if not ids:
                continue
            block = self._temporary(len(ids) * 4)
            try:
                self._write(block, array("i", ids).tobytes())
                self._call(kernel, out.offset + r * vocabulary * 4, vocabulary, block,
                                 len(ids), value)
            finally:
                self._done(block, len(ids) * 4)
        return out

    def _apply_repetition_penalty(self, logits: WasmTensor, token_ids: Sequence[Sequence[int]],
                                  penalty: float) -> WasmTensor:
        return self._edit_rows(logits, token_ids, "repetition_penalty", penalty)

    def _mask_tokens(self, logits: WasmTensor, token_ids: Sequence[Sequence[int]],
                     value: float) -> WasmTensor:
        return self._edit_rows(logits, token_ids, "mask_tokens", value)

    def _gather_batch(self, x: WasmTensor, indices: list[int]) -> WasmTensor:
        if x.layout not in ("plain", "cache"):
            return super()._gather_batch(x, indices)
        row = x.nbytes // x.shape[0] if x.shape[0] else 0
        out = self._new((len(indices),) + x.shape[1:], x.dtype, x.layout, row * len(indices))
        for i, source in enumerate(indices):
            self._call("memcpy", out.offset + i * row, x.offset + source * row, row)
        if x.host is not None:
            width = len(x.host) // x.shape[0] if x.shape[0] else 0
            out.host = [v for s in indices for v in x.host[s * width:(s + 1) * width]]
        return out

    def _reorder_cache(self, cache: WasmTensor, indices: list[int], start: int,
                       end: int) -> WasmTensor:
        batch, layers, _, length, heads, head_dim = cache.shape
        if cache.layout != "cache":  # position-major: one head of all the heads' width
            heads, head_dim = 1, heads * head_dim
        nbytes = batch * layers * 2 * (end - start) * heads * head_dim * 4 + batch * 4
        block = self._temporary(nbytes)
        try:
            self._write(block, array("i", indices).tobytes())
            self._call("reorder_cache", cache.offset, block + batch * 4, block, batch,
                             layers, heads, length, head_dim, start, end)
        finally:
            self._done(block, nbytes)
        return cache

    def _concatenate(self, tensors: list[WasmTensor], axis: int) -> WasmTensor:
        if any(t.layout != "plain" or t.dtype != tensors[0].dtype for t in tensors):
            return super()._concatenate(tensors, axis)
        first = tensors[0].shape
        outer = math.prod(first[:axis])
        shape = first[:axis] + (sum(t.shape[axis] for t in tensors),) + first[axis + 1:]
        out = self._new(shape, tensors[0].dtype)
        spans = [t.size // outer * 4 if outer else 0 for t in tensors]
        row = sum(spans)
        for o in range(outer):
            position = out.offset + o * row
            for t, span in zip(tensors, spans):
                if span:
                    self._call("memcpy", position, t.offset + o * span, span)
                position += span
        return out

    def _max_cosine_similarity(self, context: WasmTensor, candidates: WasmTensor
                               ) -> list[float]:
        batch, seq_len, hidden = context.shape
        count = candidates.shape[0]
        out = self._temporary(count * 4)
        try:
            self._call("max_cosine_similarity", context.offset, candidates.offset, out,
                             batch, seq_len, hidden, count)
            return array("f", self._read(out, count * 4)).tolist()
        finally:
            self._done(out, count * 4)

    # ---- device information -------------------------------------------------------------
    def memory_limit_bytes(self) -> int | None:
        # What the linear memory can still give: beyond its top, and its free blocks.
        return self.memory.limit - self.memory.top + self.memory.bytes_free

    def describe(self) -> dict:
        return {
            "name": self.name,
            **self.driver.describe(),
            # The module is built with -msimd128: it does not load without SIMD.
            "simd": True,
            "threads": self.driver.describe().get("threads", 1),
            "dtype": self.dtype,
            "memory_bytes": self.driver.memory_size(),
            "memory_limit": self.memory.limit,
            "bytes_in_use": self.memory.bytes_in_use,
        }
