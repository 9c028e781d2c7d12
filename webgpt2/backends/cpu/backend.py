"""NumPy implementation of the backend interface, float32 throughout.

This is also the reference every other backend is checked against, so it favours plain,
obviously-correct NumPy; where speed matters (decode is bound by streaming the weights) it
avoids temporaries: weights are stored contiguous in the layout BLAS reads fastest, and
bias, GELU and residual are applied in place on the matmul's output. Two helpers serve long
prompts: buffers.py reuses released intermediates (fresh memory costs a page fault per
4 KiB), and parallel.py spreads rows and attention heads over the cores.
"""

from __future__ import annotations

import math
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
_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))
_GELU_CUBIC = np.float32(0.044715 * math.sqrt(2.0 / math.pi))
_QUERY_BLOCK = 128
# GELU works through its input in pieces of about this many values, so that its temporary
# stays in the core's L2 cache.
_GELU_CHUNK = 1 << 16


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
    each band is read once and lands in short contiguous runs, 2-3x faster here than
    np.asfortranarray's element-order copy (60 against 170 ms for GPT-2's token table)."""
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


def gelu_(x: np.ndarray, pool: BufferPool, bias: np.ndarray | None = None) -> np.ndarray:
    """tanh-approximated GELU (GPT-2's gelu_new), in place: 0.5x(1 + tanh(c(x + 0.044715x^3))),
    of x + bias when a bias is given.

    x is 2-D and C-contiguous; it is processed a few rows at a time with one small temporary
    (so the bias add and GELU's passes work on data in the core's cache).
    """
    rows = max(1, min(x.shape[0], _GELU_CHUNK // max(1, x.shape[1])))
    scratch = pool.empty((rows, x.shape[1]))
    for start in range(0, x.shape[0], rows):
        part = x[start:start + rows]
        inner = scratch[:part.shape[0]]
        if bias is not None:
            part += bias
        # c(x + 0.044715x^3) = x(c + 0.044715c x^2); 0.5(1 + tanh(u)) = 0.5 + 0.5 tanh(u).
        np.multiply(part, part, out=inner)
        inner *= _GELU_CUBIC
        inner += _SQRT_2_OVER_PI
        inner *= part
        np.tanh(inner, out=inner)
        inner *= np.float32(0.5)
        inner += np.float32(0.5)
        part *= inner
    pool.give(scratch)
    return x


class CPUBackend(Backend):
    """NumPy on the CPU (float32), natively or in a Pyodide that has NumPy.

    Example:
        >>> from webgpt2.backends.cpu import CPUBackend
        >>> b = CPUBackend()
        >>> b.argmax(b.tensor([[0.1, 3.0, 2.0]], "float32"))
        [1]
    """

    name = "cpu"

    def __init__(self, num_threads: int | None = None) -> None:
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
            # 1-row product streams it along its long side: with OpenBLAS here, 1.5x faster
            # for the table and 1.25x for c_proj (the wide ones, [H, 3H] and [H, 4H], stream
            # fastest as they come). The copy stands in for the checkpoint's pages, which are
            # given back to the page cache, so memory stays at one copy of the weights.
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
            _layer_norm_row(rows[0], gamma, beta, epsilon, out_rows[0])
            return out
        if rows.shape[0] < 2 * MIN_ROWS_PER_PART:  # a few rows: straight through
            _layer_norm_rows(rows, gamma, beta, epsilon, out_rows)
            return out
        self._parallel.run(_layer_norm_rows, [
            (rows[a:b], gamma, beta, epsilon, out_rows[a:b])
            for a, b in self._parallel.split(rows.shape[0])])
        return out

    def _linear(self, x: Any, weight: Any, bias: Any | None, activation: str | None,
                residual: Any | None) -> Any:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] < 2 * MIN_ROWS_PER_PART or self._parallel.parts == 1:
            # A decode step: one BLAS call (BLAS threads it), then the rest in place.
            y = self._matmul_rows(x, weight)
            _linear_epilogue(y.reshape(rows.shape[0], -1), bias, activation,
                             None if residual is None else residual.reshape(rows.shape[0], -1),
                             self._pool)
            self._parallel.blas_threaded()
            return y
        y = self._pool.empty((*x.shape[:-1], weight.shape[1]))
        y_rows = y.reshape(rows.shape[0], weight.shape[1])
        res = None if residual is None else residual.reshape(rows.shape[0], -1)
        self._parallel.run(_linear_rows, [
            (rows[a:b], weight, bias, activation, None if res is None else res[a:b],
             y_rows[a:b], self._pool) for a, b in self._parallel.split(rows.shape[0])])
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
            return _last_query_attention(query, keys, values).reshape(batch, 1, hidden)
        queries = qkv[..., :hidden].reshape(batch, seq_len, num_heads, head_dim).transpose(
            0, 2, 1, 3)
        out = self._pool.empty((batch, seq_len, hidden))
        # Written in place as [B, nh, S, hd] views: each head's rows with stride H.
        heads_out = out.reshape(batch, seq_len, num_heads, head_dim).transpose(0, 2, 1, 3)
        # Each core attends with a share of the heads, having written their keys and values
        # into the cache (a short prompt's few queries are not worth waking a thread for).
        heads = (self._parallel.split(num_heads, min_per_part=1)
                 if seq_len >= 2 * MIN_ROWS_PER_PART else [(0, num_heads)])
        self._parallel.run(_attention_part, [
            (new_kv[..., a:b, :], cache_kv[..., a:b, :], queries[:, a:b], scale,
             keys[:, a:b], values[:, a:b], heads_out[:, a:b], cache_update_index, self._pool)
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


def _linear_epilogue(y: np.ndarray, bias: np.ndarray | None, activation: str | None,
                     residual: np.ndarray | None, pool: BufferPool) -> None:
    """Bias, GELU and residual applied in place to a 2-D matmul output."""
    if activation == "gelu":
        gelu_(y, pool, bias)
    elif bias is not None:
        y += bias
    if residual is not None:
        y += residual


def _linear_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                 activation: str | None, residual: np.ndarray | None, out: np.ndarray,
                 pool: BufferPool) -> None:
    """One part of a row-split linear: out = epilogue(x @ weight) for 2-D x and out."""
    np.matmul(x, weight, out=out)
    _linear_epilogue(out, bias, activation, residual, pool)


def _layer_norm_rows(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float,
                     out: np.ndarray) -> None:
    """out = layer_norm(x) for 2-D x (biased variance, as torch)."""
    # np.add.reduce rather than .mean(): the same pairwise float32 sums without np.mean's
    # Python-level overhead, which shows in a decode step's 25 norms.
    inv_n = np.float32(1.0 / x.shape[-1])
    np.subtract(x, np.add.reduce(x, axis=-1, keepdims=True) * inv_n, out=out)
    variance = _sum_of_squares(out)
    variance *= inv_n
    variance += np.float32(epsilon)
    np.sqrt(variance, out=variance)
    out /= variance
    out *= gamma
    out += beta


def _layer_norm_row(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float,
                    out: np.ndarray) -> None:
    """out = layer_norm(x) for one 1-D row: _layer_norm_rows's arithmetic with scalar
    statistics (a decode step's norms are a few microseconds each, mostly per-call overhead:
    this one makes 5 NumPy calls where the general path makes 10)."""
    n = x.shape[0]
    np.subtract(x, np.add.reduce(x) * np.float32(1.0 / n), out=out)
    inverse_deviation = 1.0 / math.sqrt(float(np.dot(out, out)) / n + epsilon)
    np.multiply(out, gamma, out=out)
    out *= np.float32(inverse_deviation)
    out += beta


def _sum_of_squares(x: np.ndarray) -> np.ndarray:
    """[..., 1] sums of squares over the last axis, without an x-sized temporary."""
    if hasattr(np, "vecdot"):  # NumPy 2
        return np.vecdot(x, x)[..., None]
    return np.einsum("...i,...i->...", x, x)[..., None]


_DIAGONAL_MASKS: dict[int, np.ndarray] = {}


def _diagonal_mask(n: int) -> np.ndarray:
    """[n, n] additive causal mask: -inf above the diagonal, 0 elsewhere (cached)."""
    mask = _DIAGONAL_MASKS.get(n)
    if mask is None:
        mask = np.triu(np.full((n, n), -np.inf, np.float32), k=1)
        mask.flags.writeable = False
        _DIAGONAL_MASKS[n] = mask
    return mask


def _attention_part(new_kv: np.ndarray, cache_kv: np.ndarray, queries: np.ndarray,
                    scale: np.float32, keys: np.ndarray, values: np.ndarray, out: np.ndarray,
                    cache_update_index: int, pool: BufferPool) -> None:
    """Some heads' share of a prompt's attention: their new keys and values into the cache
    (cache_kv[...] = new_kv), their queries scaled (S x hd values rather than S x end
    scores), then _causal_attention over the cache."""
    cache_kv[...] = new_kv
    scaled = pool.empty(queries.shape)
    np.multiply(queries, scale, out=scaled)
    _causal_attention(scaled, keys, values, out, cache_update_index, pool)
    pool.give(scaled)


def _last_query_attention(query: np.ndarray, keys: np.ndarray,
                          values: np.ndarray) -> np.ndarray:
    """[..., 1, hd] = softmax(query keys^T) values for one (scaled) query per head, which
    sees every key (no mask): keys and values [..., end, hd]."""
    weights = np.matmul(query, keys.swapaxes(-1, -2))  # [..., 1, end]
    weights -= weights.max(axis=-1, keepdims=True)
    np.exp(weights, out=weights)
    out = np.matmul(weights, values)
    out /= weights.sum(axis=-1, keepdims=True)
    return out


def _causal_attention(queries: np.ndarray, keys: np.ndarray, values: np.ndarray,
                      out: np.ndarray, cache_update_index: int, pool: BufferPool) -> None:
    """out [..., S, hd] = causal softmax(queries keys^T) values, head by head.

    queries [..., S, hd] (already scaled) sit at absolute positions cache_update_index + i;
    keys and values [..., >= cache_update_index + S, hd] (strided views of the cache: each
    head is a 2-D matrix with row stride nh * hd that BLAS reads in place; a contiguous copy
    costs more than it saves). The leading axes are heads, or batch and heads.
    """
    seq_len = queries.shape[-2]
    # Blocks of queries: each block computes scores only for the keys it can see (about half
    # the work of a long prefill), in cache-sized pieces.
    for q0 in range(0, seq_len, _QUERY_BLOCK):
        q1 = min(seq_len, q0 + _QUERY_BLOCK)
        n = q1 - q0
        visible = cache_update_index + q1  # keys seen by the block's last query
        shape = (*queries.shape[:-2], n, visible)  # keys have the same leading axes
        scores = pool.empty(shape)
        np.matmul(queries[..., q0:q1, :], keys[..., :visible, :].swapaxes(-1, -2), out=scores)
        if n > 1:
            # Only the last n keys are hidden from some of the block: query i (absolute
            # position cache_update_index + q0 + i) sees key visible - n + j iff j <= i.
            scores[..., visible - n:] += _diagonal_mask(n)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        denominators = scores.sum(axis=-1, keepdims=True)
        # Into a contiguous block, then normalised into `out` (strided when it is a view of
        # [S, nh, hd] rows): BLAS stores a contiguous result faster, and normalising the
        # [n, hd] output costs less than normalising the [n, visible] scores.
        block = pool.empty(out[..., q0:q1, :].shape)
        np.matmul(scores, values[..., :visible, :], out=block)
        np.divide(block, denominators, out=out[..., q0:q1, :])
        pool.give(block)
        pool.give(scores)


def filter_top_k_top_p(scores: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Boolean mask of the logits that transformers' TopK then TopP warpers keep."""
    keep = np.ones(scores.shape, dtype=bool)
    if top_k and top_k < scores.shape[-1]:
        kth = np.partition(scores, -top_k)[-top_k]
        keep &= scores >= kth
    if top_p < 1.0:
        masked = np.where(keep, scores, -np.inf)
        order = np.argsort(masked, kind="stable")  # ascending, as transformers sorts
        sorted_scores = masked[order]
        probs = np.exp(sorted_scores - sorted_scores[-1])
        probs /= probs.sum()
        cumulative = np.cumsum(probs)
        remove_sorted = cumulative <= (1.0 - top_p)
        remove_sorted[-1] = False  # min_tokens_to_keep = 1
        remove = np.empty_like(remove_sorted)
        remove[order] = remove_sorted
        keep &= ~remove
    return keep
