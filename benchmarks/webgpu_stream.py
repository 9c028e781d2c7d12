"""The weight-streaming floor of the webgpu backend's decode step, on its own device.

`stream(backend, weights)` reads every byte of these weights once on the device (stream.wgsl,
beside this file, in one submission) and waits: the time a decode step that reads its weights
once cannot beat, which benchmarks/webgpu_decode.py compares the decode step against. It is
measurement, not a backend operation: it records its kernel through the backend's recorder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from webgpt2.backends.webgpu import WebGPUBackend, WebGPUTensor
from webgpt2.backends.webgpu.driver import Binding
from webgpt2.backends.webgpu.tensor import ceil_div

STREAM_WGSL = (Path(__file__).resolve().parent / "stream.wgsl").read_text(encoding="utf-8")


def weight_parts(w: WebGPUTensor) -> list[tuple[object, int, int]]:
    """(buffer, bytes, stored rows) of each buffer that holds the weight."""
    if w.layout == "linear":
        return [(w.buffer, w.buffer_size, w.shape[1])]
    if w.layout == "embedding":
        return [(buffer, size, rows) for buffer, size, _, rows in w.chunks]
    return [(w.buffer, w.buffer_size, w.buffer_size // 16)]


def stream(backend: WebGPUBackend, weights: Sequence[WebGPUTensor]) -> None:
    """Read every byte of these weights once on the device, in one submission, and wait."""
    kernel = backend.recorder.kernel("stream.wgsl", "stream", STREAM_WGSL)
    rows_per_workgroup = kernel.constants["ROWS_PER_WORKGROUP"]
    sink = backend.buffers.new((4,), "int32")
    for w in weights:
        for buffer, size, rows in weight_parts(w):
            backend.recorder.dispatch(
                kernel, [Binding(1, buffer, 0, size), backend.buffers.bind(2, sink)[0]],
                ceil_div(rows, rows_per_workgroup), rows=rows, row_words=size // 16 // rows)
    backend.recorder.read(sink.buffer, 0, 4)
