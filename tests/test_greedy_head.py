"""The wasm backend's greedy head (wasm/greedy.c, backends/wasm/greedy.py): the ids through
the 8-bit screen are argmax's of the logits that `reverse_embedding` computes, bit for bit,
on tables and rows built to defeat the screen (near ties, exact ties, non-finite and huge
values), and the screen leaves out most logits of an ordinary row.

The conformance suite (test_backend_ops.py) checks the operation on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from host_util import host

pytest.importorskip("wasmtime")

from webgpt2.backends.wasm import WasmBackend  # noqa: E402
from webgpt2.backends.wasm.greedy import screened_argmax  # noqa: E402


@pytest.fixture
def b():
    backend = WasmBackend()
    backend.poison = True
    return backend


def full_argmax(b, x, table) -> list[int]:
    return b.argmax(b.reverse_embedding(x, table))


def check(b, x: np.ndarray, table) -> list[int]:
    """The screened ids equal argmax of the logits; returns how many logits each row took."""
    xt = b.tensor(x.tolist(), "float32")
    screened = screened_argmax(b, xt, table)
    assert screened is not None
    ids, computed = screened
    assert ids == full_argmax(b, xt, table)
    assert b.reverse_embedding_argmax(xt, table) == ids
    return computed


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("hidden", [8, 24, 64, 77, 768])
def test_ordinary_rows_compute_few_logits(b, dtype, hidden):
    r = np.random.default_rng(hidden)
    vocabulary = 997
    table = b.upload(host(r.standard_normal((vocabulary, hidden)).astype(np.float32) * 0.2),
                     "embedding", dtype)
    computed = check(b, r.standard_normal((3, hidden)).astype(np.float32) * 3.0, table)
    assert table.screen
    # Random Gaussian logits have gaps far above the screen's error at these sizes.
    assert all(1 <= c <= vocabulary // 20 for c in computed), computed


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_near_ties_are_settled_by_the_exact_logits(b, dtype):
    r = np.random.default_rng(1)
    hidden, vocabulary = 64, 300
    base = r.standard_normal(hidden).astype(np.float32)
    # Rows one float16 step apart in one element: the screen cannot tell them apart.
    table = np.tile(base, (vocabulary, 1))
    steps = r.integers(-3, 4, vocabulary)
    table[:, 5] = base[5] + steps * np.float32(2.0 ** -9)
    uploaded = b.upload(host(table), "embedding", dtype)
    x = r.standard_normal((2, hidden)).astype(np.float32)
    x[:, 5] = [1.0, -1.0]
    computed = check(b, x, uploaded)
    assert all(c > 10 for c in computed), computed


def test_exact_ties_go_to_the_first_index(b):
    r = np.random.default_rng(2)
    table = r.standard_normal((50, 16)).astype(np.float32)
    table[[40, 7, 23]] = table[3] * 4.0  # the largest logits, equal
    x = table[3:4] * 2.0
    uploaded = b.upload(host(table), "embedding")
    check(b, x, uploaded)
    assert b.reverse_embedding_argmax(b.tensor(x.tolist(), "float32"), uploaded) == [7]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 2.0 ** 41, 0.0])
def test_rows_outside_the_screen_take_every_logit(b, bad):
    r = np.random.default_rng(3)
    table = b.upload(host(r.standard_normal((61, 12)).astype(np.float32)), "embedding")
    x = r.standard_normal((2, 12)).astype(np.float32)
    if bad == 0.0:
        x[1] = 0.0
    else:
        x[1, 4] = bad
    computed = check(b, x, table)
    assert computed[1] == 61 and computed[0] < 61


@pytest.mark.parametrize("bad", [np.inf, np.nan, 2.0 ** 41])
def test_a_table_the_screen_cannot_hold_takes_every_logit(b, bad):
    a = np.random.default_rng(4).standard_normal((40, 8)).astype(np.float32)
    a[13, 2] = bad
    table = b.upload(host(a), "embedding")
    x = b.tensor(np.random.default_rng(5).standard_normal((1, 8)).astype(np.float32).tolist(),
                 "float32")
    assert screened_argmax(b, x, table) is None and table.screen is False
    assert b.reverse_embedding_argmax(x, table) == full_argmax(b, x, table)


def test_four_rows_or_more_take_linears_own_path(b):
    r = np.random.default_rng(6)
    table = b.upload(host(r.standard_normal((70, 8)).astype(np.float32)), "embedding")
    x = b.tensor(r.standard_normal((4, 8)).astype(np.float32).tolist(), "float32")
    assert screened_argmax(b, x, table) is None
    assert b.reverse_embedding_argmax(x, table) == full_argmax(b, x, table)


def test_the_screen_is_freed_with_its_table(b):
    r = np.random.default_rng(7)
    x = b.tensor(r.standard_normal((1, 32)).astype(np.float32).tolist(), "float32")
    b.synchronize()
    before = b.memory.bytes_in_use
    table = b.upload(host(r.standard_normal((500, 32)).astype(np.float32)), "embedding")
    b.reverse_embedding_argmax(x, table)
    assert table.screen and b.memory.bytes_in_use >= before + 500 * 32 * 5
    b.release(table)
    b.memory._drain()  # frees are queued until the next allocation
    assert b.memory.bytes_in_use == before


def test_no_memory_for_the_screen_takes_every_logit():
    r = np.random.default_rng(8)
    b = WasmBackend(max_memory=4 << 20)
    a = r.standard_normal((7000, 128)).astype(np.float32)  # 3.6 MB, and its screen 0.9 MB
    table = b.upload(host(a), "embedding")
    x = b.tensor(r.standard_normal((1, 128)).astype(np.float32).tolist(), "float32")
    assert b.reverse_embedding_argmax(x, table) == [int(np.argmax(a @ np.asarray(
        b.to_list(x), np.float32)[0]))]
    assert table.screen is False


def test_random_tables_and_rows_agree_with_argmax(b):
    """Seeded cases built to be awkward: tiny and odd sizes, magnitudes from 2^-60 to 2^30,
    rows copied with one-ulp changes, sparse rows and inputs, both storages."""
    r = np.random.default_rng(11)
    for case in range(120):
        vocabulary, hidden = int(r.integers(1, 300)), int(r.integers(1, 80))
        scale = float(2.0 ** r.integers(-60, 30))
        a = (r.standard_normal((vocabulary, hidden)) * scale).astype(np.float32)
        if case % 3 == 0 and vocabulary > 2:  # near copies of one row
            picks = r.integers(0, vocabulary, vocabulary // 2)
            a[picks] = a[0]
            a[picks, r.integers(0, hidden)] = np.nextafter(a[picks, 0], np.inf)
        if case % 5 == 0:
            a[r.random(a.shape) < 0.7] = 0.0
        dtype = "float16" if case % 2 else "float32"
        table = b.upload(host(a), "embedding", dtype)
        rows = int(r.integers(1, 4))
        x = (r.standard_normal((rows, hidden)) * float(2.0 ** r.integers(-20, 20)))
        x[r.random(x.shape) < 0.3] = 0.0
        check(b, x.astype(np.float32), table)
        b.release(table)


def test_rows_of_subnormal_size_still_agree(b):
    r = np.random.default_rng(12)
    a = r.standard_normal((90, 40)).astype(np.float32)
    a[::2] *= np.float32(2.0 ** -124)  # scales 1 / s would overflow: q = 0 there
    a[1::4] *= np.float32(2.0 ** -140)  # subnormal
    table = b.upload(host(a), "embedding")
    assert max(check(b, r.standard_normal((3, 40)).astype(np.float32) * 2.0 ** 30, table)) < 90
    check(b, r.standard_normal((2, 40)).astype(np.float32), table)


# ---- top-k sampling's logits ------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_logits_keep_every_logit_top_k_sampling_reads(b, dtype, k):
    from webgpt2.backends.wasm.greedy import screened_top_k

    r = np.random.default_rng(k)
    vocabulary, hidden = 997, 64
    table = b.upload(host(r.standard_normal((vocabulary, hidden)).astype(np.float32) * 0.2),
                     "embedding", dtype)
    for x in (r.standard_normal((3, hidden)).astype(np.float32) * 3.0,
              np.tile(r.standard_normal((1, hidden)).astype(np.float32), (2, 1))):
        xt = b.tensor(x.tolist(), "float32")
        full = np.array(b.to_list(b.reverse_embedding(xt, table)), np.float32)
        screened = screened_top_k(b, xt, table, k, counts=True)
        assert screened is not None
        sparse, counts = np.array(b.to_list(screened[0]), np.float32), screened[1]
        kept = np.isfinite(sparse)
        np.testing.assert_array_equal(sparse[kept], full[kept])  # bit for bit
        kth = np.sort(full, axis=1)[:, -k][:, None]
        assert not np.any(~kept & (full >= kth))  # nothing top-k keeps is left out
        assert list(kept.sum(axis=1)) == counts and max(counts) < vocabulary // 4, counts
        for temperature, top_p in ((1.0, 1.0), (0.7, 0.9), (1.3, 0.5)):
            uniforms = list(r.random(len(x)))
            assert b.sample(screened[0], uniforms, temperature, k, top_p) == \
                b.sample(b.reverse_embedding(xt, table), uniforms, temperature, k, top_p)


def test_top_k_logits_for_near_ties_and_odd_rows(b):
    from webgpt2.backends.wasm.greedy import screened_top_k

    r = np.random.default_rng(13)
    a = np.tile(r.standard_normal(24).astype(np.float32), (200, 1))
    a[:, 3] += r.integers(-2, 3, 200).astype(np.float32) * np.float32(2.0 ** -12)
    table = b.upload(host(a), "embedding")
    x = r.standard_normal((2, 24)).astype(np.float32)
    x[1] = 0.0  # every logit
    xt = b.tensor(x.tolist(), "float32")
    sparse, counts = screened_top_k(b, xt, table, 7, counts=True)
    full = np.array(b.to_list(b.reverse_embedding(xt, table)), np.float32)
    sparse = np.array(b.to_list(sparse), np.float32)
    kept = np.isfinite(sparse)
    np.testing.assert_array_equal(sparse[kept], full[kept])
    assert not np.any(~kept & (full >= np.sort(full, axis=1)[:, -7][:, None]))
    assert counts[1] == 200 and counts[0] > 7
