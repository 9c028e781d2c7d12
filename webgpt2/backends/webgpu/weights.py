"""Weights on the device, uploaded once in the layout the kernels read.

Conv1D weights are re-laid out `[N, K]` (one output row per matrix-vector row), the token
table is split into row chunks that each fit one storage binding, and float16 storage packs
two values per u32 word. The conversions run on the device (relayout.wgsl), from the host's
bytes as they are: float32, float16 or bfloat16.
"""

from __future__ import annotations

from typing import Any

from webgpt2.backends.base import ITEMSIZE, HostTensor
from webgpt2.backends.webgpu.buffers import Buffers
from webgpt2.backends.webgpu.driver import Binding, DriverError
from webgpt2.backends.webgpu.tensor import WebGPUTensor, ceil_div, row_words

_SOURCE_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def upload_plain(buffers: Buffers, host: HostTensor) -> WebGPUTensor:
    """Biases and layer norm parameters: float32 (or int32) as they are."""
    dtype = "int32" if host.dtype == "int32" else "float32"
    size = max(ceil_div(host.size * 4, 16) * 16, 16)
    buffer = buffers.driver.create_buffer(size, "storage", "weight")
    if host.dtype in ("float32", "int32"):
        if host.size:
            buffers.recorder.write(buffer, memoryview(host.data).cast("B")[:host.size * 4])
    else:
        _relayout(buffers, host, memoryview(host.data).cast("B"), buffer, rows=1,
                  cols=host.size, out_stride=host.size, out_f16=False, transpose=False)
    return buffers.own(WebGPUTensor(host.shape, dtype, buffer, size), [buffer])


def upload_linear(buffers: Buffers, host: HostTensor, storage: str) -> WebGPUTensor:
    """A Conv1D weight [K, N], stored [N, K] in `storage` with whole vec4<u32> rows."""
    k, n = host.shape
    words = row_words(k, storage)
    size = n * words * 16
    if size > buffers.max_binding_size:
        raise DriverError(
            f"linear weight {host.shape} needs {size} bytes, over the device's "
            f"max_storage_buffer_binding_size of {buffers.max_binding_size} bytes"
        )
    buffer = buffers.driver.create_buffer(size, "storage", "linear weight")
    _relayout(buffers, host, memoryview(host.data).cast("B"), buffer, rows=n, cols=k,
              out_stride=words * 4, out_f16=storage == "float16", transpose=True)
    tensor = WebGPUTensor(host.shape, storage, buffer, size, "linear")
    tensor.row_words = words
    return buffers.own(tensor, [buffer])


def upload_embedding(buffers: Buffers, host: HostTensor, storage: str) -> WebGPUTensor:
    """The token table [vocabulary, hidden] in `storage`, as row chunks that each fit one
    storage binding (GPT-2's 154 MB float32 table is over the usual 128 MiB)."""
    vocabulary, hidden = host.shape
    words = row_words(hidden, storage)
    row_bytes = words * 16
    source_row_bytes = hidden * ITEMSIZE[host.dtype]
    limit = min(buffers.max_binding_size, buffers.max_buffer_size)
    per_chunk = limit // max(row_bytes, source_row_bytes)
    if per_chunk < 1:
        raise DriverError(
            f"one embedding row of {max(row_bytes, source_row_bytes)} bytes exceeds the "
            f"device's max_storage_buffer_binding_size of {limit} bytes"
        )
    source = memoryview(host.data).cast("B")
    direct = host.dtype == "float32" and storage == "float32" and hidden % 4 == 0
    tensor = WebGPUTensor(host.shape, storage, None, 0, "embedding")
    tensor.row_words = words
    for first in range(0, vocabulary, per_chunk):
        rows = min(per_chunk, vocabulary - first)
        size = rows * row_bytes
        buffer = buffers.driver.create_buffer(size, "storage", f"token table rows {first}+")
        part = source[first * source_row_bytes:(first + rows) * source_row_bytes]
        if direct:
            buffers.recorder.write(buffer, part)
        else:
            part_host = HostTensor(host.dtype, (rows, hidden), part)
            _relayout(buffers, part_host, part, buffer, rows=rows, cols=hidden,
                      out_stride=words * 4, out_f16=storage == "float16", transpose=False)
        tensor.chunks.append((buffer, size, first, rows))
    tensor.buffer, tensor.buffer_size = tensor.chunks[0][0], tensor.chunks[0][1]
    return buffers.own(tensor, [c[0] for c in tensor.chunks])


def _relayout(buffers: Buffers, host: HostTensor, data: memoryview | bytes, destination: Any,
              rows: int, cols: int, out_stride: int, out_f16: bool, transpose: bool) -> None:
    """Stage host data on the device and convert it with relayout.wgsl."""
    staged = ceil_div(len(data), 4) * 4
    if staged > buffers.max_binding_size:
        raise DriverError(
            f"a {staged}-byte weight does not fit the device's "
            f"max_storage_buffer_binding_size of {buffers.max_binding_size} bytes"
        )
    staging = buffers.driver.create_buffer(max(staged, 4), "storage", "upload staging")
    if len(data) % 4:
        data = bytes(data) + bytes(4 - len(data) % 4)
    buffers.recorder.write(staging, data)
    words = rows * out_stride
    kernel = buffers.recorder.kernel("relayout.wgsl", "relayout")
    buffers.recorder.dispatch(
        kernel,
        [Binding(1, staging, 0, max(staged, 4)), Binding(2, destination, 0, words * 4)],
        ceil_div(words, kernel.workgroup_size),
        rows=rows, cols=cols, out_stride=out_stride,
        src_dtype=_SOURCE_DTYPE_CODES[host.dtype], out_f16=out_f16, transpose=transpose,
    )
    buffers.recorder.flush()
    buffers.driver.destroy_buffer(staging)
