"""NumPy implementation of the backend interface, float32 throughout.

This is also the reference every other backend is checked against, so it favours plain,
obviously-correct NumPy; where speed matters (decode is bound by streaming the weights) it
avoids temporaries: weights are stored contiguous in the layout BLAS reads fastest, and
bias, GELU and residual are applied in place on the matmul's output (kernels.py). Two
helpers serve long prompts: buffers.py reuses released intermediates (fresh memory costs a
page fault per 4 KiB), and parallel.py spreads rows and attention heads over the cores.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from webgpt2.backends.base import Backend, HostTensor
from webgpt2.backends.cpu.buffers import (
    MIN_POOLED_BYTES,
    SOLE_OWNER_REFERENCES,
    BufferPool,
    reference_count,
)
from webgpt2.backends.cpu.kernels import (
    Kernels,
    attention_part,
    filter_top_k_top_p,
    linear_epilogue,
    linear_rows,
)
from webgpt2.backends.cpu.parallel import MIN_ROWS_PER_PART, RowParallel

try:
    import mmap
except ImportError:  # pragma: no cover - a platform without mmap (some WebAssembly builds)
    mmap = None  # type: ignore[assignment]

_NP_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "int32": np.dtype("<i4"),
}


def host_to_numpy(host: HostTensor) -> np.ndarray:
    """A float32 (or int32) ndarray of a HostTensor's values; bfloat16 is widened exactly."""
    if host.dtype == "bfloat16":
        raw = np.frombuffer(host.data, dtype="<u2").astype(np.uint32) << 16
        return raw.view(np.float32).reshape(host.shape)
    array = np.frombuffer(host.data, dtype=_NP_DTYPES[host.dtype]).reshape(host.shape)
    if host.dtype == "float16":
        return array.astype(np.float32)
    return array


def _column_major_copy(matrix: np.ndarray, rows: int = 256) -> np.ndarray:
    """A column-major (Fortran-order) copy of a 2-D array, made a band of rows at a time:
    each band is read once and lands in short contiguous runs, where np.asfortranarray's
    element-order copy jumps across the whole matrix for every element
    (benchmarks/README.md has the times)."""
    out = np.empty(matrix.shape[::-1], matrix.dtype)  # the transpose, row-major
    for start in range(0, matrix.shape[0], rows):
        out[:, start:start + rows] = matrix[start:start + rows].T
    return out.T


def _unmap_pages(data: Any) -> None:
    """Give back this process's mapping of a memory-mapped tensor's pages (after it was
    copied): they stop counting in its resident memory and stay in the page cache, from
    where they would be read again if touched. Other data is left alone: it is freed with
    its HostTensor. Pages at the ends shared with a neighbouring tensor that is used in
    place are simply mapped again when read."""
    view = memoryview(data)
    source = view.obj
    if mmap is None or not isinstance(source, mmap.mmap) or not hasattr(source, "madvise"):
        return
    base = np.frombuffer(source, np.uint8).ctypes.data
    start = np.frombuffer(view, np.uint8).ctypes.data - base
    end = start + view.nbytes
    start -= start % mmap.PAGESIZE
    try:
        source.madvise(mmap.MADV_DONTNEED, start, end - start)
    except OSError:  # pragma: no cover - the pages just stay mapped: more memory, same values
        pass


class CPUBackend(Backend):
    """NumPy on the CPU (float32), natively or in a Pyodide that has NumPy.

    Example:
        >>> from webgpt2.backends.cpu import CPUBackend
        >>> b = CPUBackend()
        >>> b.argmax(b.tensor([[0.1, 3.0, 2.0]], "float32"))
        [1]
    """

    name = "cpu"

    def __init__(self, num_threads: int | None = None, kernels: Kernels | None = None) -> None:
        # GELU, layer norm and attention (kernels.py); a benchmark may pass others.
        self.kernels = kernels or Kernels()
        # A long prompt's rows (and attention heads) are spread over num_threads cores
        # (default: as many as BLAS uses; see parallel.py). Decode steps are left to BLAS.
        self._parallel = RowParallel(num_threads)
        # Released intermediates are reused by shape (see buffers.py: fresh memory costs a
        # page fault per 4 KiB, a fifth of a long prefill).
        self._pool = BufferPool()
        # Tall weight matrices are copied column-major at upload (see upload). Not under
        # Pyodide: its checkpoint is read into memory, whose pages cannot be given back, and
        # its NumPy has no BLAS whose streaming this was measured on.
        self._column_major_tall = sys.platform != "emscripten"

    # ---- host <-> backend -------------------------------------------------------------
    def _upload(self, host: HostTensor, layout: str, dtype: str | None) -> Any:
        # float32 data is used where it lies (zero-copy): a memory-mapped checkpoint is then
        # held in memory once, as the page cache, and loading costs no copy. The weights are
        # never written to.
        array = host_to_numpy(host)
        if self._column_major_tall and layout != "plain" and array.ndim == 2 \
                and array.shape[0] > array.shape[1]:
            # A tall matrix (the tied token table [V, H]; a linear layer that narrows, as
            # GPT-2's MLP c_proj [4H, H]) is stored column-major, so that a decode step's
            # 1-row product streams it along its long side, where OpenBLAS's matrix-vector
            # kernel reads fastest (the wide ones, [H, 3H] and [H, 4H], already do; the
            # gains are in benchmarks/README.md). The copy stands in for the checkpoint's
            # pages, which are given back to the page cache, so memory stays at one copy.
            stored = _column_major_copy(array)
            _unmap_pages(host.data)
            return stored
        return array

    def _tensor(self, values: Any, dtype: str) -> Any:
        if dtype == "float16":
            dtype = "float32"
        return np.array(values, dtype=_NP_DTYPES[dtype])

    def to_list(self, x: Any) -> list:
        return np.asarray(x).tolist()

    def shape(self, x: Any) -> tuple[int, ...]:
        return tuple(np.shape(x))

    def _zeros(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self._pool.zeros(shape, _NP_DTYPES["float32" if dtype == "float16" else dtype])

    def _int_values(self, x: Any) -> list[int]:
        return np.asarray(x).ravel().tolist()

    def release(self, x: Any) -> None:
        # Kept for reuse only if the caller's variable is the last reference to it.
        if reference_count(x) <= SOLE_OWNER_REFERENCES:
            self._pool.give(x)

    def free_buffers(self) -> int:
        """Give the memory kept for reuse (released intermediates, at most 512 MiB; 27 MiB
        after a 512-token GPT-2 124M prefill) back to the allocator; returns its bytes.

        Example:
            >>> b = CPUBackend()
            >>> b.release(b.zeros((256, 256)))
            >>> b.free_buffers()
            262144
        """
        held = self._pool.bytes_held
        self._pool.clear()
        return held

    # ---- model operations -------------------------------------------------------------
    def _embedding(self, token_ids: Any, token_table: Any, position_table: Any,
                   start_position: int) -> Any:
        ids = np.asarray(token_ids)
        seq_len = ids.shape[1]
        hidden = self._pool.empty((*ids.shape, token_table.shape[1]))
        if token_table.flags.c_contiguous:
            np.take(token_table, ids, axis=0, out=hidden, mode="clip")  # ids were checked
        else:
            # A column-major table (see upload): np.take would first copy all of it; a
            # strided gather reads just the rows.
            hidden[...] = token_table[ids]
        hidden += position_table[start_position:start_position + seq_len]
        return hidden

    def _layer_norm(self, x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
        rows = x.reshape(-1, x.shape[-1])
        out = self._pool.empty(x.shape)
        out_rows = out.reshape(rows.shape)
        if rows.shape[0] == 1:  # a decode step of batch 1
            self.kernels.layer_norm_row(rows[0], gamma, beta, epsilon, out_rows[0])
            return out
        if rows.shape[0] < 2 * MIN_ROWS_PER_PART:  # a few rows: straight through
            self.kernels.layer_norm_rows(rows, gamma, beta, epsilon, out_rows)
            return out
        self._parallel.run(self.kernels.layer_norm_rows, [
            (rows[a:b], gamma, beta, epsilon, out_rows[a:b])
            for a, b in self._parallel.split(rows.shape[0])])
        return out

    def _linear(self, x: Any, weight: Any, bias: Any | None, activation: str | None,
                residual: Any | None) -> Any:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] < 2 * MIN_ROWS_PER_PART or self._parallel.parts == 1:
            # A decode step: one BLAS call (BLAS threads it), then the rest in place.
            y = self._matmul_rows(x, weight)
            linear_epilogue(y.reshape(rows.shape[0], -1), bias, activation,
                            None if residual is None else residual.reshape(rows.shape[0], -1),
                            self._pool, self.kernels.gelu_)
            self._parallel.blas_threaded()
            return y
        y = self._pool.empty((*x.shape[:-1], weight.shape[1]))
        y_rows = y.reshape(rows.shape[0], weight.shape[1])
        res = None if residual is None else residual.reshape(rows.shape[0], -1)
        self._parallel.run(linear_rows, [
            (rows[a:b], weight, bias, activation, None if res is None else res[a:b],
             y_rows[a:b], self._pool, self.kernels.gelu_)
            for a, b in self._parallel.split(rows.shape[0])])
        return y

    def _cached_attention(self, qkv: Any, cache: Any, layer_index: int,
                          cache_update_index: int, num_heads: int,
                          last_position_only: bool) -> Any:
        batch, seq_len, three_hidden = qkv.shape
        hidden = three_hidden // 3
        head_dim = hidden // num_heads
        end = cache_update_index + seq_len
        # [B, S, 2, nh, hd] views of every position's keys and values, and of their place in
        # the cache ([B, 2, S, nh, hd] swapped).
        new_kv = qkv[..., hidden:].reshape(batch, seq_len, 2, num_heads, head_dim)
        cache_kv = cache[:, layer_index, :, cache_update_index:end].swapaxes(1, 2)
        # Strided views [B, nh, end, hd]: each head is a 2-D matrix with row stride nh * hd
        # that BLAS reads in place (a contiguous copy costs more than it saves).
        keys = cache[:, layer_index, 0, :end].transpose(0, 2, 1, 3)
        values = cache[:, layer_index, 1, :end].transpose(0, 2, 1, 3)
        scale = np.float32(1.0 / math.sqrt(head_dim))
        if seq_len == 1 or last_position_only:
            # One query per row (a decode step): the last query sees every key, so no mask;
            # a handful of small arrays, kept off the pool.
            cache_kv[...] = new_kv
            query = qkv[:, -1, :hidden].reshape(batch, num_heads, 1, head_dim) * scale
            return self.kernels.last_query_attention(query, keys, values).reshape(
                batch, 1, hidden)
        queries = qkv[..., :hidden].reshape(batch, seq_len, num_heads, head_dim).transpose(
            0, 2, 1, 3)
        out = self._pool.empty((batch, seq_len, hidden))
        # Written in place as [B, nh, S, hd] views: each head's rows with stride H.
        heads_out = out.reshape(batch, seq_len, num_heads, head_dim).transpose(0, 2, 1, 3)
        # Each core attends with a share of the heads, having written their keys and values
        # into the cache (a short prompt's few queries are not worth waking a thread for).
        heads = (self._parallel.split(num_heads, min_per_part=1)
                 if seq_len >= 2 * MIN_ROWS_PER_PART else [(0, num_heads)])
        self._parallel.run(attention_part, [
            (new_kv[..., a:b, :], cache_kv[..., a:b, :], queries[:, a:b], scale,
             keys[:, a:b], values[:, a:b], heads_out[:, a:b], cache_update_index, self._pool,
             self.kernels.causal_attention)
            for a, b in heads])
        return out

    def _select_position(self, x: Any, index: int) -> Any:
        return x[:, index:index + 1, :]

    def _reverse_embedding(self, x: Any, token_table: Any) -> Any:
        logits = self._matmul_rows(x, token_table.T)
        self._parallel.blas_threaded()
        return logits

    def _matmul_rows(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """x [..., K] @ weight [K, N] as one 2-D BLAS call (numpy's batched 3-D matmul loops
        over the leading axis, several times slower for a few rows against a big matrix),
        into a pooled array (a decode step's few rows are too small to pool)."""
        rows = x.reshape(-1, x.shape[-1])
        shape = (*x.shape[:-1], weight.shape[1])
        if rows.shape[0] * weight.shape[1] * 4 < MIN_POOLED_BYTES:
            return np.matmul(rows, weight).reshape(shape)
        y = self._pool.empty(shape)
        np.matmul(rows, weight, out=y.reshape(rows.shape[0], weight.shape[1]))
        return y

    # ---- sampling primitives ----------------------------------------------------------
    @staticmethod
    def _rows(logits: Any) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float32)
        return logits.reshape(logits.shape[0], logits.shape[-1])

    def _argmax(self, logits: Any) -> list[int]:
        return [int(i) for i in np.argmax(self._rows(logits), axis=-1)]

    def _sample(self, logits: Any, uniforms: list[float], temperature: float, top_k: int,
                top_p: float) -> list[int]:
        rows = self._rows(logits)
        out = []
        for row, u in zip(rows, uniforms):
            scores = row / np.float32(temperature)
            keep = filter_top_k_top_p(scores, top_k, top_p)
            probs = np.where(keep, np.exp(scores - scores[keep].max()), np.float32(0.0))
            cumulative = np.cumsum(probs, dtype=np.float64)
            index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
            # Guard the float edge (u * total == total): the last kept id.
            out.append(min(index, int(np.flatnonzero(keep)[-1])))
        return out

    def _token_log_probs(self, logits: Any, target_ids: Any) -> list[list[float]]:
        logits = np.asarray(logits, dtype=np.float32)
        targets = np.asarray(target_ids, dtype=np.int64)
        peak = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True)) + peak
        picked = np.take_along_axis(logits, targets[..., None], axis=-1)
        return (picked - log_norm)[..., 0].tolist()

    # ---- generation operations --------------------------------------------------------
    def _log_softmax(self, logits: Any) -> Any:
        logits = np.asarray(logits, dtype=np.float32)
        peak = logits.max(axis=-1, keepdims=True)
        shifted = logits - peak
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def _top_k(self, x: Any, k: int) -> tuple[list[list[float]], list[list[int]]]:
        rows = self._rows(x)
        width = rows.shape[-1]
        values, indices = [], []
        for row in rows:
            # The k-th largest value, then everything above it and the first of its ties in
            # index order: the documented tie order, independent of argpartition's choice.
            kth = np.partition(row, width - k)[width - k]
            above = np.flatnonzero(row > kth)
            ties = np.flatnonzero(row == kth)[:k - len(above)]
            chosen = np.concatenate([above, ties])
            order = chosen[np.lexsort((chosen, -row[chosen]))]
            values.append(row[order].tolist())
            indices.append(order.tolist())
        return values, indices

    def _apply_repetition_penalty(self, logits: Any, token_ids: Sequence[Sequence[int]],
                                  penalty: float) -> Any:
        out, rows = _copy_with_rows(logits)
        for row, ids in zip(rows, token_ids):
            ids = np.unique(np.asarray(ids, dtype=np.int64))
            ids = ids[(ids >= 0) & (ids < row.shape[0])]
            picked = row[ids]
            row[ids] = np.where(picked < 0, picked * np.float32(penalty),
                                picked / np.float32(penalty))
        return out

    def _mask_tokens(self, logits: Any, token_ids: Sequence[Sequence[int]],
                     value: float) -> Any:
        out, rows = _copy_with_rows(logits)
        for row, ids in zip(rows, token_ids):
            if len(ids):
                ids = np.asarray(ids, dtype=np.int64)
                row[ids[(ids >= 0) & (ids < row.shape[0])]] = np.float32(value)
        return out

    def _gather_batch(self, x: Any, indices: list[int]) -> Any:
        return np.asarray(x)[np.asarray(indices, dtype=np.int64)]

    def _reorder_cache(self, cache: Any, indices: list[int], start: int, end: int) -> Any:
        # Fancy indexing on the right copies first, so rows can swap safely.
        cache[:, :, :, start:end] = cache[np.asarray(indices, dtype=np.int64), :, :, start:end]
        return cache

    def _concatenate(self, tensors: list[Any], axis: int) -> Any:
        return np.concatenate([np.asarray(t) for t in tensors], axis=axis)

    def _max_cosine_similarity(self, context: Any, candidates: Any) -> list[float]:
        context = np.asarray(context, dtype=np.float32)
        candidates = np.asarray(candidates, dtype=np.float32)
        candidates = candidates.reshape(candidates.shape[0], candidates.shape[-1])
        batch = context.shape[0]
        per_row = candidates.shape[0] // batch
        unit_context = context / np.linalg.norm(context, axis=-1, keepdims=True)
        unit_candidates = candidates / np.linalg.norm(candidates, axis=-1, keepdims=True)
        grouped = unit_candidates.reshape(batch, per_row, -1)  # [B, C, H]
        cosine = np.matmul(grouped, unit_context.transpose(0, 2, 1))  # [B, C, S]
        return cosine.max(axis=-1).reshape(-1).tolist()

    def memory_limit_bytes(self) -> int | None:
        try:  # the machine's physical memory
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None

    def describe(self) -> dict:
        info: dict = {"name": self.name, "numpy": np.__version__}
        try:
            from threadpoolctl import threadpool_info

            info["blas"] = [
                {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                for p in threadpool_info()
                if p.get("user_api") == "blas"
            ]
        except ImportError:
            pass
        return info


def _copy_with_rows(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """A float32 copy of logits [B, V] or [B, 1, V] and its [B, V] view."""
    out = np.array(logits, dtype=np.float32)
    return out, out.reshape(out.shape[0], out.shape[-1])


