"""Backend conformance: every operation of the `Backend` interface on every available backend,
against references written here from the definitions (NumPy) or taken from torch and
transformers, on random inputs at odd sizes (not multiples of any workgroup size).

Backends that support it (`poison`) fill every new output buffer with NaN first, so an
element a kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from host_util import host

import webgpt2
from webgpt2.backends import HostTensor

torch = pytest.importorskip("torch")

BACKENDS = webgpt2.available_backends()
ELEMENTWISE = dict(rtol=1e-5, atol=1e-5)
MATMUL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(params=BACKENDS)
def backend(request):
    b = webgpt2.get_backend(request.param)
    if hasattr(b, "poison"):
        b.poison = True
        yield b
        b.poison = False
    else:
        yield b


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def upload(b, a: np.ndarray, layout: str = "plain"):
    return b.upload(host(a), layout)


def values(b, x) -> np.ndarray:
    return np.array(b.to_list(x), dtype=np.float32)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


# ---- host <-> backend -------------------------------------------------------------------
def test_tensor_round_trip(backend):
    floats = [[[1.5, -2.0, 3.25], [0.0, 2.0 ** -30, -7.0]]]
    assert backend.shape(backend.tensor(floats, "float32")) == (1, 2, 3)
    assert backend.to_list(backend.tensor(floats, "float32")) == floats
    ints = [[1, 50256, 0, 7], [3, 2, 1, 0]]
    assert backend.to_list(backend.tensor(ints, "int32")) == ints
    assert backend.to_list(backend.zeros((2, 3))) == [[0.0] * 3] * 2


def test_upload_layouts_read_back_as_given(backend):
    r = rng(1)
    w = r.standard_normal((77, 131)).astype(np.float32)
    table = r.standard_normal((301, 21)).astype(np.float32)
    for layout, a in (("plain", w), ("linear", w), ("embedding", table)):
        t = upload(backend, a, layout)
        assert tuple(backend.shape(t)) == a.shape
        np.testing.assert_array_equal(values(backend, t), a)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_upload_widens_half_precision(backend, dtype):
    a = rng(2).standard_normal((5, 7)).astype(np.float32)
    if dtype == "float16":
        half = a.astype("<f2")
        data, expected = half.tobytes(), half.astype(np.float32)
    else:
        bits = (a.view(np.uint32) >> 16).astype("<u2")
        data, expected = bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32)
    t = backend.upload(HostTensor(dtype, a.shape, data), "plain")
    np.testing.assert_array_equal(values(backend, t), expected)


# ---- model operations -------------------------------------------------------------------
@pytest.mark.parametrize("hidden", [21, 24])
def test_embedding(backend, hidden):
    r = rng(3)
    table = r.standard_normal((301, hidden)).astype(np.float32)
    positions = r.standard_normal((40, hidden)).astype(np.float32)
    ids = r.integers(0, 301, (2, 5))
    ids[0, 0], ids[1, 4] = 0, 300  # both ends of the table
    out = backend.embedding(backend.tensor(ids.tolist(), "int32"),
                            upload(backend, table, "embedding"), upload(backend, positions), 3)
    expected = table[ids] + positions[3:8][None]
    np.testing.assert_allclose(values(backend, out), expected, **ELEMENTWISE)


def test_embedding_rejects_ids_outside_the_vocabulary(backend):
    table = upload(backend, np.zeros((10, 4), np.float32), "embedding")
    positions = upload(backend, np.zeros((8, 4), np.float32))
    with pytest.raises(ValueError, match="token id 10"):
        backend.embedding(backend.tensor([[1, 10]], "int32"), table, positions, 0)


def test_layer_norm(backend):
    r = rng(4)
    x = (r.standard_normal((2, 5, 77)) * 3 + 1).astype(np.float32)
    gamma = r.standard_normal(77).astype(np.float32)
    beta = r.standard_normal(77).astype(np.float32)
    out = backend.layer_norm(upload(backend, x), upload(backend, gamma), upload(backend, beta),
                             1e-5)
    mean = x.astype(np.float64).mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    np.testing.assert_allclose(values(backend, out), expected, **ELEMENTWISE)
    torch_out = torch.nn.functional.layer_norm(torch.from_numpy(x), (77,),
                                               torch.from_numpy(gamma), torch.from_numpy(beta))
    np.testing.assert_allclose(values(backend, out), torch_out.numpy(), **ELEMENTWISE)


@pytest.mark.parametrize("rows", [(1, 1), (3, 1), (2, 5)])  # matrix-vector and tiled paths
@pytest.mark.parametrize("k", [64, 77])  # vector-aligned rows, and a ragged tail
@pytest.mark.parametrize("bias,activation,residual", [
    (False, None, False), (True, None, False), (True, "gelu", False), (True, None, True),
    (True, "gelu", True),
])
def test_linear(backend, rows, k, bias, activation, residual):
    r = rng(5)
    n = 131
    x = r.standard_normal(rows + (k,)).astype(np.float32)
    w = (r.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32)
    b = r.standard_normal(n).astype(np.float32)
    res = r.standard_normal(rows + (n,)).astype(np.float32)
    out = backend.linear(upload(backend, x), upload(backend, w, "linear"),
                         upload(backend, b) if bias else None, activation,
                         upload(backend, res) if residual else None)
    expected = x.astype(np.float64) @ w + (b if bias else 0.0)
    if activation == "gelu":
        expected = gelu_tanh(expected)
    if residual:
        expected = expected + res
    assert tuple(backend.shape(out)) == rows + (n,)
    np.testing.assert_allclose(values(backend, out), expected, **MATMUL)


def test_gelu_matches_torch_tanh_approximation(backend):
    x = np.linspace(-12, 12, 97, dtype=np.float32)[None, :]
    eye = np.eye(97, dtype=np.float32)
    out = backend.linear(upload(backend, x), upload(backend, eye, "linear"), None, "gelu")
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    np.testing.assert_allclose(values(backend, out), expected, **ELEMENTWISE)


def reference_attention(qkv: np.ndarray, cache: np.ndarray, layer: int, start: int,
                        heads: int) -> np.ndarray:
    """Writes keys/values into `cache` (in place) and attends with explicit loops."""
    batch, seq_len, three_hidden = qkv.shape
    hidden = three_hidden // 3
    hd = hidden // heads
    q, k, v = (qkv[..., i * hidden:(i + 1) * hidden].reshape(batch, seq_len, heads, hd)
               for i in range(3))
    cache[:, layer, 0, start:start + seq_len] = k
    cache[:, layer, 1, start:start + seq_len] = v
    out = np.zeros((batch, seq_len, heads, hd))
    for bi in range(batch):
        for s in range(seq_len):
            visible = start + s + 1  # causal: positions 0 .. start + s
            for h in range(heads):
                keys = cache[bi, layer, 0, :visible, h].astype(np.float64)
                scores = keys @ q[bi, s, h] / math.sqrt(hd)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                out[bi, s, h] = weights @ cache[bi, layer, 1, :visible, h]
    return out.reshape(batch, seq_len, hidden)


@pytest.mark.parametrize("heads,head_dim,max_length,steps", [
    (3, 7, 37, [(0, 5), (5, 1), (6, 3), (9, 1)]),  # prefill, then decode steps
    (2, 70, 150, [(0, 70), (70, 1), (71, 66), (137, 1)]),  # > 64 keys and head dims
    (4, 16, 40, [(0, 13), (13, 1), (14, 1), (15, 9)]),  # head dims in whole vec4 words
])
def test_cached_attention(backend, heads, head_dim, max_length, steps):
    r = rng(6)
    batch, layers, layer = 2, 2, 1
    hidden = heads * head_dim
    cache = backend.zeros((batch, layers, 2, max_length, heads, head_dim))
    expected_cache = np.zeros((batch, layers, 2, max_length, heads, head_dim), np.float32)
    for start, seq_len in steps:
        qkv = r.standard_normal((batch, seq_len, 3 * hidden)).astype(np.float32)
        out = backend.cached_attention(upload(backend, qkv), cache, layer, start, heads)
        expected = reference_attention(qkv, expected_cache, layer, start, heads)
        np.testing.assert_allclose(values(backend, out), expected, **MATMUL)
    np.testing.assert_array_equal(values(backend, cache), expected_cache)


@pytest.mark.parametrize("start,seq_len", [(0, 1), (0, 200), (5, 131)])
def test_cached_attention_last_position_only(backend, start, seq_len):
    """The last query's output alone, and the same cache as computing every query."""
    r = rng(8)
    batch, heads, head_dim, max_length = 2, 3, 8, 210
    hidden = heads * head_dim
    past, qkv = (r.standard_normal((batch, n, 3 * hidden)).astype(np.float32)
                 for n in (start, seq_len))
    cache = backend.zeros((batch, 1, 2, max_length, heads, head_dim))
    expected_cache = np.zeros((batch, 1, 2, max_length, heads, head_dim), np.float32)
    if start:
        backend.cached_attention(upload(backend, past), cache, 0, 0, heads)
        reference_attention(past, expected_cache, 0, 0, heads)
    expected = reference_attention(qkv, expected_cache, 0, start, heads)[:, -1:]
    out = backend.cached_attention(upload(backend, qkv), cache, 0, start, heads,
                                   last_position_only=True)
    assert backend.shape(out) == (batch, 1, hidden)
    np.testing.assert_allclose(values(backend, out), expected, **MATMUL)
    np.testing.assert_array_equal(values(backend, cache), expected_cache)


def test_cached_attention_matches_torch_causal_attention(backend):
    r = rng(7)
    batch, seq_len, heads, hd = 2, 9, 3, 5
    qkv = r.standard_normal((batch, seq_len, 3 * heads * hd)).astype(np.float32)
    cache = backend.zeros((batch, 1, 2, seq_len, heads, hd))
    out = backend.cached_attention(upload(backend, qkv), cache, 0, 0, heads)
    q, k, v = (torch.from_numpy(qkv[..., i * heads * hd:(i + 1) * heads * hd])
               .reshape(batch, seq_len, heads, hd).transpose(1, 2) for i in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected = expected.transpose(1, 2).reshape(batch, seq_len, heads * hd).numpy()
    np.testing.assert_allclose(values(backend, out), expected, **MATMUL)


def test_select_position(backend):
    x = rng(8).standard_normal((3, 5, 13)).astype(np.float32)
    out = backend.select_position(upload(backend, x), 3)
    np.testing.assert_array_equal(values(backend, out), x[:, 3:4])


@pytest.mark.parametrize("hidden", [21, 24])
def test_reverse_embedding(backend, hidden):
    r = rng(9)
    table = r.standard_normal((301, hidden)).astype(np.float32)
    x = r.standard_normal((2, 3, hidden)).astype(np.float32)
    out = backend.reverse_embedding(upload(backend, x), upload(backend, table, "embedding"))
    np.testing.assert_allclose(values(backend, out), x.astype(np.float64) @ table.T, **MATMUL)


@pytest.mark.parametrize("hidden", [24, 77])
def test_reverse_embedding_argmax_is_argmax_of_the_logits(backend, hidden):
    r = rng(19)
    table = upload(backend, r.standard_normal((301, hidden)).astype(np.float32), "embedding")
    for rows in (1, 2, 3, 5):
        x = r.standard_normal((rows, 1, hidden)).astype(np.float32)
        x[0, 0, :3] = 0.0
        expected = backend.argmax(backend.reverse_embedding(upload(backend, x), table))
        assert len(set(expected)) > 1 or rows == 1
        assert backend.reverse_embedding_argmax(upload(backend, x), table) == expected
        assert backend.reverse_embedding_argmax(upload(backend, x[:, 0]), table) == expected


def test_reverse_embedding_top_k_leaves_out_only_logits_below_the_kth(backend):
    r = rng(21)
    table = upload(backend, r.standard_normal((301, 24)).astype(np.float32), "embedding")
    for shape in ((2, 1, 24), (1, 3, 24), (5, 24)):  # every position of every row
        x = upload(backend, r.standard_normal(shape).astype(np.float32))
        full = values(backend, backend.reverse_embedding(x, table))
        for k in (1, 3, 40, 301):
            cut = values(backend, backend.reverse_embedding(x, table, top_k=k))
            kept = np.isfinite(cut)
            np.testing.assert_array_equal(cut[kept], full[kept])
            assert np.all(cut[~kept] == -np.inf)
            assert not np.any(~kept & (full >= np.sort(full, axis=-1)[..., [-k]]))
    for bad, error in ((-1, ValueError), (True, TypeError), (2.5, TypeError)):
        with pytest.raises(error, match="top_k"):
            backend.reverse_embedding(x, table, top_k=bad)


def test_reverse_embedding_argmax_names_a_bad_shape(backend):
    table = upload(backend, rng(20).standard_normal((11, 4)).astype(np.float32), "embedding")
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 4\); expected \[B, H\] or"):
        backend.reverse_embedding_argmax(backend.zeros((2, 3, 4)), table)
    with pytest.raises(ValueError, match="expects 4 features"):
        backend.reverse_embedding_argmax(backend.zeros((2, 5)), table)


# ---- sampling primitives ----------------------------------------------------------------
def test_argmax_first_index_wins_ties(backend):
    logits = rng(10).standard_normal((4, 1000)).astype(np.float32)
    logits[0, [7, 500]] = 9.0  # tie across different invocations' strides
    logits[1, [3, 259]] = 9.0  # 256 apart: the same invocation's stride
    logits[2, [998, 999]] = 9.0
    logits[3, :] = -np.inf
    logits[3, 17] = logits[3, 18] = -1.0
    expected = [7, 3, 998, 17]
    assert backend.argmax(upload(backend, logits)) == expected
    assert backend.argmax(upload(backend, logits[:, None, :])) == expected
    assert backend.argmax(upload(backend, np.full((1, 33), -np.inf, np.float32))) == [0]


def reference_sample(logits: np.ndarray, uniforms, temperature: float, top_k: int,
                     top_p: float) -> list[int]:
    """transformers' warpers, then the inverse CDF over ids in increasing order."""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    scores = torch.from_numpy(logits) / temperature
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    probs = torch.softmax(scores.double(), dim=-1).numpy()
    out = []
    for row, u in zip(probs, uniforms):
        cumulative = np.cumsum(row)
        index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
        out.append(min(index, int(np.flatnonzero(row > 0)[-1])))
    return out


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 40, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.9),
    (0.8, 0, 0.5), (1.0, 50, 0.8), (1.0, 1, 1.0), (1.0, 0, 0.01),
])
def test_sample_matches_transformers_warpers(backend, temperature, top_k, top_p):
    r = rng(11)
    logits = (r.standard_normal((3, 1000)) * 2.5).astype(np.float32)
    x = upload(backend, logits)
    for uniforms in ([0.0, 0.5, 0.999], [0.31, 0.77, 0.05], [0.9, 0.1, 0.62]):
        expected = reference_sample(logits, uniforms, temperature, top_k, top_p)
        assert backend.sample(x, uniforms, temperature, top_k, top_p) == expected


def test_sample_top_k_keeps_ties_at_the_kth_value(backend):
    logits = np.full((1, 300), -5.0, np.float32)
    logits[0, [10, 20, 30]] = 2.0  # tied for 1st to 3rd
    logits[0, [40, 250]] = 1.0  # tied for 4th: top_k=4 keeps both
    x = upload(backend, logits)
    probs = np.exp([2.0, 2.0, 2.0, 1.0, 1.0])
    edges = np.cumsum(probs) / probs.sum()
    ids = [10, 20, 30, 40, 250]
    for i, edge in enumerate(edges[:-1]):
        assert backend.sample(x, [edge - 1e-3], top_k=4) == [ids[i]]
    assert backend.sample(x, [0.9999], top_k=4) == [250]
    assert backend.sample(x, [0.9999], top_k=3) == [30]


def test_token_log_probs(backend):
    r = rng(12)
    logits = (r.standard_normal((2, 3, 1000)) * 4).astype(np.float32)
    targets = r.integers(0, 1000, (2, 3))
    out = backend.token_log_probs(upload(backend, logits),
                                  backend.tensor(targets.tolist(), "int32"))
    expected = torch.log_softmax(torch.from_numpy(logits).double(), -1).numpy()
    expected = np.take_along_axis(expected, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.array(out), expected, **MATMUL)


# ---- bad calls: the interface checks them, so every backend answers alike -----------------
def _bad_calls(b):
    """(name, call, error type) for bad calls of every checked operation."""
    f = b.tensor
    x3 = f([[[1.0, 2.0], [3.0, 4.0]]], "float32")  # [1, 2, 2]
    logits = f([[0.5, 1.5, -1.0]], "float32")
    w = upload(b, np.ones((2, 3), np.float32), "linear")
    table = upload(b, np.ones((5, 2), np.float32), "embedding")
    positions = upload(b, np.ones((4, 2), np.float32))
    gamma = upload(b, np.ones(2, np.float32))
    cache = b.zeros((1, 2, 2, 4, 1, 2))
    qkv = f([[[0.1] * 6]], "float32")  # [1, 1, 3H] with H = 2, one head
    ids = f([[1, 2]], "int32")
    return [
        ("select_position past the end", lambda: b.select_position(x3, 5), ValueError),
        ("select_position negative", lambda: b.select_position(x3, -1), ValueError),
        ("select_position float", lambda: b.select_position(x3, 1.0), TypeError),
        ("sample temperature 0", lambda: b.sample(logits, [0.5], temperature=0), ValueError),
        ("sample temperature nan",
         lambda: b.sample(logits, [0.5], temperature=float("nan")), ValueError),
        ("sample top_p 0", lambda: b.sample(logits, [0.5], top_p=0.0), ValueError),
        ("sample top_k negative", lambda: b.sample(logits, [0.5], top_k=-1), ValueError),
        ("sample top_k bool", lambda: b.sample(logits, [0.5], top_k=True), TypeError),
        ("sample uniform 1", lambda: b.sample(logits, [1.0]), ValueError),
        ("sample two uniforms", lambda: b.sample(logits, [0.1, 0.2]), ValueError),
        ("argmax of [B, S>1, V]", lambda: b.argmax(x3), ValueError),
        ("top_k 0", lambda: b.top_k(logits, 0), ValueError),
        ("top_k past the width", lambda: b.top_k(logits, 4), ValueError),
        ("top_k float", lambda: b.top_k(logits, 1.5), TypeError),
        ("repetition penalty 0",
         lambda: b.apply_repetition_penalty(logits, [[0]], 0.0), ValueError),
        ("mask_tokens float id", lambda: b.mask_tokens(logits, [[0.5]]), TypeError),
        ("mask_tokens two lists", lambda: b.mask_tokens(logits, [[0], [1]]), ValueError),
        ("gather_batch out of range", lambda: b.gather_batch(logits, [1]), ValueError),
        ("gather_batch no rows", lambda: b.gather_batch(logits, []), ValueError),
        ("reorder_cache short", lambda: b.reorder_cache(cache, [], 0, 1), ValueError),
        ("reorder_cache end past T", lambda: b.reorder_cache(cache, [0], 0, 5), ValueError),
        ("concatenate nothing", lambda: b.concatenate([], 0), ValueError),
        ("concatenate mismatched", lambda: b.concatenate([x3, logits], 1), ValueError),
        ("concatenate axis", lambda: b.concatenate([x3, x3], 3), ValueError),
        ("cosine of wrong width",
         lambda: b.max_cosine_similarity(x3, f([[1.0, 2.0, 3.0]], "float32")), ValueError),
        ("linear wrong width", lambda: b.linear(logits, w), ValueError),
        ("linear activation", lambda: b.linear(x3, w, activation="relu"), ValueError),
        ("linear residual shape", lambda: b.linear(x3, w, residual=x3), ValueError),
        ("layer_norm epsilon nan",
         lambda: b.layer_norm(x3, gamma, gamma, float("nan")), ValueError),
        ("layer_norm gamma shape", lambda: b.layer_norm(x3, table, gamma, 1e-5), ValueError),
        ("embedding id out of range",
         lambda: b.embedding(f([[1, 5]], "int32"), table, positions, 0), ValueError),
        ("embedding past the positions",
         lambda: b.embedding(ids, table, positions, 3), ValueError),
        ("embedding negative start", lambda: b.embedding(ids, table, positions, -1), ValueError),
        ("reverse_embedding width", lambda: b.reverse_embedding(logits, table), ValueError),
        ("attention layer out of range",
         lambda: b.cached_attention(qkv, cache, 2, 0, 1), ValueError),
        ("attention past the cache", lambda: b.cached_attention(qkv, cache, 0, 4, 1), ValueError),
        ("attention heads", lambda: b.cached_attention(qkv, cache, 0, 0, 2), ValueError),
        ("token_log_probs target out of range",
         lambda: b.token_log_probs(x3, f([[0, 2]], "int32")), ValueError),
        ("token_log_probs negative target",
         lambda: b.token_log_probs(x3, f([[0, -1]], "int32")), ValueError),
        ("token_log_probs target shape",
         lambda: b.token_log_probs(x3, f([[0]], "int32")), ValueError),
        ("upload layout", lambda: b.upload(host(np.ones(2, np.float32)), "rows"), ValueError),
        ("upload a 1-D linear weight",
         lambda: b.upload(host(np.ones(2, np.float32)), "linear"), ValueError),
        ("tensor dtype", lambda: b.tensor([1.0], "float64"), ValueError),
        ("zeros negative", lambda: b.zeros((2, -1)), ValueError),
    ]


def test_every_backend_raises_the_same_error_for_the_same_bad_call():
    seen: dict[str, dict[str, str]] = {}
    for name in BACKENDS:
        b = webgpt2.get_backend(name)
        for case, call, error in _bad_calls(b):
            with pytest.raises(error) as caught:
                call()
            seen.setdefault(case, {})[name] = str(caught.value)
    for case, messages in seen.items():
        assert len(set(messages.values())) == 1, (case, messages)
