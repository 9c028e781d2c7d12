"""Host defaults of the generation operations, written with the interface's primitives.

Each reads the tensor back to the host, computes in Python and makes a new tensor, so it works
unchanged on every backend; a backend that keeps data resident overrides the `Backend`
method (`_log_softmax`, `_top_k`, ...) to stay on the device. Arguments arrive checked.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any


def flat_values(b: Any, x: Any) -> list:
    values = b.to_list(x)
    while values and isinstance(values[0], list):
        values = [v for row in values for v in row]
    return values


def reverse_embedding_argmax(b: Any, x: Any, token_table: Any) -> list[int]:
    logits = b._reverse_embedding(x, token_table)
    try:
        return b._argmax(logits)
    finally:
        b.release(logits)


def log_softmax(b: Any, logits: Any) -> Any:
    shape = b.shape(logits)
    out = []
    for row in _host_rows(b, logits):
        peak = max(row)
        log_norm = math.log(sum(math.exp(v - peak) for v in row)) + peak
        out.append([v - log_norm for v in row])
    return b.tensor(_unrows(out, shape), "float32")


def top_k(b: Any, x: Any, k: int) -> tuple[list[list[float]], list[list[int]]]:
    values, indices = [], []
    for row in _host_rows(b, x):
        order = heapq.nsmallest(k, range(len(row)), key=lambda i: (-row[i], i))
        values.append([row[i] for i in order])
        indices.append(order)
    return values, indices


def apply_repetition_penalty(b: Any, logits: Any, token_ids: Sequence[Sequence[int]],
                             penalty: float) -> Any:
    shape = b.shape(logits)
    rows = _host_rows(b, logits)
    for row, ids in zip(rows, token_ids):
        for t in set(ids):
            if 0 <= t < len(row):
                row[t] = row[t] * penalty if row[t] < 0 else row[t] / penalty
    return b.tensor(_unrows(rows, shape), "float32")


def mask_tokens(b: Any, logits: Any, token_ids: Sequence[Sequence[int]], value: float) -> Any:
    shape = b.shape(logits)
    rows = _host_rows(b, logits)
    for row, ids in zip(rows, token_ids):
        for t in ids:
            if 0 <= t < len(row):
                row[t] = value
    return b.tensor(_unrows(rows, shape), "float32")


def gather_batch(b: Any, x: Any, indices: Sequence[int]) -> Any:
    values = b.to_list(x)
    picked = [values[i] for i in indices]
    return b.tensor(picked, _dtype_of(picked))


def reorder_cache(b: Any, cache: Any, indices: Sequence[int], start: int, end: int) -> Any:
    values = b.to_list(cache)
    reordered = []
    for row, source in zip(values, indices):
        new_row = []
        for layer, source_layer in zip(row, values[source]):
            new_row.append([kv[:start] + source_kv[start:end] + kv[end:]
                            for kv, source_kv in zip(layer, source_layer)])
        reordered.append(new_row)
    out = b.tensor(reordered, "float32")
    b.release(cache)
    return out


def concatenate(b: Any, tensors: Sequence[Any], axis: int) -> Any:
    def join(parts: list, depth: int) -> list:
        if depth == axis:
            return [item for part in parts for item in part]
        return [join(list(group), depth + 1) for group in zip(*parts)]

    values = join([b.to_list(t) for t in tensors], 0)
    return b.tensor(values, _dtype_of(values))


def max_cosine_similarity(b: Any, context: Any, candidates: Any) -> list[float]:
    ctx = b.to_list(context)
    cands = b.to_list(candidates)
    if len(b.shape(candidates)) == 3:
        cands = [c[0] for c in cands]
    per_row = len(cands) // len(ctx)

    def unit(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(a * a for a in v))
        return [a / norm for a in v]

    unit_ctx = [[unit(h) for h in row] for row in ctx]
    out = []
    for n, cand in enumerate(cands):
        c = unit(cand)
        out.append(max(sum(a * b for a, b in zip(h, c)) for h in unit_ctx[n // per_row]))
    return out


def _host_rows(b: Any, x: Any) -> list[list[float]]:
    """The rows of a [B, V] or [B, 1, V] tensor as host lists."""
    values = b.to_list(x)
    return [row[0] for row in values] if len(b.shape(x)) == 3 else values


def _unrows(rows: list[list[float]], shape: tuple[int, ...]) -> list:
    return [[row] for row in rows] if len(shape) == 3 else rows


def _dtype_of(values: Any) -> str:
    while isinstance(values, list):
        if not values:
            return "float32"
        values = values[0]
    return "int32" if isinstance(values, int) else "float32"
