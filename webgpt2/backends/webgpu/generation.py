"""The generation operations of the webgpu backend on the device (shaders/generation.wgsl):
log-softmax, top-k, repetition penalty, token masks, the batch gather, the cache reorder of
beam search, concatenation and contrastive search's cosine similarity.

A beam or contrastive step then reads back only the k candidates' ids and scores (and one
penalty per candidate), not its rows of logits. Where a tensor is larger than one storage
binding, or k is above the kernel's MAX_K, the interface's host defaults (host_ops.py) do
the work instead: correct everywhere, only slower.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from webgpt2.backends import host_ops
from webgpt2.backends.webgpu.tensor import WebGPUTensor, ceil_div

if TYPE_CHECKING:
    from webgpt2.backends.webgpu.backend import WebGPUBackend

_SHADER = "generation.wgsl"
_MAX_COPIES = 256  # beyond this many buffer copies, concatenate goes through the host
_PARAMS = dict(rows=0, width=0, x_offset=0, out_offset=0, k=0, entries=0, mode=0, value=0.0,
               per_row=0, seq_len=0, count=0, start=0)


def _fits(b: WebGPUBackend, *tensors: WebGPUTensor) -> bool:
    return all(t.buffer_size <= b.max_binding_size and t.layout in ("plain", "cache")
               for t in tensors)


def _dispatch(b: WebGPUBackend, entry: str, bindings: dict[int, Any], workgroups: int,
              **params: float) -> None:
    kernel = b.recorder.kernel(_SHADER, entry)
    b.recorder.dispatch(kernel, [b.buffers.bind(i, t)[0] for i, t in bindings.items()],
                        workgroups, **dict(_PARAMS, **params))


def log_softmax(b: WebGPUBackend, logits: WebGPUTensor) -> WebGPUTensor:
    if not _fits(b, logits):
        return host_ops.log_softmax(b, logits)
    width = logits.shape[-1]
    rows = logits.size // width
    out = b.buffers.new(logits.shape)
    _dispatch(b, "log_softmax", {1: logits, 2: out}, rows, rows=rows, width=width)
    return out


def top_k(b: WebGPUBackend, x: WebGPUTensor, k: int) -> tuple[list, list]:
    max_k = b.recorder.kernel(_SHADER, "top_k").constants["MAX_K"]
    if k > max_k or not _fits(b, x):
        return host_ops.top_k(b, x, k)
    width = x.shape[-1]
    rows = x.size // width
    out = b.buffers.new((rows, 2 * k))
    _dispatch(b, "top_k", {1: x, 2: out}, rows, rows=rows, width=width, k=k)
    words = b.recorder.read(out.buffer, 0, rows * 2 * k * 4)
    b.release(out)
    floats, ints = array("f", words).tolist(), array("i", words).tolist()
    values = [floats[r * 2 * k:r * 2 * k + k] for r in range(rows)]
    indices = [ints[r * 2 * k + k:(r + 1) * 2 * k] for r in range(rows)]
    return values, indices


def _scatter(b: WebGPUBackend, logits: WebGPUTensor, targets: list[int], mode: int,
             value: float) -> WebGPUTensor:
    """A copy of the logits with `targets` (flat element indices) masked or penalised."""
    out = b.buffers.new(logits.shape)
    b.recorder.copy(logits.buffer, 0, out.buffer, 0, logits.size * 4)
    if targets:
        ids = b.tensor(targets, "int32")
        _dispatch(b, "scatter_tokens", {2: out, 3: ids}, ceil_div(len(targets), 64),
                  entries=len(targets), mode=mode, value=value)
        b.release(ids)
    return out


def _row_targets(logits: WebGPUTensor, token_ids: Sequence[Sequence[int]], distinct: bool
                 ) -> list[int]:
    width = logits.shape[-1]
    targets = []
    for row, ids in enumerate(token_ids):
        chosen = dict.fromkeys(ids) if distinct else ids
        targets += [row * width + t for t in chosen if 0 <= t < width]
    return targets


def apply_repetition_penalty(b: WebGPUBackend, logits: WebGPUTensor,
                             token_ids: Sequence[Sequence[int]], penalty: float) -> WebGPUTensor:
    if not _fits(b, logits):
        return host_ops.apply_repetition_penalty(b, logits, token_ids, penalty)
    return _scatter(b, logits, _row_targets(logits, token_ids, True), 1, penalty)


def mask_tokens(b: WebGPUBackend, logits: WebGPUTensor, token_ids: Sequence[Sequence[int]],
                value: float) -> WebGPUTensor:
    if not _fits(b, logits):
        return host_ops.mask_tokens(b, logits, token_ids, value)
    return _scatter(b, logits, _row_targets(logits, token_ids, True), 0, value)


def gather_batch(b: WebGPUBackend, x: WebGPUTensor, indices: list[int]) -> WebGPUTensor:
    if x.layout not in ("plain", "cache"):
        return host_ops.gather_batch(b, x, indices)
    row_bytes = x.size // x.shape[0] * (2 if x.dtype == "float16" else 4)
    out = b.buffers.new((len(indices),) + x.shape[1:], x.dtype, label="gather")
    out.layout = x.layout
    for i, source in enumerate(indices):  # rows are contiguous in every layout here
        b.recorder.copy(x.buffer, source * row_bytes, out.buffer, i * row_bytes, row_bytes)
    if x.host is not None:
        step = x.size // x.shape[0]
        out.host = [v for source in indices for v in x.host[source * step:(source + 1) * step]]
    return out


def reorder_cache(b: WebGPUBackend, cache: WebGPUTensor, indices: list[int], start: int,
                  end: int) -> WebGPUTensor:
    if cache.layout != "cache" or not _fits(b, cache):
        return host_ops.reorder_cache(b, cache, indices, start, end)
    batch, layers, _, length, heads, head_dim = cache.shape
    if cache.dtype == "float16":  # moved as words, two values each (head sizes are even)
        head_dim //= 2
    slices = layers * 2 * heads
    count = end - start
    slab = b.buffers.new((batch, slices, count, head_dim))
    rows = b.tensor(indices, "int32")
    params = dict(width=head_dim, k=slices, entries=slab.size, seq_len=length, count=count,
                  start=start)
    workgroups = ceil_div(slab.size, 256)
    _dispatch(b, "cache_gather", {1: cache, 2: slab, 3: rows}, workgroups, **params)
    _dispatch(b, "cache_scatter", {1: slab, 2: cache}, workgroups, **params)
    b.release(slab)
    b.release(rows)
    return cache


def concatenate(b: WebGPUBackend, tensors: list[WebGPUTensor], axis: int) -> WebGPUTensor:
    shapes = [t.shape for t in tensors]
    outer = 1
    for d in shapes[0][:axis]:
        outer *= d
    if any(t.layout != "plain" for t in tensors) or outer * len(tensors) > _MAX_COPIES \
            or len({t.dtype for t in tensors}) != 1:
        return host_ops.concatenate(b, tensors, axis)
    joined = sum(s[axis] for s in shapes)
    out = b.buffers.new(shapes[0][:axis] + (joined,) + shapes[0][axis + 1:], tensors[0].dtype)
    spans = [t.size // outer * 4 if outer else 0 for t in tensors]  # bytes per outer index
    row = sum(spans)
    for o in range(outer):
        offset = o * row
        for t, span in zip(tensors, spans):
            b.recorder.copy(t.buffer, o * span, out.buffer, offset, span)
            offset += span
    return out


def max_cosine_similarity(b: WebGPUBackend, context: WebGPUTensor,
                          candidates: WebGPUTensor) -> list[float]:
    if not _fits(b, context, candidates):
        return host_ops.max_cosine_similarity(b, context, candidates)
    rows, seq_len, hidden = context.shape
    n = candidates.shape[0]
    scores = b.buffers.new((n, seq_len))
    out = b.buffers.new((n,))
    params = dict(width=hidden, entries=n, per_row=n // rows, seq_len=seq_len)
    _dispatch(b, "cosine_scores", {1: candidates, 4: context, 5: scores},
              ceil_div(n * seq_len, 64), **params)
    _dispatch(b, "row_max", {2: out, 5: scores}, ceil_div(n, 64), **params)
    values = array("f", b.recorder.read(out.buffer, 0, n * 4)).tolist()
    b.release(scores)
    b.release(out)
    return values
