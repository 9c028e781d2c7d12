"""What is particular to the wasm backend: the committed module against its sources, the
linear-memory allocator and its out-of-memory error, the driver, float16 storage, running
without numpy, and the whole model against transformers and the cpu backend.

The operations themselves are checked by the conformance suite (test_backend_ops.py), which
runs on every available backend, wasm included.
"""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from host_util import host

import webgpt2
from webgpt2.backends import HostTensor

ROOT = Path(__file__).resolve().parent.parent
PROMPT = [[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 40, 716]]
# float16 weights (10-bit mantissas) move tiny-model logits by up to this fraction of their
# largest magnitude; measured about 1e-3 on the checkpoints here.
F16_LOGITS_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def backend():
    status = webgpt2.backend_status().get("wasm", "not registered")
    if status != "available":
        if "wasmtime" in status:
            pytest.skip(f"wasm backend unavailable: {status}")
        pytest.fail(f"wasm backend failed to start: {status}")
    return webgpt2.get_backend("wasm")


@pytest.fixture
def fresh():
    """A backend of its own (its own memory), so allocation counts are this test's."""
    from webgpt2.backends.wasm import WasmBackend

    pytest.importorskip("wasmtime")
    return WasmBackend()


# ---- the module ---------------------------------------------------------------------------
def test_committed_module_is_built_from_the_sources(tmp_path):
    if shutil.which("clang-19") is None or shutil.which("wasm-ld-19") is None:
        pytest.skip("clang-19 / wasm-ld-19 not installed (apt-get install -y clang-19 lld-19)")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_wasm
    finally:
        sys.path.pop(0)
    assert len(build_wasm.MODULES) == 4  # one and many threads, without and with relaxed SIMD
    for output, threads, relaxed in build_wasm.MODULES:
        fresh = build_wasm.build(tmp_path / output.name, threads=threads, relaxed=relaxed)
        assert fresh == output.read_bytes(), (
            f"webgpt2/backends/wasm/{output.name} differs from a build of wasm/*.c: run "
            "python tools/build_wasm.py and commit the result")


def test_module_is_small_and_every_source_says_what_it_computes():
    from webgpt2.backends.wasm.tensor import module_path

    for threads in (False, True):
        for relaxed in (False, True):
            assert module_path(threads, relaxed).stat().st_size < 100_000
    for source in sorted((ROOT / "wasm").glob("*.c")):
        assert source.read_text().startswith("/* "), f"{source.name} starts without a comment"


def test_wheel_config_ships_the_module():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'packages = ["webgpt2"]' in text  # hatch ships every file under webgpt2/
    assert "*.wasm" not in (ROOT / ".gitignore").read_text()


def test_registry_lists_wasm(backend):
    assert "wasm" in webgpt2.available_backends()
    info = backend.describe()
    assert info["name"] == "wasm" and info["driver"] == "native"


def test_backend_runs_without_numpy():
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from webgpt2.backends.wasm import WasmBackend\n"
        "from webgpt2.backends.host import HostTensor\n"
        "b = WasmBackend()\n"
        "w = b.upload(HostTensor.from_floats([1.0, 2.0, 3.0, 4.0], (2, 2)), 'linear')\n"
        "print(b.to_list(b.linear(b.tensor([[1.0, 1.0]], 'float32'), w)))\n"
    )
    pytest.importorskip("wasmtime")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[4.0, 6.0]]"


# ---- the driver ---------------------------------------------------------------------------
def test_driver_reads_writes_and_grows(fresh):
    from webgpt2.backends.wasm.driver import PAGE_SIZE

    d = fresh.driver
    size = d.memory_size()
    d.grow(2)
    assert d.memory_size() == size + 2 * PAGE_SIZE
    d.write(size, memoryview(b"\x01\x02\x03\x04"))
    assert d.read(size, 4) == b"\x01\x02\x03\x04"
    d.call("fill_u32", size + 8, 0xDEADBEEF, 3)
    assert d.read(size + 8, 12) == b"\xef\xbe\xad\xde" * 3


def test_driver_errors_name_the_problem(fresh):
    from webgpt2.backends.wasm import DriverError

    d = fresh.driver
    with pytest.raises(DriverError, match="outside the .*-byte linear memory"):
        d.read(d.memory_size() - 2, 4)
    with pytest.raises(DriverError, match="no export 'nope'"):
        d.call("nope")
    with pytest.raises(DriverError, match="'memcpy' trapped"):
        d.call("memcpy", 0, d.memory_size() - 8, 64)  # reads past the end
    assert d.call("heap_base") > 0  # still usable after a trap


# ---- the command list ---------------------------------------------------------------------
def test_every_opcode_matches_its_exports_signature():
    """commands.py's table is run.c's switch: each recorded kernel is an export whose
    parameters are the kinds the table encodes (f32 as bit patterns, the rest i32)."""
    wasmtime = pytest.importorskip("wasmtime")
    from webgpt2.backends.wasm import load_module
    from webgpt2.backends.wasm.commands import OPCODES

    module = wasmtime.Module(wasmtime.Engine(), load_module())
    exports = {e.name: e.type for e in module.exports}
    assert [str(p) for p in exports["run"].params] == ["i32", "i32"]
    assert sorted(op for op, _ in OPCODES.values()) == list(range(len(OPCODES)))
    for name, (_, kinds) in OPCODES.items():
        params = ["f32" if k == "f" else "i32" for k in kinds]
        assert [str(p) for p in exports[name].params] == params, name


def test_a_decode_step_is_one_run_and_a_trap_names_its_kernel(fresh, tiny_checkpoint):
    from webgpt2.backends.wasm import DriverError
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    lm = GPT2CausalLM.from_pretrained(tiny_checkpoint, backend=fresh, progress=False)
    last, cache = lm.build_cache(PROMPT, cache_length=20, last_position_only=True)
    token = fresh.argmax(lm.project(last))[0]
    before = fresh.commands.flushes
    for i in range(13, 17):
        logits, _, cache = lm.call_with_cache([[token]], cache, i)
        token = fresh.argmax(logits)[0]
    assert fresh.commands.flushes - before <= 4 * 2  # the step, then argmax and its read
    x = fresh.tensor([[1.0, 2.0]], "float32")
    fresh.commands.call("fill_u32", x.offset, 0x40400000, 1)
    fresh.commands.call("memcpy", 0, fresh.driver.memory_size() - 8, 64)  # past the end
    with pytest.raises(DriverError, match=r"kernel 'memcpy' \(command 2 of 2"):
        fresh.commands.flush()
    assert fresh.to_list(x) == [[3.0, 2.0]]  # the first command ran; the list goes on
    assert len(fresh.commands) == 0


# ---- the allocator ------------------------------------------------------------------------
def test_allocator_reuses_blocks_and_lowers_the_top(fresh):
    m = fresh.memory
    a = m.allocate(1000)
    b = m.allocate(1000)
    assert b - a == 1024 and a % 64 == 0
    m.free(a, 1000)
    assert m.allocate(1024) == a  # the freed block of the same rounded size
    top = m.top
    m.free(b, 1000)
    m.free(a, 1000)
    m.allocate(64)  # drains the queue: both blocks were at the top
    assert m.top < top and m.bytes_free == 0


def test_released_and_collected_tensors_give_their_memory_back(fresh):
    x = fresh.zeros((100, 100))
    offset = x.offset
    fresh.release(x)
    fresh.release(x)  # a second release is harmless
    y = fresh.zeros((100, 100))
    assert y.offset == offset
    del y
    gc.collect()
    assert fresh.zeros((100, 100)).offset == offset


def test_fragmented_memory_is_merged_before_giving_up():
    from webgpt2.backends.wasm import WasmBackend

    b = WasmBackend(max_memory=8 << 20)
    small = [b.zeros((64 * 1024,)) for _ in range(24)]  # 24 x 256 KiB
    keep = b.zeros((64 * 1024,))
    for t in small:
        b.release(t)
    # 6 MiB free in 256 KiB pieces below `keep`: merged, they hold a 5 MiB tensor.
    big = b.zeros((5 << 18,))
    assert big.offset < keep.offset


def test_out_of_memory_is_a_clear_error_and_the_backend_goes_on():
    from webgpt2.backends.wasm import WasmBackend, WasmOutOfMemoryError

    b = WasmBackend(max_memory=16 << 20)
    with pytest.raises(WasmOutOfMemoryError, match=r"cannot allocate 33554432 bytes.*"
                                                   r"16777216-byte limit") as error:
        b.zeros((8 << 20,))
    assert isinstance(error.value, MemoryError)
    assert isinstance(error.value, webgpt2.BackendError)
    assert b.to_list(b.tensor([[1.0, 2.0]], "float32")) == [[1.0, 2.0]]


def test_four_gib_is_the_default_limit(fresh):
    from webgpt2.backends.wasm import WasmOutOfMemoryError

    assert fresh.memory.limit == 1 << 32
    with pytest.raises(WasmOutOfMemoryError, match="cannot allocate 4294967296 bytes"):
        fresh.zeros((1 << 30,))  # 4 GiB: more than is left above the module's own data


# ---- float16 storage ----------------------------------------------------------------------
def _kernel_on(backend, name, data: bytes, out_bytes: int, *args) -> bytes:
    """Run a conversion kernel (src, dst, *args) over `data`; the dst bytes."""
    src, dst = backend._temporary(len(data)), backend._temporary(out_bytes)
    try:
        backend._write(src, data)
        backend._call(name, src, dst, *args)
        return backend._read(dst, out_bytes)
    finally:
        backend._done(src, len(data))
        backend._done(dst, out_bytes)


def test_float16_narrowing_rounds_like_numpy(fresh):
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.0, -65519.0, 6e-8, 2.9e-8, 3e-8,
                        5.96e-8, 1e-7, 6.1e-5, 6.09e-5, 1.0009765625, 1.00048828125,
                        1.00146484375, 2049.0, 2051.0, np.inf, -np.inf], np.float32)
    r = np.random.default_rng(0)
    scaled = r.standard_normal(5000).astype(np.float32) * np.float32(10.0) ** r.integers(
        -9, 6, 5000).astype(np.float32)
    values = np.concatenate([special, scaled])
    got = _kernel_on(fresh, "narrow_f16", values.tobytes(), values.size * 2, values.size)
    with np.errstate(over="ignore"):  # numpy warns as it rounds past 65504 to inf
        expected = values.astype(np.float16)
    np.testing.assert_array_equal(np.frombuffer(got, "<u2"), expected.view("<u2"))
    nan = _kernel_on(fresh, "narrow_f16", np.float32([np.nan]).tobytes(), 2, 1)
    assert np.isnan(np.frombuffer(nan, "<f2")[0])
    halves = np.concatenate([expected, np.float16([np.nan])])
    widened = _kernel_on(fresh, "widen_binary16", halves.tobytes(), halves.size * 4, halves.size)
    np.testing.assert_array_equal(np.frombuffer(widened, "<f4"), halves.astype(np.float32))


def _packable_values(r, n):
    """Halves that a packed float16 weight holds: zeros of both signs, subnormals, the largest
    magnitude below 64, and random ones over the whole exponent range."""
    tiny = np.float32([0.0, -0.0, 6e-8, -2.9e-8, 5.96e-8, 1e-7, -6.1e-5, 6.09e-5, 63.96875,
                       -63.96875, 1.0009765625])
    scaled = r.standard_normal(n).astype(np.float32) * np.float32(2.0) ** r.integers(
        -26, 5, n).astype(np.float32)
    values = np.concatenate([tiny, scaled])[:n]
    return np.clip(values, -63.96875, 63.96875).astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 5013), (3, 77), (16, 24), (2, 5)])
def test_packed_float16_weights_read_back_exactly(fresh, shape):
    """Float16 weights are stored scaled and in permuted groups of 8 (wasm/common.h): every
    reader gets the exact halves back, rows that do not start a group and signed zeros too."""
    r = np.random.default_rng(shape[1])
    a = _packable_values(r, shape[0] * shape[1]).reshape(shape)
    for layout in ("embedding", "linear"):
        t = fresh.upload(host(a), layout, "float16")
        assert t.dtype == "float16"
        got = np.asarray(fresh.to_list(t), np.float32)
        np.testing.assert_array_equal(got, a)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(a))
    table = fresh.upload(host(a), "embedding", "float16")
    positions = fresh.upload(host(np.zeros((1, shape[1]), np.float32)))
    ids = [[i] for i in range(shape[0])]
    rows = fresh.to_list(fresh.embedding(fresh.tensor(ids, "int32"), table, positions, 0))
    np.testing.assert_array_equal(np.asarray(rows, np.float32)[:, 0], a + np.float32(0.0))


def _sequential_sums(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [M, K] @ w [K, N] in float32 with each output summed over k in order, the two ways
    a multiply-add may round: (product rounded then added, fused: one rounding)."""
    unfused = np.zeros((x.shape[0], w.shape[1]), np.float32)
    fused = unfused.copy()
    for i in range(x.shape[1]):
        xi, wi = x[:, i:i + 1].astype(np.float32), w[i:i + 1, :].astype(np.float32)
        unfused = unfused + xi * wi
        # a float32 product is exact in float64; the sum's double rounding differs from
        # one rounding only at an exact float32 midpoint (about 2^-29 of sums)
        fused = (fused.astype(np.float64) + xi.astype(np.float64) * wi).astype(np.float32)
    return unfused, fused


@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("k", [8, 24, 64, 77, 3072])
def test_float16_products_equal_float32_on_the_widened_weights(fresh, rows, k):
    """The float16 kernels multiply x 2^102 by the weights' raw widening (matmul.c). With 4
    rows or more (tiled: a linear weight's rows widened out of its panels) that is bit for
    bit the float32 product over the widened weights; fewer rows of a linear weight (a
    decode step, panel_sums) sum each output over k in order, bit for bit as arithmetic
    done here does; also for x too large to scale (the widening path) and for tiny x. The
    token table (rows, not panels) is float32's bit for bit at any row count."""
    r = np.random.default_rng(rows * k)
    n = 37
    w = (_packable_values(r, n * k) / 8).astype(np.float16).astype(np.float32).reshape(k, n)
    w16, w32 = fresh.upload(host(w), "linear", "float16"), fresh.upload(host(w), "linear")
    table16, table32 = (fresh.upload(host(w.T.copy()), "embedding", d)
                        for d in ("float16", "float32"))
    x = r.standard_normal((rows, k)).astype(np.float32)
    x[0, :3] = [1e-30, -3e-42, 0.0]  # products below the normal range, and a subnormal x
    for case in ("plain", "large"):
        if case == "large":
            x[-1, k // 2] = 2.0 ** 27  # x 2^102 would overflow: that row widens the weights
        xt = fresh.upload(host(x))
        got = np.asarray(fresh.to_list(fresh.linear(xt, w16)), np.float32)
        if rows >= 4:
            np.testing.assert_array_equal(got, np.asarray(fresh.to_list(fresh.linear(xt, w32))))
        else:
            unfused, fused = _sequential_sums(x, w)
            assert (got == unfused).all() or (got == fused).all(), (got, unfused, fused)
        x3 = fresh.upload(host(x[None]))
        np.testing.assert_array_equal(
            np.asarray(fresh.to_list(fresh.reverse_embedding(x3, table16))),
            np.asarray(fresh.to_list(fresh.reverse_embedding(x3, table32))))


@pytest.mark.parametrize("rows", [1, 3, 6])
@pytest.mark.parametrize("k", [64, 77])
def test_float16_linear_and_embedding_weights(fresh, rows, k):
    r = np.random.default_rng(rows * k)
    n = 131
    x = r.standard_normal((rows, k)).astype(np.float32)
    w = (r.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    bias = r.standard_normal(n).astype(np.float32)
    w16 = w.astype(np.float16).astype(np.float64)
    weight = fresh.upload(host(w), "linear", "float16")
    np.testing.assert_array_equal(fresh.to_list(weight), w16)
    out = fresh.linear(fresh.upload(host(x)), weight, fresh.upload(host(bias)))
    np.testing.assert_allclose(fresh.to_list(out), x @ w16 + bias, rtol=1e-4, atol=1e-4)
    table = fresh.upload(host(w.T.copy()), "embedding", "float16")
    logits = fresh.reverse_embedding(fresh.upload(host(x[None])), table)
    np.testing.assert_allclose(fresh.to_list(logits)[0], x @ w16, rtol=1e-4, atol=1e-4)
    positions = fresh.upload(host(np.zeros((4, k), np.float32)))
    hidden = fresh.embedding(fresh.tensor([[0, n - 1]], "int32"), table, positions, 1)
    np.testing.assert_array_equal(fresh.to_list(hidden)[0], w16.T[[0, n - 1]])


def test_half_precision_host_data_is_widened_into_float32_storage(fresh):
    a = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32)
    half = a.astype(np.float16)
    t = fresh.upload(HostTensor("float16", a.shape, half.tobytes()), "linear", "float32")
    np.testing.assert_array_equal(fresh.to_list(t), half.astype(np.float32))
    bits = (a.view(np.uint32) >> 16).astype("<u2")
    t = fresh.upload(HostTensor("bfloat16", a.shape, bits.tobytes()), "embedding", "float16")
    expected = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float16)
    np.testing.assert_array_equal(fresh.to_list(t), expected.astype(np.float32))


# ---- operations at the model's sizes --------------------------------------------------------
def test_generation_ops_equal_cpu_on_vocabulary_sized_rows(backend):
    cpu = webgpt2.get_backend("cpu")
    r = np.random.default_rng(4)
    logits = (r.standard_normal((3, 50257)) * 3).astype(np.float32)
    logits[1, [5, 700, 50000]] = 12.0  # ties for first place
    logits[2, 100:50257] = -np.inf
    ids = [[1, 1, 5, 50256], [], [0, 7, 99999]]
    ours, theirs = backend.tensor(logits.tolist(), "float32"), cpu.tensor(logits, "float32")
    for k in (1, 3, 50, 50257):
        assert backend.top_k(ours, k) == cpu.top_k(theirs, k)
    assert backend.argmax(ours) == cpu.argmax(theirs)
    np.testing.assert_allclose(backend.to_list(backend.log_softmax(ours)),
                               cpu.to_list(cpu.log_softmax(theirs)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        backend.to_list(backend.apply_repetition_penalty(ours, ids, 1.3)),
        cpu.to_list(cpu.apply_repetition_penalty(theirs, ids, 1.3)))
    np.testing.assert_array_equal(backend.to_list(backend.mask_tokens(ours, ids)),
                                  cpu.to_list(cpu.mask_tokens(theirs, ids)))
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (0.7, 40, 1.0), (1.0, 0, 0.9),
                                      (1.0, 50, 0.8), (1.5, 0, 0.3)):
        for uniforms in ([0.0, 0.5, 0.999], [0.31, 0.77, 0.05]):
            assert backend.sample(ours, uniforms, temperature, top_k, top_p) == \
                cpu.sample(theirs, uniforms, temperature, top_k, top_p)


def test_cache_reorder_gather_and_concatenate_keep_the_head_major_layout(backend):
    r = np.random.default_rng(5)
    cache = r.standard_normal((3, 2, 2, 7, 3, 5)).astype(np.float32)
    t = backend.tensor(cache.tolist(), "float32")
    assert t.layout == "cache"
    gathered = backend.gather_batch(t, [2, 0, 0])
    np.testing.assert_array_equal(backend.to_list(gathered), cache[[2, 0, 0]])
    reordered = backend.reorder_cache(gathered, [1, 2, 0], 2, 6)
    expected = cache[[2, 0, 0]].copy()
    expected[:, :, :, 2:6] = cache[[0, 0, 2]][:, :, :, 2:6]
    np.testing.assert_array_equal(backend.to_list(reordered), expected)
    joined = backend.concatenate([t, t], axis=3)
    np.testing.assert_array_equal(backend.to_list(joined), np.concatenate([cache, cache], 3))


# ---- the model ----------------------------------------------------------------------------
def _load(folder, backend, dtype=None):
    from webgpt2 import GPT2CausalLM

    return GPT2CausalLM.from_pretrained(folder, backend=backend, dtype=dtype, progress=False)


@pytest.fixture(scope="module")
def reference():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    models = {}

    def get(folder):
        if folder not in models:
            models[folder] = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
        return models[folder]

    get.torch = torch
    return get


def test_logits_match_transformers(backend, checkpoint, reference):
    torch = reference.torch
    lm = _load(checkpoint, backend)
    ids = PROMPT + [PROMPT[0][::-1]]
    with torch.no_grad():
        expected = reference(checkpoint)(torch.tensor(ids)).logits.numpy()
    logits, _, _ = lm.call_with_cache(ids, lm.backbone.new_cache(2, len(ids[0])), 0)
    np.testing.assert_allclose(backend.to_list(logits), expected, rtol=0, atol=1e-4)


def test_greedy_tokens_match_transformers_for_64_steps(backend, checkpoint, reference):
    torch = reference.torch
    lm = _load(checkpoint, backend)
    n = len(PROMPT[0])
    out = lm.generate_step({"token_ids": [PROMPT[0] + [0] * 64],
                            "padding_mask": [[True] * n + [False] * 64]})
    with torch.no_grad():
        expected = reference(checkpoint).generate(
            torch.tensor(PROMPT), max_new_tokens=64, do_sample=False, pad_token_id=50256,
            eos_token_id=None)
    assert out["token_ids"][0] == expected[0].tolist()


def test_cached_steps_scores_and_seeded_sampling_match_cpu(backend, tiny_checkpoint):
    from webgpt2.generation.samplers import TopKSampler, TopPSampler

    cpu, ours = _load(tiny_checkpoint, "cpu"), _load(tiny_checkpoint, backend)
    prompt = PROMPT + [PROMPT[0][::-1]]
    _, cache = ours.build_cache(prompt, cache_length=16)
    _, cpu_cache = cpu.build_cache(prompt, cache_length=16)
    step, _, cache = ours.call_with_cache([[5], [6]], cache, 13)
    cpu_step, _, cpu_cache = cpu.call_with_cache([[5], [6]], cpu_cache, 13)
    np.testing.assert_allclose(backend.to_list(step), cpu.backend.to_list(cpu_step), atol=1e-4)
    np.testing.assert_allclose(backend.to_list(cache), cpu.backend.to_list(cpu_cache),
                               atol=1e-5)
    np.testing.assert_allclose(ours.score(prompt), cpu.score(prompt), rtol=1e-4, atol=1e-4)
    for sampler in (TopKSampler(k=10, seed=3), TopPSampler(p=0.9, temperature=0.05, seed=4)):
        texts = ["The quick brown fox", "Hello"]
        assert ours.generate(texts, max_new_tokens=16, sampler=sampler, stop_token_ids=None) \
            == cpu.generate(texts, max_new_tokens=16, sampler=sampler, stop_token_ids=None)


def test_float16_model_within_stated_tolerance(tiny_checkpoint):
    from webgpt2.backends.wasm import WasmBackend

    pytest.importorskip("wasmtime")
    cpu = _load(tiny_checkpoint, "cpu")
    half = _load(tiny_checkpoint, WasmBackend(dtype="float16"), "float16")
    expected = np.array(cpu.backend.to_list(cpu(PROMPT)))
    got = np.array(half.backend.to_list(half(PROMPT)))
    assert np.abs(got - expected).max() <= F16_LOGITS_TOLERANCE * np.abs(expected).max()


def test_a_weight_with_infinities_or_large_values_stays_float32(fresh):
    a = np.array([[1.0, np.inf], [-np.inf, 2.0], [1e6, 3.0]], np.float32)  # 1e6: inf in f16
    t = fresh.upload(host(a), "linear", "float16")
    assert t.dtype == "float32"
    np.testing.assert_array_equal(fresh.to_list(t), a)
    assert fresh.upload(host(a[:1, :1]), "linear", "float16").dtype == "float16"
    # Packed halves are scaled by 2^10: |w| >= 64 would overflow, so that weight stays float32.
    big = np.array([[1.0, -64.0]], np.float32)
    assert fresh.upload(host(big), "embedding", "float16").dtype == "float32"
    assert fresh.upload(host(big / 2), "embedding", "float16").dtype == "float16"


def test_beam_and_contrastive_search_with_processors_equal_cpu(backend, tiny_checkpoint):
    """The generation operations run as kernels here (top-k, log-softmax, penalties, masks,
    gather and reorder of the cache, cosine similarity): the cpu backend's tokens."""
    from webgpt2.generation import BeamSampler, ContrastiveSampler

    cpu, ours = _load(tiny_checkpoint, "cpu"), _load(tiny_checkpoint, backend)
    for options in ({"sampler": BeamSampler(3), "repetition_penalty": 1.3,
                     "no_repeat_ngram_size": 2},
                    {"sampler": ContrastiveSampler(3, 0.5), "bad_words_ids": [[8770]],
                     "repetition_penalty": 0.8}):
        prompts = ["Hello there", "The quick brown fox"]
        assert (ours.generate(prompts, max_new_tokens=12, **options)
                == cpu.generate(prompts, max_new_tokens=12, **options))
