"""The WebGPU backend: GPT-2's operations as WGSL kernels from `shaders/`, run through a
`Driver`.

Weights are uploaded once and stay resident, in the layouts the kernels read (weights.py;
float16 storage is packed two values per u32 word, arithmetic stays float32). The KV cache
stays on the device, head-major so that attention reads each head's keys contiguously.
Operations record dispatches (recorder.py) on pooled buffers, bound in windows where a
tensor is larger than one binding (buffers.py); the host waits only where it needs data
(`to_list`, `argmax`, `sample`, `token_log_probs`), so a greedy decode step is one
submission and a 4-byte read back per row.

This module needs no numpy: host data crosses as `bytes`, `array` and Python lists, so it
runs unchanged in a Pyodide without numpy.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any

from webgpt2.backends.base import Backend, HostTensor
from webgpt2.backends.host import packed
from webgpt2.backends.replay import StepReplayer
from webgpt2.backends.webgpu import attention, generation, tuning
from webgpt2.backends.webgpu.buffers import Buffers
from webgpt2.backends.webgpu.device_profile import SMALL, choose_profile
from webgpt2.backends.webgpu.driver import Binding, Driver, DriverError
from webgpt2.backends.webgpu.linear import record_matmul
from webgpt2.backends.webgpu.recorder import Recorder
from webgpt2.backends.webgpu.tensor import (
    WebGPUTensor,
    ceil_div,
    nest,
    position_major,
    stored_rows,
)
from webgpt2.backends.webgpu.weights import upload_embedding, upload_linear, upload_plain


class WebGPUBackend(Backend):
    """GPT-2's operations as WGSL compute kernels on a WebGPU device.

    driver: a `Driver` (the native wgpu-py one by default). dtype: the storage dtype of
    linear weights and the token table ("float32" or "float16"). max_binding_size: use at
    most this many bytes per storage binding (the device's limit by default; smaller values
    exercise the big-buffer paths in tests). device_profile: "small" or "large" forces the
    kernel shapes of a CPU-like or a many-unit device (device_profile.py), "measure" times
    both once per adapter (tuning.py); by default they are chosen from the adapter's type.
    f16_arithmetic: multiply float16 weights in f16 (shader-f16), by default where the
    device profile is "large" (measured with it where the profile is).
    kv_dtype: "float16" stores the KV caches made by `zeros` as float16 (half the memory and
    the attention reads; arithmetic stays float32). Setting `poison = True` fills every new
    activation buffer with NaN first, so a kernel that leaves an element unwritten shows.
    `recorder` (kernels, dispatches, submission) and `buffers` (activation memory and
    bindings) are there for code that runs kernels of its own, such as benchmarks.

    Example:
        >>> from webgpt2.backends.webgpu import WebGPUBackend
        >>> b = WebGPUBackend()  # doctest: +SKIP
        >>> b.argmax(b.tensor([[0.1, 3.0, 2.0]], "float32"))  # doctest: +SKIP
        [1]
    """

    name = "webgpu"
    storage_dtypes = ("float32", "float16")

    def __init__(self, driver: Driver | None = None, dtype: str = "float32",
                 max_binding_size: int | None = None,
                 device_profile: str | None = None, kv_dtype: str = "float32",
                 f16_arithmetic: bool | None = None) -> None:
        if driver is None:
            if sys.platform == "emscripten":  # in a web page: the browser's navigator.gpu
                from webgpt2.backends.webgpu.browser import BrowserDriver

                driver = BrowserDriver()
            else:
                from webgpt2.backends.webgpu.native import NativeDriver

                driver = NativeDriver()
        for name, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
            if value not in ("float32", "float16"):
                raise ValueError(f"{name} {value!r}; expected 'float32' or 'float16'")
        self.kv_dtype = kv_dtype
        self.driver = driver
        self.dtype = dtype
        binding_limit = int(driver.info.limits.get("max_storage_buffer_binding_size", 128 << 20))
        if max_binding_size is not None:
            binding_limit = min(binding_limit, int(max_binding_size))
        profile = choose_profile(driver.info, device_profile)
        self.device_profile = SMALL if profile is None else profile  # until measured
        self.recorder = Recorder(driver)
        self.buffers = Buffers(self.recorder, binding_limit)
        # Subgroup kernels, each after a probe that its reduction or broadcast gives the
        # right values here (adapters report subgroup sizes unreliably).
        self.subgroup_matvec = self._probe("linear_subgroups.wgsl", "probe_lane_groups",
                                           lambda i: 8 * (i & ~7) + 28)
        self.lane_broadcast = self._probe("linear_broadcast.wgsl", "probe_broadcast",
                                          lambda i: (i & ~7) + 3)
        # Float16 arithmetic for float16 weights (linear_half.wgsl) where the adapter has
        # shader-f16: a GPU's f16 runs at least at its f32 rate, a CPU adapter emulates it.
        has_f16 = "shader-f16" in driver.info.features
        if f16_arithmetic and not has_f16:
            raise ValueError("f16_arithmetic=True needs an adapter with shader-f16; "
                             f"{driver.info.name} has none")
        self.f16_arithmetic = has_f16 and (self.device_profile.name == "large"
                                           if f16_arithmetic is None else f16_arithmetic)
        if profile is None:
            tuning.measure_choices(self, tuning.cache_file(), f16_arithmetic is None)
        self.reset_counters()  # the probe above is not the caller's work

    @property
    def poison(self) -> bool:
        return self.buffers.poison

    @poison.setter
    def poison(self, value: bool) -> None:
        self.buffers.poison = value

    @property
    def max_binding_size(self) -> int:
        return self.buffers.max_binding_size

    @property
    def counters(self) -> dict[str, int]:
        """Dispatches, submissions, read-backs and bytes moved since `reset_counters()`."""
        return self.recorder.counters

    def reset_counters(self) -> None:
        """Zero the dispatch / submission / read-back counters (for benchmarks)."""
        self.recorder.reset_counters()

    def flush(self) -> None:
        """Submit every pending dispatch now, in one command buffer."""
        self.recorder.flush()

    def _probe(self, file_name: str, entry: str, expected: Any) -> bool:
        """Whether a subgroup probe kernel writes expected(i) at every index i.

        linear_subgroups.wgsl's lane-group sums need subgroups of 8 or more consecutive
        invocations, linear_broadcast.wgsl's broadcasts subgroups of exactly 8."""
        if "subgroups" not in self.driver.info.features:
            return False
        try:
            probe = self.recorder.kernel(file_name, entry)
            out = self.buffers.new((probe.workgroup_size,))
            # A probe reads only p.m, so that its layout keeps the Params binding.
            self.recorder.dispatch(probe, [Binding(5, out.buffer, 0, out.buffer_size)], 1,
                                    **dict.fromkeys(probe.fields, 0))
            values = array("f", self._read(out, probe.workgroup_size)).tolist()
            self.release(out)
        except DriverError:
            self.recorder.discard()
            return False
        return all(v == expected(i) for i, v in enumerate(values))

    def _cpu_lanes(self) -> bool:
        """Whether the one-subgroup-per-workgroup kernels (layer_norm_lanes.wgsl,
        attend_prompt) suit: a small device whose subgroups are exactly 8 lanes (a GPU with
        8-lane subgroups would run far too few invocations per workgroup)."""
        return self.lane_broadcast and self.device_profile.name == "small"

    def _read(self, x: WebGPUTensor, count: int) -> bytes:
        """The first `count` 4-byte values of x's buffer, once pending work has run."""
        return self.recorder.read(x.buffer, 0, count * 4)

    # ---- host <-> backend -----------------------------------------------------------------
    def _tensor(self, values: Any, dtype: str) -> WebGPUTensor:
        data, shape, dtype = packed(values, dtype)
        tensor = self.buffers.new(shape, dtype)
        if data:
            self.recorder.write(tensor.buffer, data.tobytes())
        if dtype == "int32":
            tensor.host = list(data)
        return tensor

    def to_list(self, x: WebGPUTensor) -> list:
        if x.layout == "linear":
            k, n = x.shape
            data = self.recorder.read(x.buffer, 0, n * x.row_words * 16)
            columns = stored_rows(data, n, x.row_words, x.dtype, k)
            return [[columns[c][r] for c in range(n)] for r in range(k)]
        if x.layout == "embedding":
            out = []
            for buffer, _, _, count in x.chunks:
                data = self.recorder.read(buffer, 0, count * x.row_words * 16)
                out.extend(stored_rows(data, count, x.row_words, x.dtype, x.shape[1]))
            return out
        if x.size == 0:
            return nest([], x.shape) if x.shape else []
        if x.dtype == "float16":
            flat = list(struct.unpack(f"<{x.size}e", self.recorder.read(x.buffer, 0,
                                                                         x.size * 2)))
        else:
            flat = array("i" if x.dtype == "int32" else "f", self._read(x, x.size)).tolist()
        if x.layout == "cache":
            flat = position_major(flat, x.shape)
        return nest(flat, x.shape)

    def shape(self, x: WebGPUTensor) -> tuple[int, ...]:
        return x.shape

    def _zeros(self, shape: tuple[int, ...], dtype: str) -> WebGPUTensor:
        """Zeros. A float 6-D tensor is taken for a KV cache [B, L, 2, T, nh, hd] and stored
        head-major ([B, L, 2, nh, T, hd] in memory), so that each head's keys and values are
        contiguous for attention; `to_list` still returns the [B, L, 2, T, nh, hd] order. Its
        storage is the backend's kv_dtype."""
        cache = len(shape) == 6 and dtype != "int32"
        storage = self.kv_dtype if cache else "int32" if dtype == "int32" else "float32"
        tensor = self.buffers.new(shape, storage, zeroed=True, label="zeros")
        if cache:
            tensor.layout = "cache"
        return tensor

    def release(self, x: WebGPUTensor) -> None:
        if x._finalizer is not None:
            x._finalizer()

    def step_replayer(self) -> StepReplayer:
        """Replays greedy decode steps (backends/replay.py) from the calls of the driver that
        the recorder and the buffer pool share: the ids' write, the parameters' write, the
        submit and the read."""
        recorder, buffers = self.recorder, self.buffers

        def install(driver: Any) -> Any:
            replaced, recorder.driver = recorder.driver, driver
            buffers.driver = driver
            return replaced

        return StepReplayer(install, lambda: buffers.allocations, recorder.idle,
                            frozenset(("write_buffer", "submit", "read_buffer")))

    def _upload(self, host: HostTensor, layout: str, dtype: str | None) -> WebGPUTensor:
        storage = dtype or self.dtype
        if layout == "plain":
            return upload_plain(self.buffers, host)
        if layout == "linear":
            return upload_linear(self.buffers, host, storage)
        return upload_embedding(self.buffers, host, storage)

    # ---- model operations -------------------------------------------------------------------
    def _int_values(self, x: WebGPUTensor) -> list[int]:
        return x.host if x.host is not None else array("i", self._read(x, x.size)).tolist()

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
        out = self.buffers.new((batch, seq_len, hidden))
        kernel = self.recorder.kernel("embedding.wgsl", "embed")
        h_blocks = ceil_div(hidden, kernel.workgroup_size)
        for r0, r1 in self.buffers.row_chunks(batch * seq_len, [(out, hidden)]):
            ids_binding, ids_shift = self.buffers.bind(1, token_ids, r0, r1)
            pos_binding, pos_shift = self.buffers.bind(3, position_table)
            out_binding, out_shift = self.buffers.bind(4, out, r0 * hidden, r1 * hidden)
            for buffer, size, first, count in self._table(token_table):
                if not any(first <= i < first + count for i in ids[r0:r1]):
                    continue
                self.recorder.dispatch(
                    kernel, [ids_binding, Binding(2, buffer, 0, size), pos_binding, out_binding],
                    (r1 - r0) * h_blocks,
                    rows=r1 - r0, seq_len=seq_len, hidden=hidden,
                    table_stride=token_table.row_words * 4, chunk_first=first,
                    chunk_rows=count, start_position=start_position,
                    table_f16=token_table.dtype == "float16", ids_offset=ids_shift,
                    position_offset=pos_shift, out_offset=out_shift, h_blocks=h_blocks,
                    row_first=r0,
                )
        return out

    def _layer_norm(self, x: WebGPUTensor, gamma: WebGPUTensor, beta: WebGPUTensor,
                    epsilon: float) -> WebGPUTensor:
        hidden = x.shape[-1]
        rows = x.size // hidden if hidden else 0
        out = self.buffers.new(x.shape)
        for r0, r1 in self.buffers.row_chunks(rows, [(x, hidden), (out, hidden)]):
            x_binding, x_shift = self.buffers.bind(1, x, r0 * hidden, r1 * hidden)
            y_binding, y_shift = self.buffers.bind(4, out, r0 * hidden, r1 * hidden)
            if self._cpu_lanes() and (hidden | x_shift | y_shift) % 4 == 0:
                kernel = self.recorder.kernel("layer_norm_lanes.wgsl", "layer_norm_lanes")
            else:
                kernel = self.recorder.kernel("layer_norm.wgsl", "layer_norm")
            self.recorder.dispatch(
                kernel, [x_binding, self.buffers.bind(2, gamma)[0],
                         self.buffers.bind(3, beta)[0], y_binding],
                r1 - r0,  # a workgroup per row
                rows=r1 - r0, hidden=hidden, epsilon=epsilon, x_offset=x_shift,
                y_offset=y_shift,
            )
        return out

    def _linear(self, x: WebGPUTensor, weight: WebGPUTensor, bias: WebGPUTensor | None,
                activation: str | None, residual: WebGPUTensor | None) -> WebGPUTensor:
        if weight.layout != "linear":
            raise ValueError(f"linear weights must be uploaded with layout='linear'; got "
                             f"layout {weight.layout!r}")
        k, n = weight.shape
        out = self.buffers.new(x.shape[:-1] + (n,))
        record_matmul(self, x, x.size // k, k, Binding(2, weight.buffer, 0, weight.buffer_size),
                     weight.row_words, n, weight.dtype == "float16", out, n, 0, bias,
                     activation == "gelu", residual)
        return out

    def _cached_attention(self, qkv: WebGPUTensor, cache: WebGPUTensor, layer_index: int,
                          cache_update_index: int, num_heads: int,
                          last_position_only: bool) -> WebGPUTensor:
        # attention.py chooses the kernels (decode, prompt blocks on the large profile, ...).
        return attention.cached_attention(self, qkv, cache, layer_index, cache_update_index,
                                          num_heads, last_position_only)

    def _select_position(self, x: WebGPUTensor, index: int) -> WebGPUTensor:
        batch, seq_len, hidden = x.shape
        out = self.buffers.new((batch, 1, hidden))
        kernel = self.recorder.kernel("select.wgsl", "select_rows")
        for b0, b1 in self.buffers.batch_chunks(batch, x, seq_len * hidden, hidden):
            # The window starts at the first selected row, so the kernel's index is 0.
            x_binding, x_shift = self.buffers.bind(1, x, (b0 * seq_len + index) * hidden,
                                                    ((b1 - 1) * seq_len + index + 1) * hidden)
            out_binding, out_shift = self.buffers.bind(2, out, b0 * hidden, b1 * hidden)
            self.recorder.dispatch(
                kernel, [x_binding, out_binding],
                ceil_div((b1 - b0) * hidden, kernel.workgroup_size),
                batch=b1 - b0, seq_len=seq_len, hidden=hidden, index=0, x_offset=x_shift,
                out_offset=out_shift,
            )
        return out

    def _reverse_embedding(self, x: WebGPUTensor, token_table: WebGPUTensor) -> WebGPUTensor:
        vocabulary, hidden = token_table.shape
        out = self.buffers.new(x.shape[:-1] + (vocabulary,))
        rows = x.size // hidden
        f16 = token_table.dtype == "float16"
        for buffer, size, first, count in self._table(token_table):
            record_matmul(self, x, rows, hidden, Binding(2, buffer, 0, size), token_table.row_words,
                         count, f16, out, vocabulary, first)
        return out

    # ---- sampling primitives -------------------------------------------------------------
    def _sampling(self, entry: str, logits: WebGPUTensor, rows: int, vocabulary: int,
                  out: WebGPUTensor, extra: dict[int, WebGPUTensor], scratch: Any = None,
                  top_k: int = 0, temperature: float = 1.0, top_p: float = 1.0) -> None:
        out_index = 2 if out.dtype == "int32" else 4
        chunk_tensors = [(logits, vocabulary)]
        if scratch is not None:
            chunk_tensors.append((scratch, vocabulary))
        kernel = self.recorder.kernel("sampling.wgsl", entry)
        bind = self.buffers.bind
        for r0, r1 in self.buffers.row_chunks(rows, chunk_tensors):
            x_binding, x_shift = bind(1, logits, r0 * vocabulary, r1 * vocabulary)
            bindings = [x_binding, bind(out_index, out)[0]]
            bindings += [bind(i, t)[0] for i, t in extra.items()]
            s_shift = 0
            if scratch is not None:
                s_binding, s_shift = bind(6, scratch, r0 * vocabulary, r1 * vocabulary)
                bindings.append(s_binding)
            self.recorder.dispatch(
                kernel, bindings, r1 - r0,  # a workgroup per row
                rows=r1 - r0, vocab=vocabulary, x_offset=x_shift, out_offset=r0,
                scratch_offset=s_shift, top_k=top_k, temperature=temperature, top_p=top_p,
            )

    def _argmax(self, logits: WebGPUTensor) -> list[int]:
        rows, vocabulary = logits.shape[0], logits.shape[-1]
        out = self.buffers.new((rows,), "int32")
        self._sampling("argmax", logits, rows, vocabulary, out, {})
        return array("i", self._read(out, rows)).tolist()

    def _sample(self, logits: WebGPUTensor, uniforms: list[float], temperature: float,
                top_k: int, top_p: float) -> list[int]:
        rows, vocabulary = logits.shape[0], logits.shape[-1]
        draws = self._tensor(uniforms, "float32")
        out = self.buffers.new((rows,), "int32")
        scratch = self.buffers.new((rows, vocabulary))
        top_k = top_k if top_k < vocabulary else 0
        self._sampling("sample", logits, rows, vocabulary, out, {5: draws}, scratch,
                       top_k=top_k, temperature=temperature, top_p=top_p)
        return array("i", self._read(out, rows)).tolist()

    def _token_log_probs(self, logits: WebGPUTensor,
                         target_ids: WebGPUTensor) -> list[list[float]]:
        batch, seq_len, vocabulary = logits.shape
        rows = batch * seq_len
        out = self.buffers.new((rows,))
        self._sampling("log_probs", logits, rows, vocabulary, out, {3: target_ids})
        values = array("f", self._read(out, rows)).tolist()
        return [values[b * seq_len:(b + 1) * seq_len] for b in range(batch)]

    # ---- generation operations, on the device (generation.py) -------------------------------
    def _log_softmax(self, logits: WebGPUTensor) -> WebGPUTensor:
        return generation.log_softmax(self, logits)

    def _top_k(self, x: WebGPUTensor, k: int) -> tuple[list, list]:
        return generation.top_k(self, x, k)

    def _apply_repetition_penalty(self, logits: WebGPUTensor, token_ids: Any,
                                  penalty: float) -> WebGPUTensor:
        return generation.apply_repetition_penalty(self, logits, token_ids, penalty)

    def _mask_tokens(self, logits: WebGPUTensor, token_ids: Any, value: float) -> WebGPUTensor:
        return generation.mask_tokens(self, logits, token_ids, value)

    def _gather_batch(self, x: WebGPUTensor, indices: list[int]) -> WebGPUTensor:
        return generation.gather_batch(self, x, indices)

    def _reorder_cache(self, cache: WebGPUTensor, indices: list[int], start: int,
                       end: int) -> WebGPUTensor:
        return generation.reorder_cache(self, cache, indices, start, end)

    def _concatenate(self, tensors: list[WebGPUTensor], axis: int) -> WebGPUTensor:
        return generation.concatenate(self, tensors, axis)

    def _max_cosine_similarity(self, context: WebGPUTensor,
                               candidates: WebGPUTensor) -> list[float]:
        return generation.max_cosine_similarity(self, context, candidates)

    # ---- device information ----------------------------------------------------------------
    def memory_limit_bytes(self) -> int | None:
        # The largest buffer the device makes: a KV cache or a batch's logits is one.
        return self.buffers.max_buffer_size

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
            "broadcast_kernels": self.lane_broadcast,
            "f16_arithmetic": self.f16_arithmetic,
            "device_profile": self.device_profile.name,
        }
