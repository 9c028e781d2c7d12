"""The WebGPU backend: WGSL kernels from `shaders/`, run through a `Driver`.

Weights are uploaded once and stay resident: Conv1D weights are re-laid out `[N, K]` for the
matrix-vector decode kernel, the token table is split into row chunks that each fit one
storage binding, and float16 storage is packed two values per u32 word (arithmetic stays
float32). The KV cache stays on the device, head-major so that attention reads each head's
keys contiguously. Tensors larger than one binding (long logits, big caches) are processed
in aligned windows. Operations record dispatches into a pending list; they are submitted, all in one
command buffer, only when the host needs data (`to_list`, `argmax`, `sample`,
`token_log_probs`) or `flush()` is called, so a greedy decode step is one submission and a
4-byte read back per row. The parameters of every pending dispatch are packed into one
uniform buffer, written once per submission, so none is overwritten before it runs.

This module needs no numpy: host data crosses as `bytes`, `array` and Python lists, so it
runs unchanged in a Pyodide without numpy.
"""

from __future__ import annotations

import math
import struct
import sys
import weakref
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webgpt2.backends.base import ITEMSIZE, Backend, HostTensor
from webgpt2.backends.webgpu.driver import Binding, Copy, Dispatch, Driver, DriverError

_PARAMS_SLOT = 256  # bytes per dispatch in the parameter buffer (WebGPU's default alignment)
_MAX_WORKGROUPS = 65535  # per grid dimension (WebGPU's default and common maximum)
_POOL_MAX_BUFFER = 64 << 20  # larger activation buffers are destroyed, not pooled
_POOL_MAX_BYTES = 512 << 20
_MATVEC_MAX_ROWS = 4  # up to this many rows (decode) the matrix-vector kernels are used
_MAX_HEAD_DIM = 256
_SOURCE_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def _shader_folders() -> list[Path]:
    """The installed wheel's copy (`webgpt2/shaders`) first, then the repository root's."""
    package = Path(__file__).resolve().parents[2]
    return [package / "shaders", package.parent / "shaders"]


def load_shader(file_name: str) -> str:
    """The WGSL source of one kernel family, e.g. `load_shader("linear.wgsl")`.

    A line `//!include other.wgsl` is replaced by that file's source (a variant kernel
    reuses its family's parameters, bindings and helpers).
    """
    for folder in _shader_folders():
        path = folder / file_name
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            return "".join(load_shader(line.split()[1]) if line.startswith("//!include ")
                           else line for line in lines)
    raise DriverError(
        f"shader {file_name!r} not found; looked in {[str(f) for f in _shader_folders()]}"
    )


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _flatten(values: Any) -> tuple[list, tuple[int, ...]]:
    """Nested lists -> (flat list, shape), checking that the nesting is rectangular."""
    if not isinstance(values, (list, tuple)):
        return [values], ()
    if not values:
        return [], (0,)
    parts = [_flatten(v) for v in values]
    inner = parts[0][1]
    if any(shape != inner for _, shape in parts):
        raise ValueError(f"ragged nested list: rows have shapes {[s for _, s in parts]}")
    flat: list = []
    for part, _ in parts:
        flat.extend(part)
    return flat, (len(values),) + inner


def _nest(flat: list, shape: Sequence[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = _numel(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


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
        self._finalizer = None

    @property
    def size(self) -> int:
        return _numel(self.shape)

    def __repr__(self) -> str:
        return f"WebGPUTensor(shape={self.shape}, dtype={self.dtype!r}, layout={self.layout!r})"


class WebGPUBackend(Backend):
    """GPT-2's operations as WGSL compute kernels on a WebGPU device.

    driver: a `Driver` (the native wgpu-py one by default). dtype: the storage dtype of
    linear weights and the token table ("float32" or "float16"). max_binding_size: use at
    most this many bytes per storage binding (the device's limit by default; smaller values
    exercise the big-buffer paths in tests). Setting `poison = True` fills every new
    activation buffer with NaN first, so a kernel that leaves an element unwritten shows.

    Example:
        >>> from webgpt2.backends.webgpu import WebGPUBackend
        >>> b = WebGPUBackend()  # doctest: +SKIP
        >>> b.argmax(b.tensor([[0.1, 3.0, 2.0]], "float32"))  # doctest: +SKIP
        [1]
    """

    name = "webgpu"
    storage_dtypes = ("float32", "float16")

    def __init__(self, driver: Driver | None = None, dtype: str = "float32",
                 max_binding_size: int | None = None) -> None:
        if driver is None:
            if sys.platform == "emscripten":  # in a web page: the browser's navigator.gpu
                from webgpt2.backends.webgpu.browser import BrowserDriver

                driver = BrowserDriver()
            else:
                from webgpt2.backends.webgpu.native import NativeDriver

                driver = NativeDriver()
        self.driver = driver
        limits = driver.info.limits
        self.max_binding_size = int(limits.get("max_storage_buffer_binding_size", 128 << 20))
        if max_binding_size is not None:
            self.max_binding_size = min(self.max_binding_size, int(max_binding_size))
        self.max_buffer_size = int(limits.get("max_buffer_size", 256 << 20))
        self.storage_alignment = int(limits.get("min_storage_buffer_offset_alignment", 256))
        self.max_workgroups = min(_MAX_WORKGROUPS,
                                  int(limits.get("max_compute_workgroups_per_dimension",
                                                 _MAX_WORKGROUPS)))
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype {dtype!r}; expected 'float32' or 'float16'")
        self.dtype = dtype
        self.counters: dict[str, int] = {}
        self.reset_counters()
        self._pipelines: dict[tuple[str, str], Any] = {}
        self._pending: list[Any] = []  # Copy, or (pipeline, bindings, workgroups, params)
        self._params_buffer: Any = None
        self._params_capacity = 0
        self._pool: dict[int, list[Any]] = {}
        self._pool_bytes = 0
        # Buffers freed while recorded or submitting work may still use them: (buffer, size,
        # destroy). They are recycled (or destroyed) after the next submission.
        self._quarantine: list[tuple[Any, int, bool]] = []
        self._submitting = False
        self._readback: Any = None
        self._readback_size = 0
        self._placeholder = driver.create_buffer(16, "storage", "placeholder")
        self.poison = False
        self.subgroup_matvec = self._lane_groups_work()
        self.reset_counters()  # the probe above is not the caller's work

    def _lane_groups_work(self) -> bool:
        """Whether linear_subgroups.wgsl's lane-group reduction gives the right sums here.

        It needs the "subgroups" feature and subgroups of 8 or more consecutive invocations;
        adapters report subgroup sizes unreliably, so the reduction is run once and checked.
        """
        if "subgroups" not in self.driver.info.features:
            return False
        try:
            out = self._new((64,))
            self._record("linear_subgroups.wgsl", "probe_lane_groups",
                         [Binding(5, out.buffer, 0, out.buffer_size)], 1, self._params(0))
            sums = array("f", self._read(out.buffer, 0, 64 * 4)).tolist()
        except DriverError:
            self._pending = []
            return False
        return all(sums[i] == 8 * (i & ~7) + 28 for i in range(64))

    # ---- counters and submission --------------------------------------------------------
    def reset_counters(self) -> None:
        """Zero the dispatch / submission / read-back counters (for benchmarks)."""
        self.counters.update(dispatches=0, submissions=0, readbacks=0, bytes_read=0,
                             bytes_written=0)

    def flush(self) -> None:
        """Submit every pending dispatch now, in one command buffer."""
        if not self._pending or self._submitting:
            return
        self._submitting = True
        try:
            self._submit(self._pending)
        finally:
            self._pending = []
            self._submitting = False
        quarantine, self._quarantine = self._quarantine, []
        for buffer, size, destroy in quarantine:
            if destroy:
                self.driver.destroy_buffer(buffer)
            else:
                self._recycle(buffer, size)

    def _submit(self, pending: list) -> None:
        slots = sum(1 for c in pending if not isinstance(c, Copy))
        needed = max(slots, 1) * _PARAMS_SLOT
        if needed > self._params_capacity:
            if self._params_buffer is not None:
                self.driver.destroy_buffer(self._params_buffer)
            self._params_capacity = max(needed, 2 * self._params_capacity, 64 * _PARAMS_SLOT)
            self._params_buffer = self.driver.create_buffer(self._params_capacity, "uniform",
                                                            "dispatch parameters")
        arena = bytearray(needed)
        commands: list[Dispatch | Copy] = []
        slot = 0
        for command in pending:
            if isinstance(command, Copy):
                commands.append(command)
                continue
            pipeline, bindings, workgroups, params = command
            offset = slot * _PARAMS_SLOT
            arena[offset:offset + len(params)] = params
            bindings.append(Binding(0, self._params_buffer, offset, _PARAMS_SLOT))
            commands.append(Dispatch(pipeline, bindings, workgroups))
            slot += 1
        self.driver.write_buffer(self._params_buffer, 0, arena)
        self.driver.submit(commands)
        self.counters["submissions"] += 1
        self.counters["dispatches"] += slot

    def _record(self, file_name: str, entry_point: str, bindings: list[Binding],
                workgroups: int | tuple[int, int, int], params: bytes) -> None:
        if isinstance(workgroups, int):
            workgroups = self._grid(workgroups)
        if workgroups[0] == 0:
            return
        self._pending.append((self._pipeline(file_name, entry_point), bindings, workgroups,
                              params))

    def _grid(self, count: int) -> tuple[int, int, int]:
        """`count` workgroups as an x * y grid (kernels flatten it as y * nx + x)."""
        x = min(count, self.max_workgroups)
        y = _ceil_div(count, x) if x else 0
        if y > self.max_workgroups:
            raise DriverError(f"{count} workgroups exceed the device's grid of "
                              f"{self.max_workgroups} x {self.max_workgroups}")
        return (x, y, 1)

    def _pipeline(self, file_name: str, entry_point: str) -> Any:
        key = (file_name, entry_point)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            pipeline = self.driver.create_pipeline(load_shader(file_name), entry_point,
                                                   label=file_name)
            self._pipelines[key] = pipeline
        return pipeline

    @staticmethod
    def _params(*values: int | float) -> bytes:
        fmt = "<" + "".join("f" if isinstance(v, float) else "I" for v in values)
        return struct.pack(fmt, *values)

    # ---- buffers --------------------------------------------------------------------------
    def _allocate(self, nbytes: int, label: str = "") -> tuple[Any, int]:
        """A storage buffer of at least `nbytes` from the pool (contents undefined)."""
        size = max(_ceil_div(nbytes, 256) * 256, 256)
        free = self._pool.get(size)
        if free:
            self._pool_bytes -= size
            return free.pop(), size
        return self.driver.create_buffer(size, "storage", label), size

    def _release_buffer(self, buffer: Any, size: int, destroy: bool = False) -> None:
        if self._pending or self._submitting:
            self._quarantine.append((buffer, size, destroy))
        elif destroy:
            self.driver.destroy_buffer(buffer)
        else:
            self._recycle(buffer, size)

    def _recycle(self, buffer: Any, size: int) -> None:
        if size > _POOL_MAX_BUFFER or self._pool_bytes + size > _POOL_MAX_BYTES:
            self.driver.destroy_buffer(buffer)
            return
        self._pool.setdefault(size, []).append(buffer)
        self._pool_bytes += size

    def _new(self, shape: Sequence[int], dtype: str = "float32", zeroed: bool = False,
             label: str = "") -> WebGPUTensor:
        nbytes = _numel(shape) * 4
        if zeroed:
            size = max(_ceil_div(nbytes, 16) * 16, 16)
            buffer = self.driver.create_buffer(size, "storage", label)
        else:
            buffer, size = self._allocate(nbytes, label)
            if self.poison:
                self._write(buffer, b"\x00\x00\xc0\x7f" * (size // 4))  # quiet NaN
        tensor = WebGPUTensor(shape, dtype, buffer, size)
        tensor._finalizer = weakref.finalize(tensor, self._release_buffer, buffer, size)
        return tensor

    def _bind(self, index: int, tensor_or_buffer: Any, first: int = 0,
              end: int | None = None) -> tuple[Binding, int]:
        """A binding of elements [first, end) of a buffer and the element shift of `first`
        inside it. The whole buffer is bound when it fits one binding; otherwise an aligned
        window that covers the range."""
        if isinstance(tensor_or_buffer, WebGPUTensor):
            buffer, size = tensor_or_buffer.buffer, tensor_or_buffer.buffer_size
        else:
            buffer, size = tensor_or_buffer
        if size <= self.max_binding_size:
            return Binding(index, buffer, 0, size), first
        start = first * 4
        offset = start - start % self.storage_alignment
        # Whole 16-byte words, for kernels that read vec4s (buffers are multiples of 16).
        stop = min(_ceil_div((end if end is not None else size // 4) * 4, 16) * 16, size)
        if stop - offset > self.max_binding_size:
            raise DriverError(
                f"a {stop - offset}-byte range of a {size}-byte buffer does not fit the "
                f"device's max_storage_buffer_binding_size of {self.max_binding_size} bytes"
            )
        return Binding(index, buffer, offset, stop - offset), (start - offset) // 4

    def _row_chunks(self, rows: int, tensors: Sequence[tuple[WebGPUTensor, int]]
                    ) -> list[tuple[int, int]]:
        """Split `rows` so that each (tensor, row width) has its rows' window in one binding."""
        per_chunk = rows
        for tensor, width in tensors:
            if tensor.buffer_size > self.max_binding_size:
                fit = (self.max_binding_size - self.storage_alignment) // (width * 4)
                if fit < 1:
                    raise DriverError(
                        f"one row of {width * 4} bytes does not fit the device's "
                        f"max_storage_buffer_binding_size of {self.max_binding_size} bytes"
                    )
                per_chunk = min(per_chunk, fit)
        return [(r, min(r + per_chunk, rows)) for r in range(0, rows, max(per_chunk, 1))]

    def _batch_chunks(self, batch: int, tensor: WebGPUTensor, stride: int, span: int
                      ) -> list[tuple[int, int]]:
        """Split `batch` so that each chunk's slices (`span` elements, `stride` apart) of
        `tensor` fit one binding."""
        if tensor.buffer_size <= self.max_binding_size:
            return [(0, batch)]
        room = self.max_binding_size - self.storage_alignment - 16 - span * 4
        if room < 0:
            raise DriverError(
                f"a slice of {span * 4} bytes does not fit the device's "
                f"max_storage_buffer_binding_size of {self.max_binding_size} bytes"
            )
        per_chunk = 1 + room // (stride * 4)
        return [(b, min(b + per_chunk, batch)) for b in range(0, batch, per_chunk)]

    def _placeholder_binding(self, index: int) -> Binding:
        return Binding(index, self._placeholder, 0, 16)

    def _read(self, buffer: Any, offset: int, size: int) -> bytes:
        """Submit pending work plus a copy of `size` bytes into the read-back buffer; read it."""
        padded = _ceil_div(size, 4) * 4
        if padded > self._readback_size:
            if self._readback is not None:
                self.driver.destroy_buffer(self._readback)
            self._readback_size = max(padded, 256)
            self._readback = self.driver.create_buffer(self._readback_size, "readback",
                                                       "read back")
        self._pending.append(Copy(buffer, offset, self._readback, 0, padded))
        self.flush()
        data = self.driver.read_buffer(self._readback, 0, padded)
        self.counters["readbacks"] += 1
        self.counters["bytes_read"] += padded
        return data[:size]

    def _write(self, buffer: Any, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self.driver.write_buffer(buffer, offset, data)
        self.counters["bytes_written"] += len(data)

    # ---- host <-> backend -----------------------------------------------------------------
    def _tensor(self, values: Any, dtype: str) -> WebGPUTensor:
        flat, shape = _flatten(values)
        if dtype == "int32":
            data = array("i", [int(v) for v in flat])
        else:
            dtype = "float32"
            data = array("f", [float(v) for v in flat])
        tensor = self._new(shape, dtype)
        if flat:
            self._write(tensor.buffer, data.tobytes())
        if dtype == "int32":
            tensor.host = list(data)
        return tensor

    def to_list(self, x: WebGPUTensor) -> list:
        if x.layout == "linear":
            k, n = x.shape
            rows = self._read_words(x.buffer, n * x.row_words * 4)
            values = [self._decode_row(rows, r, x.row_words, x.dtype, k) for r in range(n)]
            return [[values[c][r] for c in range(n)] for r in range(k)]
        if x.layout == "embedding":
            out = []
            for buffer, _, _, count in x.chunks:
                words = self._read_words(buffer, count * x.row_words * 4)
                out.extend(self._decode_row(words, r, x.row_words, x.dtype, x.shape[1])
                           for r in range(count))
            return out
        if x.size == 0:
            return _nest([], x.shape) if x.shape else []
        data = self._read(x.buffer, 0, x.size * 4)
        flat = array("i" if x.dtype == "int32" else "f", data).tolist()
        if x.layout == "cache":
            flat = self._position_major(flat, x.shape)
        return _nest(flat, x.shape)

    @staticmethod
    def _position_major(flat: list, shape: tuple[int, ...]) -> list:
        """A head-major cache's values in [B, L, 2, T, nh, hd] order."""
        *outer, length, heads, head_dim = shape
        block = length * heads * head_dim
        out: list = []
        for base in range(0, _numel(outer) * block, block):
            for t in range(length):
                for h in range(heads):
                    start = base + (h * length + t) * head_dim
                    out.extend(flat[start:start + head_dim])
        return out

    def _read_words(self, buffer: Any, words: int) -> array:
        return array("I", self._read(buffer, 0, words * 4))

    @staticmethod
    def _decode_row(words: array, row: int, row_words: int, dtype: str, count: int) -> list:
        raw = words[row * row_words * 4:(row + 1) * row_words * 4].tobytes()
        if dtype == "float16":
            return list(struct.unpack(f"<{len(raw) // 2}e", raw))[:count]
        return array("f", raw).tolist()[:count]

    def shape(self, x: WebGPUTensor) -> tuple[int, ...]:
        return x.shape

    def _zeros(self, shape: tuple[int, ...], dtype: str) -> WebGPUTensor:
        """Zeros. A float 6-D tensor is taken for a KV cache [B, L, 2, T, nh, hd] and stored
        head-major ([B, L, 2, nh, T, hd] in memory), so that each head's keys and values are
        contiguous for attention; `to_list` still returns the [B, L, 2, T, nh, hd] order."""
        tensor = self._new(shape, "int32" if dtype == "int32" else "float32", zeroed=True,
                           label="zeros")
        if len(tensor.shape) == 6 and dtype != "int32":
            tensor.layout = "cache"
        return tensor

    def release(self, x: WebGPUTensor) -> None:
        if x._finalizer is not None:
            x._finalizer()

    def _upload(self, host: HostTensor, layout: str, dtype: str | None) -> WebGPUTensor:
        storage = dtype or self.dtype
        if layout == "plain":
            return self._upload_plain(host)
        if layout == "linear":
            return self._upload_linear(host, storage)
        return self._upload_embedding(host, storage)

    def _own(self, tensor: WebGPUTensor, buffers: Sequence[Any]) -> WebGPUTensor:
        """Destroy the weight's buffers when it is released or garbage collected."""
        tensor._finalizer = weakref.finalize(tensor, self._destroy_all, list(buffers))
        return tensor

    def _destroy_all(self, buffers: list) -> None:
        for buffer in buffers:
            self._release_buffer(buffer, 0, destroy=True)

    def _upload_plain(self, host: HostTensor) -> WebGPUTensor:
        dtype = "int32" if host.dtype == "int32" else "float32"
        size = max(_ceil_div(host.size * 4, 16) * 16, 16)
        buffer = self.driver.create_buffer(size, "storage", "weight")
        if host.dtype in ("float32", "int32"):
            if host.size:
                self._write(buffer, memoryview(host.data).cast("B")[:host.size * 4])
        else:
            self._relayout(host, memoryview(host.data).cast("B"), buffer, rows=1,
                           cols=host.size, out_stride=host.size, out_f16=False, transpose=False)
        return self._own(WebGPUTensor(host.shape, dtype, buffer, size, "plain"), [buffer])

    @staticmethod
    def _row_words(values: int, storage: str) -> int:
        """vec4<u32> words per stored row of `values` numbers."""
        return _ceil_div(values, 8 if storage == "float16" else 4)

    def _upload_linear(self, host: HostTensor, storage: str) -> WebGPUTensor:
        k, n = host.shape
        row_words = self._row_words(k, storage)
        size = n * row_words * 16
        if size > self.max_binding_size:
            raise DriverError(
                f"linear weight {host.shape} needs {size} bytes, over the device's "
                f"max_storage_buffer_binding_size of {self.max_binding_size} bytes"
            )
        buffer = self.driver.create_buffer(size, "storage", "linear weight")
        self._relayout(host, memoryview(host.data).cast("B"), buffer, rows=n, cols=k,
                       out_stride=row_words * 4, out_f16=storage == "float16", transpose=True)
        tensor = WebGPUTensor(host.shape, storage, buffer, size, "linear")
        tensor.row_words = row_words
        return self._own(tensor, [buffer])

    def _upload_embedding(self, host: HostTensor, storage: str) -> WebGPUTensor:
        vocabulary, hidden = host.shape
        row_words = self._row_words(hidden, storage)
        row_bytes = row_words * 16
        source_row_bytes = hidden * ITEMSIZE[host.dtype]
        limit = min(self.max_binding_size, self.max_buffer_size)
        per_chunk = limit // max(row_bytes, source_row_bytes)
        if per_chunk < 1:
            raise DriverError(
                f"one embedding row of {max(row_bytes, source_row_bytes)} bytes exceeds the "
                f"device's max_storage_buffer_binding_size of {limit} bytes"
            )
        source = memoryview(host.data).cast("B")
        direct = host.dtype == "float32" and storage == "float32" and hidden % 4 == 0
        tensor = WebGPUTensor(host.shape, storage, None, 0, "embedding")
        tensor.row_words = row_words
        for first in range(0, vocabulary, per_chunk):
            rows = min(per_chunk, vocabulary - first)
            size = rows * row_bytes
            buffer = self.driver.create_buffer(size, "storage", f"token table rows {first}+")
            part = source[first * source_row_bytes:(first + rows) * source_row_bytes]
            if direct:
                self._write(buffer, part)
            else:
                part_host = HostTensor(host.dtype, (rows, hidden), part)
                self._relayout(part_host, part, buffer, rows=rows, cols=hidden,
                               out_stride=row_words * 4, out_f16=storage == "float16",
                               transpose=False)
            tensor.chunks.append((buffer, size, first, rows))
        tensor.buffer, tensor.buffer_size = tensor.chunks[0][0], tensor.chunks[0][1]
        return self._own(tensor, [c[0] for c in tensor.chunks])

    def _relayout(self, host: HostTensor, data: memoryview, destination: Any, rows: int,
                  cols: int, out_stride: int, out_f16: bool, transpose: bool) -> None:
        """Stage host data on the device and convert it with relayout.wgsl."""
        staged = _ceil_div(len(data), 4) * 4
        if staged > self.max_binding_size:
            raise DriverError(
                f"a {staged}-byte weight does not fit the device's "
                f"max_storage_buffer_binding_size of {self.max_binding_size} bytes"
            )
        staging = self.driver.create_buffer(max(staged, 4), "storage", "upload staging")
        if len(data) % 4:
            data = bytes(data) + bytes(4 - len(data) % 4)
        self._write(staging, data)
        words = rows * out_stride
        self._record(
            "relayout.wgsl", "relayout",
            [Binding(1, staging, 0, max(staged, 4)), Binding(2, destination, 0, words * 4)],
            _ceil_div(words, 256),
            self._params(rows, cols, out_stride, _SOURCE_DTYPE_CODES[host.dtype],
                         int(out_f16), int(transpose)),
        )
        self.flush()
        self.driver.destroy_buffer(staging)

    # ---- model operations -------------------------------------------------------------------
    def _int_values(self, x: WebGPUTensor) -> list[int]:
        return x.host if x.host is not None else array("i", self._read(
            x.buffer, 0, x.size * 4)).tolist()

    def _table(self, table: WebGPUTensor) -> list[tuple[Any, int, int, int]]:
        if table.layout != "embedding":
            raise ValueError(f"the token table must be uploaded with layout='embedding'; "
                             f"got layout {table.layout!r}")
        return table.chunks

    def _embedding(self, token_ids: WebGPUTensor, token_table: WebGPUTensor,
                   position_table: WebGPUTensor, start_position: int) -> WebGPUTensor:
        batch, seq_len = token_ids.shape
        hidden = token_table.shape[1]
        ids = self._int_values(token_ids)
        out = self._new((batch, seq_len, hidden))
        rows = batch * seq_len
        f16 = int(token_table.dtype == "float16")
        for r0, r1 in self._row_chunks(rows, [(out, hidden)]):
            ids_binding, ids_shift = self._bind(1, token_ids, r0, r1)
            pos_binding, pos_shift = self._bind(3, position_table)
            out_binding, out_shift = self._bind(4, out, r0 * hidden, r1 * hidden)
            h_blocks = _ceil_div(hidden, 64)
            for buffer, size, first, count in self._table(token_table):
                if not any(first <= i < first + count for i in ids[r0:r1]):
                    continue
                self._record(
                    "embedding.wgsl", "embed",
                    [ids_binding, Binding(2, buffer, 0, size), pos_binding, out_binding],
                    (r1 - r0) * h_blocks,
                    self._params(r1 - r0, seq_len, hidden, token_table.row_words * 4, first,
                                 count, start_position, f16, ids_shift, pos_shift, out_shift,
                                 h_blocks, r0),
                )
        return out

    def _layer_norm(self, x: WebGPUTensor, gamma: WebGPUTensor, beta: WebGPUTensor,
                   epsilon: float) -> WebGPUTensor:
        hidden = x.shape[-1]
        rows = x.size // hidden if hidden else 0
        out = self._new(x.shape)
        for r0, r1 in self._row_chunks(rows, [(x, hidden), (out, hidden)]):
            x_binding, x_shift = self._bind(1, x, r0 * hidden, r1 * hidden)
            y_binding, y_shift = self._bind(4, out, r0 * hidden, r1 * hidden)
            self._record("layer_norm.wgsl", "layer_norm",
                         [x_binding, self._bind(2, gamma)[0], self._bind(3, beta)[0],
                          y_binding],
                         r1 - r0,
                         self._params(r1 - r0, hidden, float(epsilon), x_shift, y_shift))
        return out

    def _matmul(self, x: WebGPUTensor, rows: int, k: int, weight_binding: Binding,
                row_words: int, n: int, w_f16: bool, out: WebGPUTensor, out_width: int,
                out_column: int, bias: WebGPUTensor | None = None, gelu: bool = False,
                residual: WebGPUTensor | None = None) -> None:
        """Record y[:, out_column:out_column+n] = act(x @ W^T + bias) + residual."""
        chunk_tensors = [(x, k), (out, out_width)]
        if residual is not None:
            chunk_tensors.append((residual, out_width))
        for r0, r1 in self._row_chunks(rows, chunk_tensors):
            x_binding, x_shift = self._bind(1, x, r0 * k, r1 * k)
            y_binding, y_shift = self._bind(5, out, r0 * out_width, r1 * out_width)
            if residual is not None:
                r_binding, r_shift = self._bind(4, residual, r0 * out_width, r1 * out_width)
            else:
                r_binding, r_shift = self._placeholder_binding(4), 0
            b_binding = self._bind(3, bias)[0] if bias is not None \
                else self._placeholder_binding(3)
            flags = (1 if bias is not None else 0) | (2 if gelu else 0) \
                | (4 if residual is not None else 0)
            m = r1 - r0
            n_blocks = _ceil_div(n, 32)
            # Whole vec4 words of x per row: the fast kernels' condition.
            aligned = x_shift % 4 == 0 and k % 4 == 0
            file_name = "linear.wgsl"
            if m <= _MATVEC_MAX_ROWS and self.subgroup_matvec and aligned \
                    and k % (8 if w_f16 else 4) == 0:
                file_name = "linear_subgroups.wgsl"
                if w_f16:
                    entry, workgroups = "matvec_subgroups_f16", _ceil_div(n, 64)
                else:
                    entry, workgroups = "matvec_subgroups_f32", _ceil_div(n, 32)
            elif m <= _MATVEC_MAX_ROWS:
                entry, workgroups = "matvec", _ceil_div(n, 64)
            elif aligned:
                n_blocks = _ceil_div(n, 256)
                entry, workgroups = "matmul_blocked", _ceil_div(m, 4) * n_blocks
            else:
                entry, workgroups = "matmul", _ceil_div(m, 32) * n_blocks
            self._record(
                file_name, entry,
                [x_binding, weight_binding, b_binding, r_binding, y_binding], workgroups,
                self._params(m, n, k, row_words, x_shift, y_shift, out_width, out_column,
                             r_shift, flags, int(w_f16), n_blocks),
            )

    def _linear(self, x: WebGPUTensor, weight: WebGPUTensor, bias: WebGPUTensor | None,
                activation: str | None, residual: WebGPUTensor | None) -> WebGPUTensor:
        if weight.layout != "linear":
            raise ValueError(f"linear weights must be uploaded with layout='linear'; got "
                             f"layout {weight.layout!r}")
        k, n = weight.shape
        out = self._new(x.shape[:-1] + (n,))
        self._matmul(x, x.size // k, k, Binding(2, weight.buffer, 0, weight.buffer_size),
                     weight.row_words, n, weight.dtype == "float16", out, n, 0, bias,
                     activation == "gelu", residual)
        return out

    def _cached_attention(self, qkv: WebGPUTensor, cache: WebGPUTensor, layer_index: int,
                          cache_update_index: int, num_heads: int,
                          last_position_only: bool) -> WebGPUTensor:
        if last_position_only:
            # Every query is computed (one dispatch for all of them), then the last selected.
            full = self._cached_attention(qkv, cache, layer_index, cache_update_index,
                                          num_heads, False)
            last = self._select_position(full, full.shape[1] - 1)
            self.release(full)
            return last
        batch, seq_len, three_hidden = qkv.shape
        hidden = three_hidden // 3
        head_dim = hidden // num_heads
        layers, max_length = cache.shape[1], cache.shape[3]
        if head_dim > _MAX_HEAD_DIM:
            raise ValueError(f"head size {head_dim}; the attention kernel supports up to "
                             f"{_MAX_HEAD_DIM}")
        out = self._new((batch, seq_len, hidden))
        layer_span = 2 * max_length * hidden  # elements of cache[b, layer]
        batch_stride = layers * layer_span
        scale = 1.0 / math.sqrt(head_dim)
        if cache.layout == "cache":  # head-major: [.., nh, T, hd] in memory
            position_stride, head_stride = head_dim, max_length * head_dim
        else:
            position_stride, head_stride = hidden, head_dim
        for b0, b1 in self._batch_chunks(batch, cache, batch_stride, layer_span):
            first = b0 * batch_stride + layer_index * layer_span
            end = (b1 - 1) * batch_stride + layer_index * layer_span + layer_span
            c_binding, c_shift = self._bind(2, cache, first, end)
            q_binding, q_shift = self._bind(1, qkv, b0 * seq_len * three_hidden,
                                            b1 * seq_len * three_hidden)
            o_binding, o_shift = self._bind(3, out, b0 * seq_len * hidden, b1 * seq_len * hidden)
            params = self._params(b1 - b0, seq_len, hidden, num_heads, head_dim, max_length,
                                  cache_update_index, batch_stride, q_shift, c_shift, o_shift,
                                  float(scale), position_stride, head_stride,
                                  max_length * hidden)
            self._record("attention.wgsl", "kv_write", [q_binding, c_binding],
                         _ceil_div((b1 - b0) * seq_len * 2 * hidden, 256), params)
            vector_rows = head_dim % 4 == 0 and hidden % 4 == 0 and q_shift % 4 == 0 \
                and c_shift % 4 == 0 and o_shift % 4 == 0
            if seq_len == 1 and self.subgroup_matvec and vector_rows:
                scratch = self._new(((b1 - b0) * num_heads, max_length))
                self._record("attention_subgroups.wgsl", "attend_decode",
                             [q_binding, Binding(2, c_binding.buffer, c_binding.offset,
                                                 c_binding.size), o_binding,
                              self._bind(4, scratch)[0]],
                             (b1 - b0) * num_heads, params)
            else:
                self._record("attention.wgsl", "attend", [q_binding, c_binding, o_binding],
                             (b1 - b0) * seq_len * num_heads, params)
        return out

    def _select_position(self, x: WebGPUTensor, index: int) -> WebGPUTensor:
        batch, seq_len, hidden = x.shape
        out = self._new((batch, 1, hidden))
        for b0, b1 in self._batch_chunks(batch, x, seq_len * hidden, hidden):
            # The window starts at the first selected row, so the kernel's index is 0.
            x_binding, x_shift = self._bind(1, x, (b0 * seq_len + index) * hidden,
                                            ((b1 - 1) * seq_len + index + 1) * hidden)
            out_binding, out_shift = self._bind(2, out, b0 * hidden, b1 * hidden)
            self._record("select.wgsl", "select_rows", [x_binding, out_binding],
                         _ceil_div((b1 - b0) * hidden, 256),
                         self._params(b1 - b0, seq_len, hidden, 0, x_shift, out_shift))
        return out

    def _reverse_embedding(self, x: WebGPUTensor, token_table: WebGPUTensor) -> WebGPUTensor:
        vocabulary, hidden = token_table.shape
        out = self._new(x.shape[:-1] + (vocabulary,))
        rows = x.size // hidden
        f16 = token_table.dtype == "float16"
        for buffer, size, first, count in self._table(token_table):
            self._matmul(x, rows, hidden, Binding(2, buffer, 0, size), token_table.row_words,
                         count, f16, out, vocabulary, first)
        return out

    # ---- sampling primitives -------------------------------------------------------------
    @staticmethod
    def _logit_rows(logits: WebGPUTensor) -> tuple[int, int]:
        return logits.shape[0], logits.shape[-1]

    def _sampling(self, entry: str, logits: WebGPUTensor, rows: int, vocabulary: int,
                  out: WebGPUTensor, extra: dict[int, WebGPUTensor], scratch: Any = None,
                  top_k: int = 0, temperature: float = 1.0, top_p: float = 1.0) -> None:
        out_index = 2 if out.dtype == "int32" else 4
        chunk_tensors = [(logits, vocabulary)]
        if scratch is not None:
            chunk_tensors.append((scratch, vocabulary))
        for r0, r1 in self._row_chunks(rows, chunk_tensors):
            x_binding, x_shift = self._bind(1, logits, r0 * vocabulary, r1 * vocabulary)
            bindings = [x_binding, self._bind(out_index, out)[0]]
            bindings += [self._bind(i, t)[0] for i, t in extra.items()]
            s_shift = 0
            if scratch is not None:
                s_binding, s_shift = self._bind(6, scratch, r0 * vocabulary, r1 * vocabulary)
                bindings.append(s_binding)
            self._record("sampling.wgsl", entry, bindings, r1 - r0,
                         self._params(r1 - r0, vocabulary, x_shift, r0, s_shift, top_k,
                                      float(temperature), float(top_p)))

    def _argmax(self, logits: WebGPUTensor) -> list[int]:
        rows, vocabulary = self._logit_rows(logits)
        out = self._new((rows,), "int32")
        self._sampling("argmax", logits, rows, vocabulary, out, {})
        return array("i", self._read(out.buffer, 0, rows * 4)).tolist()

    def _sample(self, logits: WebGPUTensor, uniforms: list[float], temperature: float,
                top_k: int, top_p: float) -> list[int]:
        rows, vocabulary = self._logit_rows(logits)
        draws = self._tensor(uniforms, "float32")
        out = self._new((rows,), "int32")
        scratch = self._new((rows, vocabulary))
        top_k = top_k if top_k < vocabulary else 0
        self._sampling("sample", logits, rows, vocabulary, out, {5: draws}, scratch,
                       top_k=top_k, temperature=temperature, top_p=top_p)
        return array("i", self._read(out.buffer, 0, rows * 4)).tolist()

    def _token_log_probs(self, logits: WebGPUTensor,
                         target_ids: WebGPUTensor) -> list[list[float]]:
        batch, seq_len, vocabulary = logits.shape
        rows = batch * seq_len
        out = self._new((rows,))
        self._sampling("log_probs", logits, rows, vocabulary, out, {3: target_ids})
        values = array("f", self._read(out.buffer, 0, rows * 4)).tolist()
        return [values[b * seq_len:(b + 1) * seq_len] for b in range(batch)]

    # ---- measurement -----------------------------------------------------------------------
    def stream(self, weights: Sequence[WebGPUTensor]) -> None:
        """Read every byte of these weights once on the device and wait: the streaming floor
        that benchmarks compare a decode step against (stream.wgsl, one submission)."""
        sink = self._new((4,), "int32")
        for w in weights:
            if w.layout == "linear":
                parts = [(w.buffer, w.buffer_size, w.shape[1])]
            elif w.layout == "embedding":
                parts = [(buffer, size, rows) for buffer, size, _, rows in w.chunks]
            else:
                parts = [(w.buffer, w.buffer_size, w.buffer_size // 16)]
            for buffer, size, rows in parts:
                row_words = size // 16 // rows
                self._record("stream.wgsl", "stream",
                             [Binding(1, buffer, 0, size), self._bind(2, sink)[0]],
                             _ceil_div(rows, 16), self._params(rows, row_words))
        self._read(sink.buffer, 0, 4)

    # ---- device information ----------------------------------------------------------------
    def describe(self) -> dict:
        info = self.driver.info
        return {
            "name": self.name,
            "adapter": info.name,
            "backend_type": info.backend_type,
            "driver": info.driver,
            "dtype": self.dtype,
            "limits": dict(info.limits),
            "max_binding_size": self.max_binding_size,
            "features": sorted(info.features),
            "subgroup_kernels": self.subgroup_matvec,
        }
