"""Device memory for the webgpu backend: pooled activation buffers, and binding windows.

Released activation buffers are reused by size (`FreeList`): a decode step makes the same
sizes every step, and a reused buffer also reuses the bind groups that name it. A buffer
freed while recorded work may still use it goes back only after that work is submitted.

A storage binding holds at most `max_binding_size` bytes (128 MiB on most devices), less
than a long prompt's logits or a big KV cache. Kernels take element offsets into a bound
window, so an operation over a larger tensor binds an aligned window per chunk of rows
(`row_chunks`) or of batch rows (`batch_chunks`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

from webgpt2.backends.pool import DEFAULT_LIMIT_BYTES, FreeList
from webgpt2.backends.webgpu.driver import Binding, DriverError
from webgpt2.backends.webgpu.recorder import Recorder
from webgpt2.backends.webgpu.tensor import WebGPUTensor, ceil_div

# Larger activation buffers are destroyed, not pooled: few operations make them, and kept
# they would hold most of the budget.
_POOL_MAX_BUFFER = 64 << 20
_QUIET_NAN = b"\x00\x00\xc0\x7f"


class Buffers:
    """The activation buffers and storage bindings of one device.

    max_binding_size: bytes per storage binding (at most the device's limit). Setting
    `poison = True` fills every new activation buffer with NaN first, so a kernel that
    leaves an element unwritten shows.
    """

    def __init__(self, recorder: Recorder, max_binding_size: int) -> None:
        self.recorder = recorder
        self.driver = recorder.driver
        limits = self.driver.info.limits
        self.max_binding_size = max_binding_size
        self.max_buffer_size = int(limits.get("max_buffer_size", 256 << 20))
        self.alignment = int(limits.get("min_storage_buffer_offset_alignment", 256))
        self.poison = False
        self._pool: FreeList[Any] = FreeList(DEFAULT_LIMIT_BYTES, _POOL_MAX_BUFFER)
        self.allocations = 0  # tensors handed out so far (a replayed step checks it)
        self._placeholder = self.driver.create_buffer(16, "storage", "placeholder")

    def new(self, shape: Sequence[int], dtype: str = "float32", zeroed: bool = False,
            label: str = "") -> WebGPUTensor:
        """An activation tensor, back in the pool when released or garbage collected;
        `zeroed` ones are fresh buffers (WebGPU zeroes them). float16 tensors (KV caches)
        hold two values per 4-byte word."""
        nbytes = math.prod(shape) * (2 if dtype == "float16" else 4)
        self.allocations += 1
        if zeroed:
            size = max(ceil_div(nbytes, 16) * 16, 16)
            buffer = self.driver.create_buffer(size, "storage", label)
        else:
            size = max(ceil_div(nbytes, 256) * 256, 256)
            buffer = self._pool.take(size)
            if buffer is None:
                buffer = self.driver.create_buffer(size, "storage", label)
            if self.poison:
                self.recorder.write(buffer, _QUIET_NAN * (size // 4))
        tensor = WebGPUTensor(shape, dtype, buffer, size)
        tensor._finalizer = weakref.finalize(tensor, self._release, buffer, size)
        return tensor

    def own(self, tensor: WebGPUTensor, buffers: Sequence[Any]) -> WebGPUTensor:
        """Destroy these buffers (a weight's) when the tensor is released or collected."""
        tensor._finalizer = weakref.finalize(tensor, self._destroy_all, list(buffers))
        return tensor

    def _release(self, buffer: Any, size: int) -> None:
        self.recorder.when_idle(partial(self._recycle, buffer, size))

    def _recycle(self, buffer: Any, size: int) -> None:
        if not self._pool.give(size, buffer, size):
            self.driver.destroy_buffer(buffer)

    def _destroy_all(self, buffers: list) -> None:
        for buffer in buffers:
            self.recorder.when_idle(partial(self.driver.destroy_buffer, buffer))

    def bind(self, index: int, tensor_or_buffer: Any, first: int = 0,
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
        offset = start - start % self.alignment
        # Whole 16-byte words, for kernels that read vec4s (buffers are multiples of 16).
        stop = min(ceil_div((end if end is not None else size // 4) * 4, 16) * 16, size)
        if stop - offset > self.max_binding_size:
            raise DriverError(
                f"a {stop - offset}-byte range of a {size}-byte buffer does not fit the "
                f"device's max_storage_buffer_binding_size of {self.max_binding_size} bytes"
            )
        return Binding(index, buffer, offset, stop - offset), (start - offset) // 4

    def placeholder(self, index: int) -> Binding:
        """A binding for a kernel's optional input that this dispatch does not use."""
        return Binding(index, self._placeholder, 0, 16)

    def row_chunks(self, rows: int, tensors: Sequence[tuple[WebGPUTensor, int]]
                   ) -> list[tuple[int, int]]:
        """Split `rows` so that each (tensor, row width) has its rows' window in one binding."""
        per_chunk = rows
        for tensor, width in tensors:
            if tensor.buffer_size > self.max_binding_size:
                fit = (self.max_binding_size - self.alignment) // (width * 4)
                if fit < 1:
                    raise DriverError(
                        f"one row of {width * 4} bytes does not fit the device's "
                        f"max_storage_buffer_binding_size of {self.max_binding_size} bytes"
                    )
                per_chunk = min(per_chunk, fit)
        return [(r, min(r + per_chunk, rows)) for r in range(0, rows, max(per_chunk, 1))]

    def batch_chunks(self, batch: int, tensor: WebGPUTensor, stride: int, span: int
                     ) -> list[tuple[int, int]]:
        """Split `batch` so that each chunk's slices (`span` elements, `stride` apart) of
        `tensor` fit one binding."""
        if tensor.buffer_size <= self.max_binding_size:
            return [(0, batch)]
        room = self.max_binding_size - self.alignment - 16 - span * 4
        if room < 0:
            raise DriverError(
                f"a slice of {span * 4} bytes does not fit the device's "
                f"max_storage_buffer_binding_size of {self.max_binding_size} bytes"
            )
        per_chunk = 1 + room // (stride * 4)
        return [(b, min(b + per_chunk, batch)) for b in range(0, batch, per_chunk)]
