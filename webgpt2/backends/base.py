"""The backend interface: the operations the model, layers and samplers are written against.

A backend owns its tensors. The model never looks inside one; it passes them from
operation to operation, and host data crosses only at the edges (`upload`, `tensor`,
`to_list`, the samplers' token ids). The operation set is chosen so that a GPU backend can
fuse work and keep weights and the KV cache resident: a linear layer carries its bias, an
optional tanh-GELU and an optional residual; attention writes this step's keys and values
into the cache itself; sampling returns token ids, not logits.

Each public operation checks its arguments here (checks.py), once for every backend, and then
calls the backend's `_operation` (tinygrad's `alloc` -> `_alloc`): a backend implements the
underscore methods and never repeats a check, so every backend answers a bad call alike.

Shapes use these names: B batch, S new positions, T the cache's max length, H hidden size,
V vocabulary size, L layers, nh heads, hd head size (H = nh * hd).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webgpt2.backends import checks, host_ops
from webgpt2.backends.host import DTYPES, ITEMSIZE, BackendError, HostTensor  # noqa: F401


class Backend:
    """The interface every backend implements. Tensors are the backend's own objects.

    A backend implements `shape`, `to_list`, `release` (optional) and the underscore methods
    at the end (the generation operations' have host defaults); public methods check first.

    Example:
        >>> import webgpt2
        >>> b = webgpt2.get_backend("cpu")
        >>> x = b.tensor([[1.0, 2.0, 3.0]], "float32")
        >>> b.shape(x)
        (1, 3)
    """

    name: str = "abstract"
    # Storage dtypes `upload` accepts for weights (arithmetic is float32 everywhere).
    storage_dtypes: tuple[str, ...] = ("float32",)

    # ---- host <-> backend -------------------------------------------------------------
    def upload(self, host: HostTensor, layout: str = "plain", dtype: str | None = None) -> Any:
        """Copy weight data to the backend once.

        layout: "plain" (as given), "linear" (a Hugging Face Conv1D weight, [in, out]: the
        backend may store it transposed), "embedding" ([V, H], used by `embedding` and by
        `reverse_embedding`). dtype: the storage dtype (None for the backend's default, or
        one of its `storage_dtypes`); arithmetic stays float32.
        """
        if not isinstance(host, HostTensor):
            raise TypeError(f"upload takes a HostTensor; got {type(host).__name__}")
        if layout not in ("plain", "linear", "embedding"):
            raise ValueError(f"layout {layout!r}; expected 'plain', 'linear' or 'embedding'")
        if dtype is not None and dtype not in self.storage_dtypes:
            raise ValueError(f"the {self.name} backend stores weights as "
                             f"{' or '.join(self.storage_dtypes)}, not {dtype!r}")
        if layout != "plain" and (len(host.shape) != 2 or host.dtype == "int32"):
            raise ValueError(f"a {layout} weight must be a 2-D float tensor; got "
                             f"{host.dtype} of shape {host.shape}")
        return self._upload(host, layout, dtype)

    def tensor(self, values: Any, dtype: str) -> Any:
        """A tensor from nested lists (ids, small inputs); float16 is held as float32."""
        if dtype not in ("float32", "float16", "int32"):
            raise ValueError(f"dtype {dtype!r}; expected 'float32', 'float16' or 'int32'")
        return self._tensor(values, dtype)

    def to_list(self, x: Any) -> list:
        """Nested Python lists of the tensor's values (a read back on a device)."""
        raise NotImplementedError

    def shape(self, x: Any) -> tuple[int, ...]:
        raise NotImplementedError
    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> Any:
        """A zero-filled tensor. A 6-D float one may be a KV cache [B, L, 2, T, nh, hd]."""
        if dtype not in ("float32", "float16", "int32"):
            raise ValueError(f"dtype {dtype!r}; expected 'float32', 'float16' or 'int32'")
        return self._zeros(tuple(checks.integer("a dimension", n, 0) for n in shape), dtype)

    def release(self, x: Any) -> None:
        """Free x's memory now (cpu keeps the array for reuse); x must not be used after."""

    def step_replayer(self) -> Any:
        """For one greedy generation: a replayer of decode steps (backends/replay.py) or None."""
        return None

    def _int_values(self, x: Any) -> list[int]:
        """The flat values of an int32 tensor, for checks (a host copy where one is kept)."""
        return host_ops.flat_values(self, x)

    # ---- model operations -------------------------------------------------------------
    def embedding(self, token_ids: Any, token_table: Any, position_table: Any,
                  start_position: int) -> Any:
        """hidden [B, S, H] = token_table[token_ids] + position_table[start + arange(S)].

        token_ids [B, S] int32. Ids outside [0, V) raise ValueError naming the id.
        """
        ids_shape = self.shape(token_ids)
        table_shape = self.shape(token_table)
        positions_shape = self.shape(position_table)
        checks.rank("token_ids", ids_shape, 2, "[B, S]")
        checks.rank("token_table", table_shape, 2, "[V, H]")
        checks.rank("position_table", positions_shape, 2, "[max_positions, H]")
        if positions_shape[1] != table_shape[1]:
            raise ValueError(f"position_table {positions_shape} and token_table "
                             f"{table_shape} differ in hidden size")
        start = checks.integer("start_position", start_position, 0)
        if start + ids_shape[1] > positions_shape[0]:
            raise ValueError(f"positions {start}..{start + ids_shape[1] - 1} are outside the "
                             f"position table of {positions_shape[0]} rows")
        checks.ids_in_range("token id", self._int_values(token_ids), table_shape[0])
        return self._embedding(token_ids, token_table, position_table, start)

    def layer_norm(self, x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
        """Layer norm over the last axis, biased variance, as torch.nn.LayerNorm."""
        hidden = self.shape(x)[-1:]
        for name, t in (("gamma", gamma), ("beta", beta)):
            if self.shape(t) != hidden:
                raise ValueError(f"{name} has shape {self.shape(t)}; expected {hidden} "
                                 f"for x of shape {self.shape(x)}")
        epsilon = checks.real("epsilon", epsilon)
        if epsilon < 0:
            raise ValueError(f"epsilon is {epsilon}; expected epsilon >= 0")
        return self._layer_norm(x, gamma, beta, epsilon)

    def linear(self, x: Any, weight: Any, bias: Any | None = None,
               activation: str | None = None, residual: Any | None = None) -> Any:
        """y = activation(x @ W + bias) + residual. x [..., K]; W uploaded with layout
        "linear" from [K, N]; activation None or "gelu" (tanh approximation, GPT-2's
        gelu_new); residual [..., N] or None."""
        if activation not in (None, "gelu"):
            raise ValueError(f"activation {activation!r}; expected None or 'gelu'")
        x_shape, w_shape = self.shape(x), self.shape(weight)
        checks.rank("weight", w_shape, 2, "[K, N]")
        if not x_shape or x_shape[-1] != w_shape[0]:
            raise ValueError(f"x has shape {x_shape}; the weight {w_shape} expects "
                             f"{w_shape[0]} features")
        if bias is not None and self.shape(bias) != w_shape[1:]:
            raise ValueError(f"bias has shape {self.shape(bias)}; expected {w_shape[1:]}")
        out_shape = x_shape[:-1] + w_shape[1:]
        if residual is not None and tuple(self.shape(residual)) != out_shape:
            raise ValueError(f"residual has shape {self.shape(residual)}; expected {out_shape}")
        return self._linear(x, weight, bias, activation, residual)

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
        qkv_shape, cache_shape = self.shape(qkv), self.shape(cache)
        checks.rank("qkv", qkv_shape, 3, "[B, S, 3H]")
        checks.rank("cache", cache_shape, 6, "[B, L, 2, T, nh, hd]")
        batch, seq_len, three_hidden = qkv_shape
        num_heads = checks.integer("num_heads", num_heads, 1)
        if seq_len < 1 or three_hidden % (3 * num_heads):
            raise ValueError(f"qkv has shape {qkv_shape}; expected [B, S >= 1, 3H] with H a "
                             f"multiple of num_heads={num_heads}")
        head_dim = three_hidden // 3 // num_heads
        c_batch, layers, two, max_length, c_heads, c_head_dim = cache_shape
        if (c_batch, two, c_heads, c_head_dim) != (batch, 2, num_heads, head_dim):
            raise ValueError(f"cache shape {cache_shape} does not match qkv {qkv_shape} with "
                             f"{num_heads} heads; expected [{batch}, L, 2, T, {num_heads}, "
                             f"{head_dim}]")
        layer_index = checks.integer("layer_index", layer_index, 0, layers - 1)
        start = checks.integer("cache_update_index", cache_update_index, 0)
        if start + seq_len > max_length:
            raise ValueError(f"cache positions {start}..{start + seq_len - 1} are outside the "
                             f"cache's max length of {max_length}")
        return self._cached_attention(qkv, cache, layer_index, start, num_heads,
                                      bool(last_position_only))

    def select_position(self, x: Any, index: int) -> Any:
        """x[:, index:index+1, :] — [B, S, H] -> [B, 1, H]; 0 <= index < S."""
        shape = self.shape(x)
        checks.rank("x", shape, 3, "[B, S, H]")
        index = checks.integer("index", index, 0, shape[1] - 1)
        return self._select_position(x, index)

    def reverse_embedding(self, x: Any, token_table: Any, top_k: int = 0) -> Any:
        """logits [B, S, V] = x [B, S, H] @ token_table[V, H]^T (the tied LM head). With top_k
        > 0 a backend may return -inf for logits below each row's k-th largest (top-k's cut)."""
        checks.head_input(self.shape(x), self.shape(token_table))
        if top_k := checks.integer("top_k", top_k, 0):
            return self._reverse_embedding_top_k(x, token_table, top_k)
        return self._reverse_embedding(x, token_table)

    def reverse_embedding_argmax(self, x: Any, token_table: Any) -> list[int]:
        """argmax(reverse_embedding(x, token_table)) of each row (first on ties): greedy
        decoding's next tokens. x [B, H] or [B, 1, H]. The ids are argmax's, but a backend
        may leave out the logits it can prove are below the largest (wasm: greedy.c)."""
        checks.head_input(self.shape(x), self.shape(token_table), rows=True)
        return self._reverse_embedding_argmax(x, token_table)

    # ---- sampling primitives (token ids out, not logits) --------------------------------
    def argmax(self, logits: Any) -> list[int]:
        """Index of the largest logit of each row (first on ties). logits [B, V] or [B, 1, V]."""
        checks.logit_rows("logits", self.shape(logits))
        return self._argmax(logits)

    def sample(self, logits: Any, uniforms: Sequence[float], temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0) -> list[int]:
        """One token id per row drawn from softmax(filtered logits / temperature).

        Filtering follows transformers' warpers in their order (temperature, then top-k, then
        top-p): top-k keeps logits >= the k-th largest (0 keeps all); top-p keeps the smallest
        set of most probable tokens whose probability reaches top_p (tokens whose cumulative
        probability in ascending order is <= 1 - top_p are removed; the most probable always
        stays). The draw is by inverse CDF over token ids in increasing order: the first id
        whose cumulative probability exceeds uniforms[row] * total. The host supplies the
        uniform numbers in [0, 1) so the same seed draws the same tokens on every backend.
        """
        rows, _ = checks.logit_rows("logits", self.shape(logits))
        if len(uniforms) != rows:
            raise ValueError(f"{len(uniforms)} uniform numbers for {rows} rows; expected "
                             "one per row")
        draws = [checks.real("a uniform number", u) for u in uniforms]
        if any(not 0.0 <= u < 1.0 for u in draws):
            raise ValueError(f"uniform numbers {draws}; expected each in [0, 1)")
        temperature = checks.positive("temperature", temperature)
        top_k = checks.integer("top_k", top_k, 0)
        top_p = checks.real("top_p", top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p is {top_p}; expected 0 < top_p <= 1")
        return self._sample(logits, draws, temperature, top_k, top_p)

    def token_log_probs(self, logits: Any, target_ids: Any) -> list[list[float]]:
        """log_softmax(logits)[b, s, target_ids[b, s]] for scoring. logits [B, S, V],
        target_ids [B, S] int32 with every id in [0, V). Returns [B][S] floats."""
        shape = self.shape(logits)
        checks.rank("logits", shape, 3, "[B, S, V]")
        if tuple(self.shape(target_ids)) != shape[:2]:
            raise ValueError(f"target_ids has shape {self.shape(target_ids)}; expected "
                             f"{shape[:2]}")
        checks.ids_in_range("target id", self._int_values(target_ids), shape[2])
        return self._token_log_probs(logits, target_ids)

    # ---- generation operations ----------------------------------------------------------
    # For beam and contrastive search and logits processors. Each `_operation` has a host
    # default (host_ops.py) that a backend overrides to stay on the device. "Logits" below
    # are [B, V] or [B, 1, V]; results keep the input's shape.

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
        checks.logit_rows("logits", self.shape(logits))
        return self._log_softmax(logits)

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
        _, width = checks.logit_rows("x", self.shape(x))
        return self._top_k(x, checks.integer("k", k, 1, width))

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
        rows, _ = checks.logit_rows("logits", self.shape(logits))
        checks.token_lists(token_ids, rows)
        return self._apply_repetition_penalty(logits, token_ids,
                                              checks.positive("penalty", penalty))

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
        rows, _ = checks.logit_rows("logits", self.shape(logits))
        checks.token_lists(token_ids, rows)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"value is {value!r}; expected a number (not NaN)")
        return self._mask_tokens(logits, token_ids, float(value))

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
        shape = self.shape(x)
        if not shape:
            raise ValueError("gather_batch needs a tensor of rank 1 or more; got a scalar")
        picked = checks.row_indices(indices, shape[0])
        if not picked:
            raise ValueError("gather_batch needs at least one row index")
        return self._gather_batch(x, picked)

    def reorder_cache(self, cache: Any, indices: Sequence[int], start: int, end: int) -> Any:
        """Reorder a KV cache [B, L, 2, T, nh, hd] by batch row over positions [start, end).

        cache[b, :, :, start:end] <- the old cache[indices[b], :, :, start:end] for every b
        (every row is read before any is written). Positions outside [start, end) keep their
        values. len(indices) == B; 0 <= start and end <= T (end <= start changes nothing).
        Beam search reorders the filled positions by each beam's parent every step;
        contrastive search copies the chosen candidate's newest position to the other
        candidates of its row.

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
        shape = self.shape(cache)
        checks.rank("cache", shape, 6, "[B, L, 2, T, nh, hd]")
        rows = checks.row_indices(indices, shape[0])
        if len(rows) != shape[0]:
            raise ValueError(f"{len(rows)} indices for a cache of batch {shape[0]}; "
                             "expected one per row")
        start = checks.integer("start", start, 0)
        end = checks.integer("end", end, None, shape[3])
        if end <= start:
            return cache
        return self._reorder_cache(cache, rows, start, end)

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
        shapes = [tuple(self.shape(t)) for t in tensors]
        rank = len(shapes[0])
        axis = checks.integer("axis", axis, -rank, rank - 1) % rank
        for s in shapes:
            if len(s) != rank or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
                raise ValueError(f"cannot concatenate shapes {shapes} along axis {axis}; "
                                 "expected equal sizes on every other axis")
        return self._concatenate(list(tensors), axis)

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
        checks.contrastive_candidates(self.shape(context), self.shape(candidates))
        return self._max_cosine_similarity(context, candidates)

    # ---- device information -----------------------------------------------------------
    def memory_limit_bytes(self) -> int | None:
        """The most memory work here may take (None: unknown); generate checks it first."""
        return None

    def describe(self) -> dict:
        """What this backend runs on (for `webgpt2 info`)."""
        return {"name": self.name}

    # ---- what a backend implements (arguments arrive checked) -------------------------
    def _upload(self, host: HostTensor, layout: str, dtype: str | None) -> Any:
        raise NotImplementedError

    def _tensor(self, values: Any, dtype: str) -> Any:
        raise NotImplementedError

    def _zeros(self, shape: tuple[int, ...], dtype: str) -> Any:  # 6-D float: a KV cache
        raise NotImplementedError

    def _embedding(self, token_ids: Any, token_table: Any, position_table: Any,
                   start_position: int) -> Any:
        raise NotImplementedError

    def _layer_norm(self, x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
        raise NotImplementedError

    def _linear(self, x: Any, weight: Any, bias: Any | None, activation: str | None,
                residual: Any | None) -> Any:
        raise NotImplementedError

    def _cached_attention(self, qkv: Any, cache: Any, layer_index: int,
                          cache_update_index: int, num_heads: int,
                          last_position_only: bool) -> Any:
        raise NotImplementedError

    def _select_position(self, x: Any, index: int) -> Any:
        raise NotImplementedError

    def _reverse_embedding(self, x: Any, token_table: Any) -> Any:
        raise NotImplementedError

    def _argmax(self, logits: Any) -> list[int]:
        raise NotImplementedError

    def _reverse_embedding_argmax(self, x: Any, token_table: Any) -> list[int]:
        return host_ops.reverse_embedding_argmax(self, x, token_table)

    def _reverse_embedding_top_k(self, x: Any, token_table: Any, top_k: int) -> Any:
        return self._reverse_embedding(x, token_table)

    def _sample(self, logits: Any, uniforms: list[float], temperature: float, top_k: int,
                top_p: float) -> list[int]:
        raise NotImplementedError

    def _token_log_probs(self, logits: Any, target_ids: Any) -> list[list[float]]:
        raise NotImplementedError

    def _log_softmax(self, logits: Any) -> Any:
        return host_ops.log_softmax(self, logits)

    def _top_k(self, x: Any, k: int) -> tuple[list[list[float]], list[list[int]]]:
        return host_ops.top_k(self, x, k)

    def _apply_repetition_penalty(self, logits: Any, token_ids: Sequence[Sequence[int]],
                                  penalty: float) -> Any:
        return host_ops.apply_repetition_penalty(self, logits, token_ids, penalty)

    def _mask_tokens(self, logits: Any, token_ids: Sequence[Sequence[int]],
                     value: float) -> Any:
        return host_ops.mask_tokens(self, logits, token_ids, value)

    def _gather_batch(self, x: Any, indices: list[int]) -> Any:
        return host_ops.gather_batch(self, x, indices)

    def _reorder_cache(self, cache: Any, indices: list[int], start: int, end: int) -> Any:
        return host_ops.reorder_cache(self, cache, indices, start, end)

    def _concatenate(self, tensors: list[Any], axis: int) -> Any:
        return host_ops.concatenate(self, tensors, axis)

    def _max_cosine_similarity(self, context: Any, candidates: Any) -> list[float]:
        return host_ops.max_cosine_similarity(self, context, candidates)
