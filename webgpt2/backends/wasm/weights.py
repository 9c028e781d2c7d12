"""Weights into the wasm backend's linear memory: converted (float32, float16, bfloat16) in
bounded staging blocks, Conv1D weights transposed to [N, K] by a kernel, and float16 weights
packed for the kernels (scaled by 2^10, groups of 8 permuted; a linear layer's in panels of
32 outputs: wasm/common.h says why)."""

from __future__ import annotations

from typing import Any

from webgpt2.backends.host import ITEMSIZE, HostTensor
from webgpt2.backends.wasm.tensor import WasmTensor

# Upload conversions go through a staging block of at most this many bytes at a time.
_STAGING_BYTES = 16 << 20


def upload(b: Any, host: HostTensor, layout: str, dtype: str | None) -> WasmTensor:
    """A weight copied into linear memory once (see the backend's module docstring)."""
    if host.dtype == "int32":
        tensor = b._new(host.shape, "int32")
        b._write(tensor.offset, memoryview(host.data).cast("B"))
        return tensor
    storage = "float32" if layout == "plain" else (dtype or b.dtype)
    data = memoryview(host.data).cast("B")
    if storage == "float16" and layout == "linear":
        return _upload_panels(b, data, host)
    nbytes = host.size * ITEMSIZE[storage]
    if storage == "float16":  # packed in whole groups of 8 halves
        nbytes = -(-host.size // 8) * 16
    tensor = b._new(host.shape, storage, layout, nbytes)
    if layout != "linear":
        _convert_rows(b, data, host.dtype, storage, tensor.offset, host.size)
    else:
        _upload_transposed(b, data, host, tensor.offset)
    if storage == "float16":
        if b._call("count_unpackable_f16", tensor.offset, host.size):
            # An infinity, a NaN or |w| >= 64: the packed form cannot hold it exactly.
            b.release(tensor)
            return upload(b, host, layout, "float32")
        b._call("pack_f16", tensor.offset, host.size)
    return tensor


def _upload_panels(b: Any, data: memoryview, host: HostTensor) -> WasmTensor:
    """A Conv1D weight [K, N] as float16 in panels of 32 outputs (wasm/common.h): narrowed
    into a staging block, then packed into place; float32 if a half cannot be packed."""
    k, n = host.shape
    staging = b._temporary(host.size * 2)
    try:
        _convert_rows(b, data, host.dtype, "float16", staging, host.size)
        if b._call("count_unpackable_f16", staging, host.size):
            # An infinity, a NaN or |w| >= 64: the packed form cannot hold it exactly.
            return upload(b, host, "linear", "float32")
        tensor = b._new(host.shape, "float16", "linear", -(-n // 32) * 32 * k * 2)
        b._call("pack_panels_f16", staging, tensor.offset, k, n)
        return tensor
    finally:
        b._done(staging, host.size * 2)


def _upload_transposed(b: Any, data: memoryview, host: HostTensor, destination: int) -> None:
    """A float32 [K, N] -> [N, K]: converted into a staging block, then transposed into
    place (float16 goes into panels instead, _upload_panels)."""
    k, n = host.shape
    staging = b._temporary(host.size * 4)
    try:
        _convert_rows(b, data, host.dtype, "float32", staging, host.size)
        b._call("transpose_32", staging, destination, k, n)
    finally:
        b._done(staging, host.size * 4)


def _convert_rows(b: Any, data: memoryview, source: str, storage: str, destination: int,
                  count: int) -> None:
    """Write `count` values of dtype `source` into memory at `destination` as `storage`,
    through a bounded staging block when they need converting."""
    if source == storage:
        b._write(destination, data)
        return
    kernel = {("float32", "float16"): "narrow_f16", ("float16", "float32"): "widen_binary16",
              ("bfloat16", "float32"): "widen_bf16"}.get((source, storage))
    if kernel is None:  # bfloat16 -> float16: by way of float32
        widened = b._temporary(count * 4)
        try:
            _convert_rows(b, data, source, "float32", widened, count)
            b._call("narrow_f16", widened, destination, count)
        finally:
            b._done(widened, count * 4)
        return
    in_size, out_size = ITEMSIZE[source], ITEMSIZE[storage]
    chunk = max(1, _STAGING_BYTES // in_size)
    staging = b._temporary(min(count, chunk) * in_size)
    try:
        for first in range(0, count, chunk):
            n = min(chunk, count - first)
            b._write(staging, data[first * in_size:(first + n) * in_size])
            b._call(kernel, staging, destination + first * out_size, n)
    finally:
        b._done(staging, min(count, chunk) * in_size)
