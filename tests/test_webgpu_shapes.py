"""The webgpu backend's kernel shapes: the small- and the large-device configurations pinned
(device_profile.py), their measured choice cached per adapter (tuning.py), and float16
arithmetic pinned off and on (linear_half.wgsl), each against the cpu backend. Split from
test_webgpu.py (back under 500 lines), whose helpers it shares.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from host_util import host
from test_webgpu import F16_LOGITS_TOLERANCE, MATMUL, PROMPT, _greedy, _load, values

import webgpt2

pytestmark = pytest.mark.webgpu


@pytest.fixture(scope="module")
def backend():
    """The registry's webgpu backend (test_webgpu.py says why it is missing, if it is)."""
    status = webgpt2.backend_status().get("webgpu", "not registered")
    if status != "available":
        pytest.skip(f"webgpu backend unavailable: {status}")
    return webgpt2.get_backend("webgpu")


@pytest.fixture(scope="module")
def tiny_models(backend, tiny_checkpoint):
    return _load(tiny_checkpoint, "cpu"), _load(tiny_checkpoint, backend)


# ---- kernel shapes pinned for a small and a large device ------------------------------------
@pytest.mark.parametrize("profile", ["small", "small-no-broadcast", "large"])
def test_pinned_device_profiles_give_the_cpu_backend_results(backend, profile, tiny_checkpoint,
                                                             tiny_models):
    from webgpt2.backends.webgpu import WebGPUBackend

    cpu, _ = tiny_models
    b = WebGPUBackend(driver=backend.driver, device_profile=profile.split("-")[0])
    b.lane_broadcast &= profile == "small"  # the other two take linear_rows.wgsl / tiles
    b.poison = True
    assert b.device_profile.name == profile.split("-")[0]
    r = np.random.default_rng(9)
    for rows, k, n in ((1, 768, 768), (3, 3072, 96), (2, 64, 3000), (1, 30, 70), (9, 96, 70),
                       (17, 768, 200)):
        x = r.standard_normal((rows, k)).astype(np.float32)
        w = r.standard_normal((k, n)).astype(np.float32)
        bias = r.standard_normal(n).astype(np.float32)
        residual = r.standard_normal((rows, n)).astype(np.float32)
        got = b.linear(b.tensor(x.tolist(), "float32"), b.upload(host(w), "linear"),
                       b.upload(host(bias)), "gelu", b.tensor(residual.tolist(), "float32"))
        expected = cpu.backend.to_list(cpu.backend.linear(
            cpu.backend.tensor(x.tolist(), "float32"), cpu.backend.upload(host(w), "linear"),
            cpu.backend.upload(host(bias)), "gelu",
            cpu.backend.tensor(residual.tolist(), "float32")))
        np.testing.assert_allclose(values(b, got), expected, **MATMUL)
    gpu = _load(tiny_checkpoint, b)
    assert _greedy(gpu, PROMPT, 12) == _greedy(cpu, PROMPT, 12)
    np.testing.assert_allclose(np.array(b.to_list(gpu(PROMPT))),
                               np.array(cpu.backend.to_list(cpu(PROMPT))), rtol=1e-4, atol=1e-4)


def test_the_large_profile_splits_k_so_a_768_wide_layer_starts_enough_workgroups(monkeypatch):
    from webgpt2.backends.webgpu.device_profile import LARGE, SMALL, choose_profile
    from webgpt2.backends.webgpu.driver import AdapterInfo

    monkeypatch.delenv("WEBGPT2_WEBGPU_PROFILE", raising=False)

    assert LARGE.matvec_splits(24, 192) * 24 >= 96  # c_proj of GPT-2 124M, 24 blocks of 32
    assert LARGE.matvec_splits(1571, 192) == 1  # the LM head already fills the device
    assert SMALL.matvec_splits(24, 192) == 1
    assert choose_profile(AdapterInfo("llvmpipe (LLVM 15)", "Vulkan", "native")) is SMALL
    assert choose_profile(AdapterInfo("Google SwiftShader", "browser", "browser")) is SMALL
    assert choose_profile(AdapterInfo("NVIDIA H100", "Vulkan", "native",
                                      adapter_type="DiscreteGPU")) is LARGE
    with pytest.raises(ValueError, match="device_profile 'huge'"):
        choose_profile(AdapterInfo("x", "y", "native"), "huge")
    monkeypatch.setenv("WEBGPT2_WEBGPU_PROFILE", "large")  # pins the registry's backend too
    assert choose_profile(AdapterInfo("llvmpipe (LLVM 15)", "Vulkan", "native")) is LARGE
    monkeypatch.delenv("WEBGPT2_WEBGPU_PROFILE")
    # Neither a CPU nor a GPU by its type (a browser's adapter): measured (None).
    assert choose_profile(AdapterInfo("Apple M2", "browser WebGPU", "browser")) is None
    assert choose_profile(AdapterInfo("x", "y", "native", adapter_type="CPU"), "measure") is None


def test_a_measured_profile_is_the_faster_one_and_cached_per_adapter(backend, tmp_path,
                                                                     monkeypatch):
    import json

    from webgpt2.backends.webgpu import WebGPUBackend, tuning

    monkeypatch.setenv("WEBGPT2_CACHE", str(tmp_path))
    b = WebGPUBackend(driver=backend.driver, device_profile="measure")
    key = backend.driver.info.identity
    assert backend.driver.info.name in key  # vendor | architecture | device | driver | api
    entry = json.loads((tmp_path / tuning.CACHE_NAME).read_text())[key]
    assert set(entry["ms"]) == {"small", "large"}
    assert entry["profile"] == min(entry["ms"], key=entry["ms"].get) == b.device_profile.name
    if "shader-f16" in backend.driver.info.features:  # float16 arithmetic measured as well
        assert entry["f16_arithmetic"] == (entry["f16_ms"]["true"] < entry["f16_ms"]["false"])
    monkeypatch.setattr(tuning, "measure", lambda _: pytest.fail("measured a cached adapter"))
    again = WebGPUBackend(driver=backend.driver, device_profile="measure")
    assert again.device_profile.name == entry["profile"]


@pytest.mark.parametrize("f16_arithmetic", [False, True])
def test_float16_arithmetic_pinned_off_and_on(backend, tiny_checkpoint, tiny_models,
                                              f16_arithmetic):
    """linear_half.wgsl (f16 products, f32 sums) where shader-f16 is, and the f32 path that
    SwiftShader takes, both against the cpu backend."""
    from webgpt2.backends.webgpu import WebGPUBackend

    if f16_arithmetic and "shader-f16" not in backend.driver.info.features:
        pytest.skip("this adapter has no shader-f16")
    b = WebGPUBackend(driver=backend.driver, dtype="float16", f16_arithmetic=f16_arithmetic)
    b.poison = True
    assert b.f16_arithmetic is f16_arithmetic
    r = np.random.default_rng(8)
    for rows, k in ((1, 64), (3, 128)):
        x = r.standard_normal((rows, k)).astype(np.float32)
        w = (r.standard_normal((k, 131)) / math.sqrt(k)).astype(np.float32)
        out = b.linear(b.upload(host(x)), b.upload(host(w), "linear"), None)
        exact = x @ w.astype(np.float16).astype(np.float64)
        # f16 products: x and each product rounded to 11 bits
        tolerance = 4e-3 * np.abs(x).max() * np.abs(w).max() * math.sqrt(k) * f16_arithmetic
        np.testing.assert_allclose(values(b, out), exact, rtol=1e-4, atol=1e-4 + tolerance)
    assert (("linear_half.wgsl", "matvec_half") in b.recorder._kernels) is f16_arithmetic
    cpu, _ = tiny_models
    gpu = _load(tiny_checkpoint, b, "float16")
    _, cache = gpu.build_cache(PROMPT, cache_length=10)
    step, _, _ = gpu.call_with_cache([[5]], cache, 8)
    _, cpu_cache = cpu.build_cache(PROMPT, cache_length=10)
    expected = np.array(cpu.backend.to_list(cpu.call_with_cache([[5]], cpu_cache, 8)[0]))
    got = np.array(b.to_list(step))
    assert np.abs(got - expected).max() <= F16_LOGITS_TOLERANCE * np.abs(expected).max()


# ---- prompt attention in blocks (attention_blocks.wgsl, the large profile) -------------------
def _attention_reference(qkv: np.ndarray, cache: np.ndarray, start: int, heads: int,
                         kv_dtype: str) -> np.ndarray:
    """Writes qkv's keys and values into cache [B, 2, T, nh, hd] at start.. (rounded as a
    float16 cache stores them) and returns the causal attention of its queries, in float64."""
    batch, seq_len, three_hidden = qkv.shape
    hidden = three_hidden // 3
    hd = hidden // heads
    q, k, v = (qkv[..., i * hidden:(i + 1) * hidden].reshape(batch, seq_len, heads, hd)
               for i in range(3))
    stored = np.float16 if kv_dtype == "float16" else np.float32
    cache[:, 0, start:start + seq_len] = k.astype(stored)
    cache[:, 1, start:start + seq_len] = v.astype(stored)
    out = np.zeros((batch, seq_len, heads, hd))
    for s in range(seq_len):
        keys, vals = (cache[:, i, :start + s + 1].astype(np.float64) for i in (0, 1))
        scores = np.einsum("bthd,bhd->bht", keys, q[:, s]) / math.sqrt(hd)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        out[:, s] = np.einsum("bht,bthd->bhd", weights / weights.sum(-1, keepdims=True), vals)
    return out.reshape(batch, seq_len, hidden)


@pytest.mark.parametrize("kv_dtype", ["float32", "float16"])
def test_large_profile_prompt_attention_in_blocks(backend, kv_dtype):
    """Prompts shorter than, equal to and across attend_blocks' blocks of 16 queries and
    tiles of 32 keys, at cache offsets 0 and 5, every query and the last alone, against
    NumPy; the cache holds what the reference wrote, and NaN-poisoned outputs show any
    value the kernel left unwritten."""
    from webgpt2.backends.webgpu import WebGPUBackend, attention

    b = WebGPUBackend(driver=backend.driver, device_profile="large", kv_dtype=kv_dtype)
    b.poison = True
    family = "attention_blocks_f16.wgsl" if kv_dtype == "float16" else "attention_blocks.wgsl"
    r = np.random.default_rng(16)
    batch, max_length = 2, 80
    for heads, hd in ((2, 64), (3, 6)):
        hidden = heads * hd
        for start in (0, 5):
            past = r.standard_normal((batch, start, 3 * hidden)).astype(np.float32)
            for seq_len in (1, 15, 17, 64, 70):
                assert attention.uses_blocks(b, seq_len, hd, kv_dtype == "float16") \
                    is (seq_len > 1)
                qkv = r.standard_normal((batch, seq_len, 3 * hidden)).astype(np.float32)
                for last_only in (False, True):
                    cache = b.zeros((batch, 1, 2, max_length, heads, hd))
                    expected_cache = np.zeros((batch, 2, max_length, heads, hd), np.float32)
                    if start:
                        b.cached_attention(b.tensor(past.tolist(), "float32"), cache, 0, 0,
                                           heads)
                        _attention_reference(past, expected_cache, 0, heads, kv_dtype)
                    expected = _attention_reference(qkv, expected_cache, start, heads,
                                                     kv_dtype)
                    out = b.cached_attention(b.tensor(qkv.tolist(), "float32"), cache, 0,
                                             start, heads, last_position_only=last_only)
                    if last_only:
                        expected = expected[:, -1:]
                    assert b.shape(out) == expected.shape
                    np.testing.assert_allclose(values(b, out), expected, rtol=1e-4, atol=2e-5)
                    np.testing.assert_array_equal(values(b, cache)[:, 0], expected_cache)
    assert (family, "attend_blocks") in b.recorder._kernels
    small = WebGPUBackend(driver=backend.driver, device_profile="small", kv_dtype=kv_dtype)
    assert not attention.uses_blocks(small, 17, 64, kv_dtype == "float16")
