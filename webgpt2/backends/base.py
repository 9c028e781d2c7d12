"""The backend interface: the operations the model, layers and samplers are written against.

A backend owns its tensors. The model never looks inside one; it passes them from
operation to operation, and host data crosses only at the edges (`upload`, `tensor`,
`to_list`, the samplers' token ids). The operation set is chosen so that a GPU backend can
fuse work and keep weights and the KV cache resident: a linear layer carries its bias, an
optional tanh-GELU and an optional residual; attention writes this step's keys and values
into the cache itself; sampling returns token ids, not logits.

Shapes use these names: B batch, S new positions, T the cache's max length, H hidden size,
V vocabulary size, L layers, nh heads, hd head size (H = nh * hd).
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "float16", "bfloat16", "int32")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4}


class BackendError(RuntimeError):
    """A backend could not be created or an operation failed on the device."""


@dataclass(frozen=True)
class HostTensor:
    """Host-side tensor data: little-endian bytes, a dtype name and a shape.

    This is how weights cross from the loader to a backend. It needs no numpy, so the
    core runs in a Pyodide that has none.

    Example:
        >>> t = HostTensor.from_floats([1.0, 2.0, 3.0, 4.0], (2, 2))
        >>> t.shape, t.dtype, t.nbytes
        ((2, 2), 'float32', 16)
    """

    dtype: str
    shape: tuple[int, ...]
    data: Any  # bytes, bytearray or memoryview

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported; expected one of {DTYPES}")
        expected = self.size * ITEMSIZE[self.dtype]
        if len(memoryview(self.data).cast("B")) != expected:
            raise ValueError(
                f"tensor of shape {self.shape} and dtype {self.dtype} needs {expected} bytes; "
                f"got {len(memoryview(self.data).cast('B'))}"
            )

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]

    @classmethod
    def from_floats(cls, values: Sequence[float], shape: tuple[int, ...]) -> HostTensor:
        return cls("float32", tuple(shape), struct.pack(f"<{len(values)}f", *values))


class Backend:
    """The interface every backend implements. Tensors are the backend's own objects.

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> x = b.tensor([[1.0, 2.0, 3.0]], "float32")
        >>> b.shape(x)
        (1, 3)
    """

    name: str = "abstract"

    # ---- host <-> backend -------------------------------------------------------------
    def upload(self, host: HostTensor, layout: str = "plain", dtype: str | None = None) -> Any:
        """Copy weight data to the backend once.

        layout: "plain" (as given), "linear" (a Hugging Face Conv1D weight, [in, out]: the
        backend may store it transposed), "embedding" ([V, H], used by `embedding` and by
        `reverse_embedding`). dtype: the storage dtype ("float32" default, "float16" where
        the backend supports it); arithmetic stays float32.
        """
        raise NotImplementedError

    def tensor(self, values: Any, dtype: str) -> Any:
        """A tensor from nested Python lists (token ids, small float inputs)."""
        raise NotImplementedError

    def to_list(self, x: Any) -> list:
        """Nested Python lists of the tensor's values (a read back on a device)."""
        raise NotImplementedError

    def shape(self, x: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> Any:
        raise NotImplementedError

    def release(self, x: Any) -> None:
        """Free a tensor's memory now; the caller must not use x (or views of it) afterwards.

        webgpu frees the GPU buffer; cpu keeps the array for reuse by a later operation of
        the same shape (if nothing else refers to it); the default does nothing."""

    # ---- model operations -------------------------------------------------------------
    def embedding(self, token_ids: Any, token_table: Any, position_table: Any,
                  start_position: int) -> Any:
        """hidden [B, S, H] = token_table[token_ids] + position_table[start + arange(S)].

        token_ids [B, S] int32. Ids outside [0, V) raise ValueError naming the id.
        """
        raise NotImplementedError

    def layer_norm(self, x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
        """Layer norm over the last axis, biased variance, as torch.nn.LayerNorm."""
        raise NotImplementedError

    def linear(self, x: Any, weight: Any, bias: Any | None = None,
               activation: str | None = None, residual: Any | None = None) -> Any:
        """y = activation(x @ W + bias) + residual. x [..., K]; W uploaded with layout
        "linear" from [K, N]; activation None or "gelu" (tanh approximation, GPT-2's
        gelu_new); residual [..., N] or None."""
        raise NotImplementedError

    def cached_attention(self, qkv: Any, cache: Any, layer_index: int,
                         cache_update_index: int, num_heads: int,
                         last_position_only: bool = False) -> Any:
        """Causal multi-head attention through the KV cache.

        qkv [B, S, 3H] (queries, keys, values concatenated as GPT-2's c_attn makes them).
        Writes this step's keys and values into cache[:, layer_index, 0|1,
        cache_update_index:cache_update_index + S] (in place), then attends query i (at
        absolute position cache_update_index + i) to cache positions 0..that position, with
        scores scaled by 1/sqrt(hd) and a numerically stable softmax. Returns [B, S, H], or
        with last_position_only [B, 1, H]: the last query's output alone (all S positions'
        keys and values are still written; a prefill's last block needs nothing else).
        cache [B, L, 2, T, nh, hd].
        """
        raise NotImplementedError

    def select_position(self, x: Any, index: int) -> Any:
        """x[:, index:index+1, :] — [B, S, H] -> [B, 1, H]."""
        raise NotImplementedError

    def reverse_embedding(self, x: Any, token_table: Any) -> Any:
        """logits [B, S, V] = x [B, S, H] @ token_table[V, H]^T (the tied LM head)."""
        raise NotImplementedError

    # ---- sampling primitives (token ids out, not logits) --------------------------------
    def argmax(self, logits: Any) -> list[int]:
        """Index of the largest logit of each row (the first on ties). logits [B, V] or
        [B, 1, V]."""
        raise NotImplementedError

    def sample(self, logits: Any, uniforms: Sequence[float], temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0) -> list[int]:
        """One token id per row drawn from softmax(filtered logits / temperature).

        Filtering follows transformers' warpers in their order (temperature, then top-k, then
        top-p): top-k keeps logits >= the k-th largest; top-p keeps the smallest set of most
        probable tokens whose probability reaches top_p (tokens whose cumulative probability in
        ascending order is <= 1 - top_p are removed; the most probable always stays). The draw
        is by inverse CDF over token ids in increasing order: the first id whose cumulative
        probability exceeds uniforms[row] * total. The host supplies the uniform numbers so the
        same seed draws the same tokens on every backend.
        """
        raise NotImplementedError

    def token_log_probs(self, logits: Any, target_ids: Any) -> list[list[float]]:
        """log_softmax(logits)[b, s, target_ids[b, s]] for scoring. logits [B, S, V],
        target_ids [B, S] int32. Returns [B][S] floats."""
        raise NotImplementedError

    # ---- generation operations ----------------------------------------------------------
    # Beam search, contrastive search and logits processors use these. Each has a default
    # written with the primitives above (a read back to the host, Python, a new tensor), so
    # it works unchanged on every backend; a backend overrides it to stay on the device.
    # "Logits" below are [B, V] or [B, 1, V]; results keep the input's shape.

    def log_softmax(self, logits: Any) -> Any:
        """A new float32 tensor of log_softmax over the last axis (log-probabilities).

        Numerically stable: each row's maximum is subtracted before exp, and the log of the
        sum is added back (torch.log_softmax). -inf logits stay -inf.

        Example:
            >>> import math, webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> row = b.to_list(b.log_softmax(b.tensor([[0.0, 0.0]], "float32")))[0]
            >>> [round(math.exp(v), 3) for v in row]
            [0.5, 0.5]
        """
        shape = self.shape(logits)
        out = []
        for row in _host_rows(self, logits):
            peak = max(row)
            log_norm = math.log(sum(math.exp(v - peak) for v in row)) + peak
            out.append([v - log_norm for v in row])
        return self.tensor(_unrows(out, shape), "float32")

    def top_k(self, x: Any, k: int) -> tuple[list[list[float]], list[list[int]]]:
        """(values, indices): the k largest values of each row and their indices, largest
        first; equal values come in index order (the lower index first). x [B, V] or
        [B, 1, V]; 1 <= k <= V. Host lists out: [B][k] floats and [B][k] ints.

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> b.top_k(b.tensor([[0.5, 3.0, 0.5, 2.0]], "float32"), 3)
            ([[3.0, 2.0, 0.5]], [[1, 3, 0]])
        """
        rows = _host_rows(self, x)
        width = len(rows[0]) if rows else 0
        if not isinstance(k, int) or not 1 <= k <= width:
            raise ValueError(f"k is {k!r}; expected an integer in [1, {width}]")
        values, indices = [], []
        for row in rows:
            order = heapq.nsmallest(k, range(width), key=lambda i: (-row[i], i))
            values.append([row[i] for i in order])
            indices.append(order)
        return values, indices

    def apply_repetition_penalty(self, logits: Any, token_ids: Sequence[Sequence[int]],
                                 penalty: float) -> Any:
        """A new tensor: transformers' RepetitionPenaltyLogitsProcessor on each row.

        For each row b and each distinct id t in token_ids[b] (host lists, one per row, of
        any lengths; ids outside [0, V) are ignored), logits[b, t] becomes logits[b, t] *
        penalty where it is < 0, else logits[b, t] / penalty. Other entries are unchanged.

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> x = b.tensor([[2.0, -2.0, 1.0]], "float32")
            >>> b.to_list(b.apply_repetition_penalty(x, [[0, 1, 1]], 2.0))
            [[1.0, -4.0, 1.0]]
        """
        shape = self.shape(logits)
        rows = _host_rows(self, logits)
        _check_rows(token_ids, len(rows))
        for row, ids in zip(rows, token_ids):
            for t in set(ids):
                if 0 <= t < len(row):
                    row[t] = row[t] * penalty if row[t] < 0 else row[t] / penalty
        return self.tensor(_unrows(rows, shape), "float32")

    def mask_tokens(self, logits: Any, token_ids: Sequence[Sequence[int]],
                    value: float = float("-inf")) -> Any:
        """A new tensor: logits with logits[b, t] = value for every t in token_ids[b].

        token_ids: host lists, one per row (an empty list leaves the row as it is; repeats
        are allowed; ids outside [0, V) are ignored). The default value, -inf, removes the
        tokens from sampling, argmax and top-k.

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> b.to_list(b.mask_tokens(b.tensor([[1.0, 2.0, 3.0]], "float32"), [[2]]))
            [[1.0, 2.0, -inf]]
        """
        shape = self.shape(logits)
        rows = _host_rows(self, logits)
        _check_rows(token_ids, len(rows))
        for row, ids in zip(rows, token_ids):
            for t in ids:
                if 0 <= t < len(row):
                    row[t] = value
        return self.tensor(_unrows(rows, shape), "float32")

    def gather_batch(self, x: Any, indices: Sequence[int]) -> Any:
        """A new tensor whose row i (along axis 0) is a copy of x[indices[i]].

        Any rank, float32 or int32; indices may repeat and need not cover every row (beam
        search expands a batch to batch * num_beams rows with it).

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> b.to_list(b.gather_batch(b.tensor([[1, 2], [3, 4]], "int32"), [1, 1, 0]))
            [[3, 4], [3, 4], [1, 2]]
        """
        values = self.to_list(x)
        _check_indices(indices, len(values))
        picked = [values[i] for i in indices]
        return self.tensor(picked, _dtype_of(picked))

    def reorder_cache(self, cache: Any, indices: Sequence[int], start: int, end: int) -> Any:
        """Reorder a KV cache [B, L, 2, T, nh, hd] by batch row over positions [start, end).

        cache[b, :, :, start:end] <- the old cache[indices[b], :, :, start:end] for every b
        (every row is read before any is written). Positions outside [start, end) keep their
        values. len(indices) == B. Beam search reorders the filled positions by each beam's
        parent every step; contrastive search copies the chosen candidate's newest position
        to the other candidates of its row.

        Takes ownership of `cache` and returns the reordered cache: `cache` itself updated
        in place, or a new tensor (and then `cache` is released). Use only the returned one.

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> values = [[[[[[10.0 * row + t]] for t in range(2)] for kv in range(2)]]
            ...           for row in range(2)]   # [B=2, L=1, 2, T=2, nh=1, hd=1]
            >>> out = b.to_list(b.reorder_cache(b.tensor(values, "float32"), [1, 1], 1, 2))
            >>> [[out[row][0][0][t][0][0] for t in range(2)] for row in range(2)]
            [[0.0, 11.0], [10.0, 11.0]]
        """
        values = self.to_list(cache)
        _check_indices(indices, len(values))
        if len(indices) != len(values):
            raise ValueError(f"{len(indices)} indices for a cache of batch {len(values)}; "
                             "expected one per row")
        if end <= start:
            return cache
        reordered = []
        for b, source in enumerate(indices):
            row = values[b]
            new_row = []
            for layer, source_layer in zip(row, values[source]):
                new_row.append([kv[:start] + source_kv[start:end] + kv[end:]
                                for kv, source_kv in zip(layer, source_layer)])
            reordered.append(new_row)
        out = self.tensor(reordered, "float32")
        self.release(cache)
        return out

    def concatenate(self, tensors: Sequence[Any], axis: int) -> Any:
        """A new tensor: `tensors` (one rank and dtype, equal sizes but on `axis`) joined
        along `axis`. Contrastive search grows its context hidden states [B, S, H] with it.

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> x = b.tensor([[[1.0], [2.0]]], "float32")
            >>> b.to_list(b.concatenate([x, b.tensor([[[3.0]]], "float32")], axis=1))
            [[[1.0], [2.0], [3.0]]]
        """
        if not tensors:
            raise ValueError("concatenate needs at least one tensor")
        rank = len(self.shape(tensors[0]))
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} is outside a tensor of rank {rank}")
        axis %= rank

        def join(parts: list, depth: int) -> list:
            if depth == axis:
                return [item for part in parts for item in part]
            return [join(list(group), depth + 1) for group in zip(*parts)]

        values = join([self.to_list(t) for t in tensors], 0)
        return self.tensor(values, _dtype_of(values))

    def max_cosine_similarity(self, context: Any, candidates: Any) -> list[float]:
        """Contrastive search's degeneration penalty, one float per candidate.

        context [B, S, H] (the hidden states of a row's tokens so far); candidates [N, 1, H]
        or [N, H] with N = B * C: candidate n belongs to context row n // C. Returns, for
        each n, the maximum over s of cos(context[n // C, s], candidates[n]), where
        cos(a, b) = a.b / (|a| |b|) with no epsilon (transformers' _ranking_fast).

        Example:
            >>> import webgpt2
            >>> b = webgpt2.get_backend("cpu")
            >>> ctx = b.tensor([[[1.0, 0.0], [0.0, 2.0]]], "float32")
            >>> b.max_cosine_similarity(ctx, b.tensor([[3.0, 0.0], [-1.0, 0.0]], "float32"))
            [1.0, 0.0]
        """
        ctx = self.to_list(context)
        cands = self.to_list(candidates)
        if cands and isinstance(cands[0][0], list):
            cands = [c[0] for c in cands]
        if not ctx or len(cands) % len(ctx):
            raise ValueError(f"{len(cands)} candidates for a context of batch {len(ctx)}; "
                             "expected a multiple of it")
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

    # ---- device information -----------------------------------------------------------
    def describe(self) -> dict:
        """What this backend runs on (for `webgpt2 info`)."""
        return {"name": self.name}


# ---- helpers for the default generation operations (host lists) ---------------------------
def _host_rows(backend: Backend, x: Any) -> list[list[float]]:
    """The rows of a [B, V] or [B, 1, V] tensor as host lists."""
    shape = backend.shape(x)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[1] != 1):
        raise ValueError(f"expected logits of shape [B, V] or [B, 1, V]; got {shape}")
    values = backend.to_list(x)
    return [row[0] for row in values] if len(shape) == 3 else values


def _unrows(rows: list[list[float]], shape: tuple[int, ...]) -> list:
    return [[row] for row in rows] if len(shape) == 3 else rows


def _check_rows(token_ids: Sequence[Sequence[int]], batch: int) -> None:
    if len(token_ids) != batch:
        raise ValueError(f"{len(token_ids)} lists of token ids for {batch} rows of logits; "
                         "expected one per row")


def _check_indices(indices: Sequence[int], batch: int) -> None:
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < batch:
            raise ValueError(f"row index {i!r} is outside a batch of {batch}; expected "
                             f"0 <= index < {batch}")


def _dtype_of(values: Any) -> str:
    while isinstance(values, list):
        if not values:
            return "float32"
        values = values[0]
    return "int32" if isinstance(values, int) else "float32"
