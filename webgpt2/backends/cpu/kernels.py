"""The cpu backend's NumPy kernels: GELU, layer norm, attention, the linear epilogue and
top-k/top-p filtering, written to avoid temporaries (in place, in cache-sized pieces).

`Kernels` groups the elementwise ones and attention so that a backend can be given others:
`CPUBackend(kernels=...)`. benchmarks/elementwise_bound.py passes a subclass that skips
layer norm, GELU and the softmax, to bound what compiled kernels could save.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from webgpt2.backends.cpu.buffers import BufferPool

_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))
_GELU_CUBIC = np.float32(0.044715 * math.sqrt(2.0 / math.pi))
QUERY_BLOCK = 128
# GELU works through its input in pieces of about this many values, so that its temporary
# stays in the core's L2 cache.
_GELU_CHUNK = 1 << 16


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


def linear_epilogue(y: np.ndarray, bias: np.ndarray | None, activation: str | None,
                    residual: np.ndarray | None, pool: BufferPool,
                    gelu: Callable[..., np.ndarray] = gelu_) -> None:
    """Bias, GELU and residual applied in place to a 2-D matmul output."""
    if activation == "gelu":
        gelu(y, pool, bias)
    elif bias is not None:
        y += bias
    if residual is not None:
        y += residual


def linear_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                activation: str | None, residual: np.ndarray | None, out: np.ndarray,
                pool: BufferPool, gelu: Callable[..., np.ndarray] = gelu_) -> None:
    """One part of a row-split linear: out = epilogue(x @ weight) for 2-D x and out."""
    np.matmul(x, weight, out=out)
    linear_epilogue(out, bias, activation, residual, pool, gelu)


def layer_norm_rows(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float,
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


def layer_norm_row(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float,
                    out: np.ndarray) -> None:
    """out = layer_norm(x) for one 1-D row: layer_norm_rows's arithmetic with scalar
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


def attention_part(new_kv: np.ndarray, cache_kv: np.ndarray, queries: np.ndarray,
                   scale: np.float32, keys: np.ndarray, values: np.ndarray, out: np.ndarray,
                   cache_update_index: int, pool: BufferPool,
                   attend: Callable[..., None] | None = None) -> None:
    """Some heads' share of a prompt's attention: their new keys and values into the cache
    (cache_kv[...] = new_kv), their queries scaled (S x hd values rather than S x end
    scores), then causal_attention over the cache."""
    cache_kv[...] = new_kv
    scaled = pool.empty(queries.shape)
    np.multiply(queries, scale, out=scaled)
    (attend or causal_attention)(scaled, keys, values, out, cache_update_index, pool)
    pool.give(scaled)


def last_query_attention(query: np.ndarray, keys: np.ndarray,
                          values: np.ndarray) -> np.ndarray:
    """[..., 1, hd] = softmax(query keys^T) values for one (scaled) query per head, which
    sees every key (no mask): keys and values [..., end, hd]."""
    weights = np.matmul(query, keys.swapaxes(-1, -2))  # [..., 1, end]
    weights -= weights.max(axis=-1, keepdims=True)
    np.exp(weights, out=weights)
    out = np.matmul(weights, values)
    out /= weights.sum(axis=-1, keepdims=True)
    return out


def causal_attention(queries: np.ndarray, keys: np.ndarray, values: np.ndarray,
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
    for q0 in range(0, seq_len, QUERY_BLOCK):
        q1 = min(seq_len, q0 + QUERY_BLOCK)
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


class Kernels:
    """The replaceable kernels of a `CPUBackend` (see the module docstring).

    Example:
        >>> from webgpt2.backends.cpu import CPUBackend
        >>> CPUBackend(kernels=Kernels()).kernels.layer_norm_row is layer_norm_row
        True
    """

    gelu_ = staticmethod(gelu_)
    layer_norm_rows = staticmethod(layer_norm_rows)
    layer_norm_row = staticmethod(layer_norm_row)
    causal_attention = staticmethod(causal_attention)
    last_query_attention = staticmethod(last_query_attention)
