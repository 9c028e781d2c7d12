"""The cpu backend's reuse of released arrays (webgpt2/backends/cpu/buffers.py: it must reuse
what the model releases, and never hand out memory that somebody still holds) and its
spreading of long prompts over the cores (parallel.py)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
from host_util import host

from webgpt2.backends.cpu import CPUBackend
from webgpt2.backends.cpu.buffers import MIN_POOLED_BYTES, BufferPool
from webgpt2.backends.cpu.parallel import RowParallel
from webgpt2.models.gpt2.gpt2_backbone import GPT2Backbone
from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

BIG = (64, 512)  # 128 KiB of float32: above MIN_POOLED_BYTES
assert np.prod(BIG) * 4 >= MIN_POOLED_BYTES


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_pool_reuses_by_shape_and_dtype():
    pool = BufferPool()
    a = pool.empty(BIG)
    where = address(a)
    assert pool.give(a) and pool.bytes_held == a.nbytes
    assert address(pool.empty(BIG, np.int32)) != where  # another dtype: new memory
    assert address(pool.empty((BIG[1], BIG[0]))) != where  # another shape: new memory
    assert address(pool.empty(BIG)) == where
    assert pool.bytes_held == 0


@pytest.mark.parametrize("case", ["view", "small", "read-only", "not contiguous"])
def test_pool_refuses_what_it_cannot_own(case):
    pool = BufferPool()
    base = np.zeros((128, 512), np.float32)
    array = {"view": base[:64], "small": np.zeros(8, np.float32),
             "read-only": np.frombuffer(bytes(base.nbytes), np.float32),
             "not contiguous": base[:, ::2]}[case]
    assert not pool.give(array)
    assert pool.bytes_held == 0


def test_pool_keeps_at_most_its_limit():
    pool = BufferPool(limit_bytes=3 * 2**17)
    arrays = [np.empty(BIG, np.float32) for _ in range(4)]  # 128 KiB each
    assert [pool.give(a) for a in arrays] == [True, True, True, False]
    pool.clear()
    assert pool.bytes_held == 0


def test_release_takes_back_only_the_last_reference():
    b = CPUBackend()
    x = b.zeros(BIG)
    alias = x
    b.release(x)  # `alias` still refers to it: not reused
    assert address(b.zeros(BIG)) != address(alias)
    del alias
    view = x[1:]
    b.release(x)  # the view keeps x alive: not reused
    assert address(b.zeros(BIG)) != address(x)
    del view
    where = address(x)
    b.release(x)
    again = b.zeros(BIG)
    assert address(again) == where
    assert not again.any()  # zeros() really zeroes reused memory


@pytest.fixture(scope="module")
def lm():
    backbone = GPT2Backbone(vocabulary_size=300, num_layers=2, num_heads=4, hidden_dim=64,
                            intermediate_dim=256, max_sequence_length=512, backend="cpu")
    backbone.initialize_weights(seed=3)
    return GPT2CausalLM(backbone)


def test_arrays_returned_to_the_caller_are_never_reused(lm):
    """Logits, hidden states and caches that a caller holds stay intact through later calls
    (whose intermediates have the same shapes and go through the pool)."""
    prompt = [[(i * 37) % 300 for i in range(200)]]
    hidden, cache = lm.build_cache(prompt, cache_length=210)
    logits, step_hidden, cache = lm.call_with_cache([[5]], cache, 200)
    held = [hidden, cache, logits, step_hidden]
    copies = [np.array(a) for a in held]
    for _ in range(3):
        full_logits = lm(prompt)
        _, more_cache = lm.build_cache(prompt, cache_length=210)
        lm.call_with_cache([[7]], more_cache, 200)
        lm.backend.release(more_cache)
        lm.backend.release(full_logits)
    for kept, copy in zip(held, copies):
        np.testing.assert_array_equal(kept, copy)


def test_a_second_prefill_makes_almost_no_new_memory(lm):
    """After one forward pass the intermediates of the next come from the pool: the only new
    memory is the cache handed to the caller (the last hidden states are below pool size)."""
    prompt = [[(i * 11) % 300 for i in range(256)]]
    pool = lm.backend._pool
    lm.build_cache(prompt, cache_length=260, last_position_only=True)
    before = pool.misses
    hidden, cache = lm.build_cache(prompt, cache_length=260, last_position_only=True)
    assert pool.misses - before == 1
    first, _ = lm.build_cache(prompt, cache_length=260, last_position_only=True)
    np.testing.assert_array_equal(hidden, first)


# ---- spreading a long prompt over the cores (webgpt2/backends/cpu/parallel.py) ---------------
def spreading(parts: int) -> RowParallel:
    """A RowParallel of `parts` parts; skips the test where BLAS cannot be limited."""
    parallel = RowParallel(parts=parts)
    if parallel.parts == 1:
        pytest.skip("BLAS threads cannot be limited here (no threadpoolctl)")
    return parallel


def test_split_cuts_rows_into_nearly_equal_parts():
    parallel = spreading(3)
    assert parallel.split(100, min_per_part=10) == [(0, 33), (33, 66), (66, 100)]
    assert parallel.split(40, min_per_part=32) == [(0, 40)]  # too few rows to cut
    assert parallel.split(12, min_per_part=1) == [(0, 4), (4, 8), (8, 12)]


def test_parts_run_on_other_threads_unless_blas_threads_are_spinning():
    parallel = spreading(2)
    seen = []

    def record(i):
        seen.append((i, threading.get_ident()))

    parallel.run(record, [(0,), (1,)])
    assert len({ident for _, ident in seen}) == 2
    seen.clear()
    parallel.blas_threaded()  # as after a decode step: BLAS's own threads are still busy
    parallel.run(record, [(0,), (1,)])
    assert [ident for _, ident in seen] == [threading.get_ident()] * 2


def test_a_failing_part_raises_after_every_part_finished():
    parallel = spreading(2)
    done = []

    def part(i):
        if i == 1:
            raise ValueError("part 1 failed")
        time.sleep(0.05)
        done.append(i)

    with pytest.raises(ValueError, match="part 1 failed"):
        parallel.run(part, [(0,), (1,)])
    assert done == [0]


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_thread_count_is_refused(monkeypatch, value):
    monkeypatch.setenv("WEBGPT2_NUM_THREADS", value)
    with pytest.raises(ValueError, match="WEBGPT2_NUM_THREADS"):
        CPUBackend()


def test_spread_prefill_equals_serial_prefill():
    """A 300-token prefill cut into two parts per operation gives what one core gives."""
    results = []
    for threads in (1, 2):
        backbone = GPT2Backbone(vocabulary_size=300, num_layers=2, num_heads=4, hidden_dim=64,
                                intermediate_dim=256, max_sequence_length=512,
                                backend=CPUBackend(num_threads=threads))
        backbone.initialize_weights(seed=5)
        lm = GPT2CausalLM(backbone)
        if threads == 2 and lm.backend._parallel.parts == 1:
            pytest.skip("BLAS threads cannot be limited here (no threadpoolctl)")
        hidden, cache = lm.build_cache([[(i * 7) % 300 for i in range(300)]] * 2,
                                       cache_length=310)
        results.append((np.array(hidden), np.array(cache)))
    (h1, c1), (h2, c2) = results
    np.testing.assert_allclose(h2, h1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(c2, c1, rtol=0, atol=1e-6)


def test_free_buffers_hands_the_kept_memory_back(lm):
    lm.build_cache([[1, 2, 3] * 100], cache_length=310, last_position_only=True)
    held = lm.backend._pool.bytes_held
    assert held > 0
    assert lm.backend.free_buffers() == held
    assert lm.backend._pool.bytes_held == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_worker_threads():
    """A process forked after the workers started has none of them; the backend must start
    new ones rather than wait forever on the parent's."""
    parallel = spreading(2)
    parallel.run(lambda: None, [(), ()])  # the parent's worker thread is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_run_with_inherited, args=(parallel, queue))
    child.start()
    child.join(timeout=60)
    if child.is_alive():  # hung: waiting on a worker thread that was not forked
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 64.0


def _run_with_inherited(parallel, queue):
    out = np.zeros(64)

    def fill(start, end):
        out[start:end] = 1.0

    parallel.run(fill, parallel.split(64, min_per_part=8))
    queue.put(float(out.sum()))


def test_two_threads_sharing_a_backend_get_their_own_results(lm):
    """Concurrent prefills on one backend: pooled buffers are never handed to both, and the
    parallel regions take turns."""
    prompts = [[[(i * k) % 300 for i in range(200)]] for k in (3, 5)]
    expected = [np.array(lm.build_cache(p, cache_length=205)[0]) for p in prompts]
    results: dict[int, list] = {0: [], 1: []}

    def work(which):
        for _ in range(5):
            hidden, cache = lm.build_cache(prompts[which], cache_length=205)
            results[which].append(np.array(hidden))
            lm.backend.release(cache)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for which in (0, 1):
        assert len(results[which]) == 5
        for got in results[which]:
            np.testing.assert_allclose(got, expected[which], rtol=0, atol=1e-5)


# ---- storage order of the weights (CPUBackend.upload) ------------------------------------
@pytest.mark.parametrize("layout,shape,column_major", [
    ("linear", (96, 32), True),  # narrows, like GPT-2's MLP c_proj [4H, H]
    ("linear", (32, 96), False),  # widens (c_attn, c_fc): as it comes
    ("linear", (32, 32), False),
    ("embedding", (300, 64), True),  # the tied token table [V, H]
    ("plain", (300, 64), False),  # the position table: sliced by rows
])
def test_tall_matrices_are_stored_column_major_with_the_same_values(layout, shape, column_major):
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    stored = CPUBackend().upload(host(values), layout)
    assert stored.shape == shape
    assert stored.flags.f_contiguous == column_major
    assert stored.flags.c_contiguous != column_major
    np.testing.assert_array_equal(stored, values)


def test_pyodide_keeps_every_weight_where_it_lies():
    b = CPUBackend()
    b._column_major_tall = False  # as under emscripten
    stored = b.upload(host(np.ones((96, 32), np.float32)), "linear")
    assert stored.flags.c_contiguous and not stored.flags.writeable  # the host's own bytes


@pytest.mark.parametrize("order", ["C", "F"])
def test_embedding_reads_a_table_in_either_order(order):
    b = CPUBackend()
    rng = np.random.default_rng(1)
    table = np.asarray(rng.standard_normal((300, 64)), np.float32, order=order)
    positions = rng.standard_normal((16, 64)).astype(np.float32)
    ids = np.array([[5, 0, 299, 5], [1, 2, 3, 4]], np.int32)
    out = b.embedding(ids, table, positions, 3)
    np.testing.assert_array_equal(out, table[ids] + positions[3:7])
    with pytest.raises(ValueError, match="token id 300 is outside the vocabulary"):
        b.embedding(np.array([[300]], np.int32), table, positions, 0)


def resident_file_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_a_copied_tensor_gives_its_mapped_checkpoint_pages_back(tmp_path):
    """A tall matrix read from a memory-mapped checkpoint is copied column-major; the
    checkpoint's pages it was read from leave the process's resident memory, so the weights
    are held once."""
    from webgpt2.io.safetensors import read_safetensors, write_safetensors

    values = np.arange(4096 * 1024, dtype=np.float32).reshape(4096, 1024)  # 16 MiB
    path = tmp_path / "tall.safetensors"
    write_safetensors(str(path), {"w": host(values), "b": host(np.ones((4,), np.float32))})
    tensors = read_safetensors(str(path))
    mapped = np.frombuffer(tensors["w"].data, np.float32)
    before = resident_file_kib()
    assert float(mapped.sum()) == float(values.sum(dtype=np.float64))  # touch every page
    touched = resident_file_kib()
    if touched - before < 12 * 1024:
        pytest.skip("the file's pages were not mapped in on reading (no mmap here)")
    stored = CPUBackend().upload(tensors["w"], "linear")
    assert touched - resident_file_kib() > 12 * 1024
    np.testing.assert_array_equal(stored, values)
    np.testing.assert_array_equal(mapped.reshape(values.shape), values)  # still readable
    np.testing.assert_array_equal(CPUBackend().upload(tensors["b"], "plain"), np.ones(4))
