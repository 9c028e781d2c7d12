"""What is particular to the webgpu backend: buffers larger than one storage binding, the
one-submission decode step and its counters, float16 weight storage, shader errors,
`describe()`, and the whole model against the cpu backend on transformers-written
checkpoints. The operations themselves are checked in test_backend_ops.py.

These tests skip only when wgpu is not installed or no WebGPU adapter exists; on a Linux
machine without a GPU, `mesa-vulkan-drivers` provides one (lavapipe).
"""

from __future__ import annotations

import math
import re
import struct

import numpy as np
import pytest
from host_util import host

import webgpt2
from webgpt2.backends import HostTensor

pytestmark = pytest.mark.webgpu

MATMUL = dict(rtol=1e-4, atol=1e-4)
# float16 weight storage: the weights are rounded to 11 significant bits; with float32
# arithmetic, a model's logits stay within this fraction of their largest magnitude.
F16_LOGITS_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def backend():
    """The registry's webgpu backend; skips only when wgpu or an adapter is missing."""
    status = webgpt2.backend_status().get("webgpu", "not registered")
    if status != "available":
        missing = ("wgpu package is not installed", "no WebGPU adapter was found")
        if any(m in status for m in missing):
            pytest.skip(f"webgpu backend unavailable: {status}")
        pytest.fail(f"webgpu backend failed to start: {status}")
    return webgpt2.get_backend("webgpu")


@pytest.fixture(scope="module")
def small_bindings(backend):
    """A webgpu backend that binds at most 64 KiB per storage binding, so that modest
    tensors take the paths real GPT-2 sizes take (a 154 MB token table on a 128 MiB limit)."""
    from webgpt2.backends.webgpu import WebGPUBackend

    b = WebGPUBackend(driver=backend.driver, max_binding_size=64 << 10)
    b.poison = True
    return b


def values(b, x) -> np.ndarray:
    return np.array(b.to_list(x), dtype=np.float32)


# ---- the device and the driver ------------------------------------------------------------
def test_registry_lists_webgpu(backend):
    assert "webgpu" in webgpt2.available_backends()
    assert backend.name == "webgpu"


def test_describe(backend):
    info = backend.describe()
    assert info["name"] == "webgpu"
    assert info["driver"] == "native"
    assert info["adapter"] and info["backend_type"]
    assert info["limits"]["max_storage_buffer_binding_size"] >= 128 << 20
    assert info["limits"]["max_buffer_size"] >= info["limits"][
        "max_storage_buffer_binding_size"]
    assert "min_storage_buffer_offset_alignment" in info["limits"]
    assert isinstance(info["features"], list)


def test_no_adapter_is_a_clear_error(monkeypatch):
    wgpu = pytest.importorskip("wgpu")
    from webgpt2.backends.webgpu import DriverError
    from webgpt2.backends.webgpu.native import NativeDriver

    monkeypatch.setattr(wgpu.gpu, "request_adapter_sync", lambda **kwargs: None)
    with pytest.raises(DriverError, match="no WebGPU adapter was found"):
        NativeDriver()


def test_shader_compile_error_names_file_entry_point_and_message(backend):
    from webgpt2.backends.webgpu import ShaderError

    broken = "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_thing; }"
    with pytest.raises(ShaderError) as caught:
        backend.driver.create_pipeline(broken, "main", label="broken.wgsl")
    message = str(caught.value)
    assert "broken.wgsl" in message and "'main'" in message
    assert "undefined_thing" in message


def test_missing_shader_file_is_named(backend):
    from webgpt2.backends.webgpu import DriverError, load_shader

    with pytest.raises(DriverError, match="no_such_kernel.wgsl"):
        load_shader("no_such_kernel.wgsl")


def test_every_shader_compiles(backend):
    from webgpt2.backends.webgpu import load_shader
    from webgpt2.backends.webgpu.recorder import _shader_folders

    folder = next(f for f in _shader_folders() if f.is_dir())
    names = sorted(p.name for p in folder.glob("*.wgsl"))
    assert {"linear.wgsl", "attention.wgsl", "sampling.wgsl"} <= set(names)
    for name in names:
        text = (folder / name).read_text()
        assert text.startswith("// "), f"{name} must start with its descriptive comment"
        source = load_shader(name)
        if "subgroup" in source and "subgroups" not in backend.driver.info.features:
            continue
        if "var<uniform> p" not in source:  # a fragment: compiled inside its includers
            includers = [n for n in names if f"//!include {name}\n" in (folder / n).read_text()]
            assert includers, f"{name} is not a kernel and no kernel includes it"
            continue
        for entry in re.findall(r"@workgroup_size\([^)]*\)\s*fn\s+(\w+)", source):
            kernel = backend.recorder.kernel(name, entry)
            assert kernel.workgroup_size >= 1 and kernel.fields, f"{name}:{entry}"


def test_kernel_parameters_are_packed_by_name_as_the_shader_declares_them(backend):
    kernel = backend.recorder.kernel("layer_norm.wgsl", "layer_norm")
    assert kernel.fields == ("rows", "hidden", "epsilon", "x_offset", "y_offset")
    # epsilon is an f32 in the WGSL, whatever the Python value's type.
    assert kernel.params(rows=2, hidden=768, epsilon=1, x_offset=0, y_offset=4) == \
        struct.pack("<IIfII", 2, 768, 1.0, 0, 4)
    with pytest.raises(TypeError, match=r"missing \['y_offset'\], unknown \[\]"):
        kernel.params(rows=2, hidden=768, epsilon=1e-5, x_offset=0)
    with pytest.raises(TypeError, match=r"missing \['epsilon'\], unknown \['eps'\]"):
        kernel.params(rows=2, hidden=768, eps=1e-5, x_offset=0, y_offset=0)
    with pytest.raises(TypeError, match="layer_norm.wgsl:layer_norm"):
        kernel.params(rows=2.0, hidden=768, epsilon=1e-5, x_offset=0, y_offset=0)


def test_workgroup_shapes_come_from_the_shaders(backend):
    kernel = backend.recorder.kernel
    assert kernel("linear.wgsl", "matmul").workgroup_size == 8 * 8
    assert kernel("linear.wgsl", "matmul").constants["TILE"] == 32
    assert kernel("attention.wgsl", "kv_write").workgroup_size == 256
    assert kernel("attention.wgsl", "attend").constants["MAX_HEAD_DIM"] == 256


def test_a_shared_include_is_loaded_once(backend):
    from webgpt2.backends.webgpu import load_shader

    for name in ("linear_subgroups.wgsl", "attention_subgroups.wgsl"):
        assert load_shader(name).count("fn lane_group_sum(") == 1


# ---- buffers larger than one binding ------------------------------------------------------
def test_token_table_is_split_into_binding_sized_chunks(small_bindings):
    b = small_bindings
    r = np.random.default_rng(0)
    vocabulary, hidden = 3001, 24  # 288 KB of float32 rows over a 64 KiB binding
    table = r.standard_normal((vocabulary, hidden)).astype(np.float32)
    positions = r.standard_normal((16, hidden)).astype(np.float32)
    t = b.upload(host(table), "embedding")
    assert len(t.chunks) >= 5
    assert all(size <= 64 << 10 for _, size, _, _ in t.chunks)
    np.testing.assert_array_equal(values(b, t), table)
    ids = np.array([[0, 1500, 3000, 700], [2999, 5, 2048, 1024]])
    hidden_states = b.embedding(b.tensor(ids.tolist(), "int32"), t, b.upload(host(positions)), 2)
    np.testing.assert_allclose(values(b, hidden_states), table[ids] + positions[2:6], rtol=1e-6)
    x = r.standard_normal((2, 3, hidden)).astype(np.float32)
    logits = b.reverse_embedding(b.upload(host(x)), t)  # [2, 3, 3001]: 72 KB, over a binding
    expected = x.astype(np.float64) @ table.T
    np.testing.assert_allclose(values(b, logits), expected, **MATMUL)
    rows = b.select_position(logits, 2)
    assert b.argmax(rows) == list(np.argmax(expected[:, 2], -1))
    targets = r.integers(0, vocabulary, (2, 3))
    got = b.token_log_probs(logits, b.tensor(targets.tolist(), "int32"))
    shifted = expected - expected.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.array(got), np.take_along_axis(
        log_probs, targets[..., None], -1)[..., 0], **MATMUL)
    draws = b.sample(rows, [0.25, 0.75], temperature=0.5, top_k=20, top_p=0.9)
    cpu = webgpt2.get_backend("cpu")
    assert draws == cpu.sample(expected[:, 2].astype(np.float32), [0.25, 0.75], 0.5, 20, 0.9)


def test_float16_token_table_is_split_too(small_bindings):
    b = small_bindings
    r = np.random.default_rng(1)
    table = r.standard_normal((5003, 20)).astype(np.float32)  # odd width: converted on device
    t = b.upload(host(table), "embedding", dtype="float16")
    assert len(t.chunks) >= 2
    rounded = table.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(values(b, t), rounded)
    x = r.standard_normal((1, 1, 20)).astype(np.float32)
    logits = b.reverse_embedding(b.upload(host(x)), t)
    np.testing.assert_allclose(values(b, logits), x.astype(np.float64) @ rounded.T, **MATMUL)


@pytest.mark.parametrize("k", [64, 77])
def test_activations_over_a_binding_are_processed_in_row_windows(small_bindings, k):
    b = small_bindings
    r = np.random.default_rng(2)
    n = 131
    x = r.standard_normal((3, 100, k)).astype(np.float32)  # x and y both over 64 KiB
    w = (r.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32)
    bias = r.standard_normal(n).astype(np.float32)
    residual = r.standard_normal((3, 100, n)).astype(np.float32)
    out = b.linear(b.upload(host(x)), b.upload(host(w), "linear"), b.upload(host(bias)),
                   "gelu", b.upload(host(residual)))
    z = x.astype(np.float64) @ w + bias
    gelu = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(values(b, out), gelu + residual, **MATMUL)
    gamma, beta = r.standard_normal(k).astype(np.float32), r.standard_normal(k).astype(np.float32)
    normed = b.layer_norm(b.upload(host(x)), b.upload(host(gamma)), b.upload(host(beta)), 1e-5)
    mean = x.mean(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(values(b, normed), expected * gamma + beta, rtol=1e-5, atol=1e-5)


def test_cache_over_a_binding_is_attended_in_batch_windows(small_bindings):
    from test_backend_ops import reference_attention

    b = small_bindings
    r = np.random.default_rng(3)
    batch, layers, max_length, heads, hd = 5, 2, 64, 2, 8  # cache 80 KB; a layer 8 KB
    cache = b.zeros((batch, layers, 2, max_length, heads, hd))
    expected_cache = np.zeros((batch, layers, 2, max_length, heads, hd), np.float32)
    for start, seq_len in [(0, 6), (6, 1), (7, 2)]:
        for layer in range(layers):
            qkv = r.standard_normal((batch, seq_len, 3 * heads * hd)).astype(np.float32)
            out = b.cached_attention(b.upload(host(qkv)), cache, layer, start, heads)
            expected = reference_attention(qkv, expected_cache, layer, start, heads)
            np.testing.assert_allclose(values(b, out), expected, **MATMUL)
    np.testing.assert_array_equal(values(b, cache), expected_cache)


def test_a_weight_over_the_binding_limit_is_a_clear_error(small_bindings):
    from webgpt2.backends.webgpu import DriverError

    big = np.zeros((256, 128), np.float32)  # 128 KiB as a linear weight
    with pytest.raises(DriverError, match="max_storage_buffer_binding_size"):
        small_bindings.upload(host(big), "linear")


# ---- float16 weight storage ---------------------------------------------------------------
@pytest.mark.parametrize("rows", [1, 3, 10])
@pytest.mark.parametrize("k", [64, 72, 77])  # whole 8-value words, half a word, ragged
def test_float16_linear_weights(backend, rows, k):
    r = np.random.default_rng(4)
    n = 131
    x = r.standard_normal((rows, k)).astype(np.float32)
    w = (r.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32)
    bias = r.standard_normal(n).astype(np.float32)
    weight = backend.upload(host(w), "linear", dtype="float16")
    assert weight.dtype == "float16"
    out = backend.linear(backend.upload(host(x)), weight, backend.upload(host(bias)))
    rounded = w.astype(np.float16).astype(np.float64)
    # f16 arithmetic (the large profile's default where shader-f16 is) rounds x and products
    f16 = 4e-3 * np.abs(x).max() * np.abs(w).max() * math.sqrt(k) * backend.f16_arithmetic
    np.testing.assert_allclose(values(backend, out), x @ rounded + bias, rtol=1e-4,
                               atol=1e-4 + f16)


def test_float16_backend_default_and_host_half_data(backend):
    from webgpt2.backends.webgpu import WebGPUBackend

    b = WebGPUBackend(driver=backend.driver, dtype="float16")
    w = np.random.default_rng(5).standard_normal((40, 24)).astype(np.float16)
    weight = b.upload(HostTensor("float16", w.shape, w.tobytes()), "linear")
    assert weight.dtype == "float16"
    np.testing.assert_array_equal(values(b, weight), w.astype(np.float32))
    with pytest.raises(ValueError, match="bfloat16"):
        WebGPUBackend(driver=backend.driver, dtype="bfloat16")


# ---- the model ----------------------------------------------------------------------------
PROMPT = [[464, 2068, 7586, 21831, 18045, 625, 262, 16931]]


def _load(folder, backend, dtype=None):
    from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

    return GPT2CausalLM.from_pretrained(folder, backend=backend, dtype=dtype, progress=False)


def _greedy(lm, prompt, steps):
    b = lm.backend
    hidden, cache = lm.build_cache(prompt, cache_length=len(prompt[0]) + steps)
    tokens = [b.argmax(lm.project(b.select_position(hidden, len(prompt[0]) - 1)))]
    for i in range(len(prompt[0]), len(prompt[0]) + steps - 1):
        logits, _, cache = lm.call_with_cache([[t] for t in tokens[-1]], cache, i)
        tokens.append(b.argmax(logits))
    return tokens


@pytest.fixture(scope="module")
def tiny_models(backend, tiny_checkpoint):
    return _load(tiny_checkpoint, "cpu"), _load(tiny_checkpoint, backend)


@pytest.fixture(scope="module")
def small_models(backend, small_checkpoint):
    return _load(small_checkpoint, "cpu"), _load(small_checkpoint, backend)


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_model_logits_match_cpu(which, tiny_models, small_models):
    cpu, gpu = tiny_models if which == "tiny" else small_models
    prompt = PROMPT + [[50256, 11, 13, 262, 257, 286, 290, 284]]  # batch of 2
    expected = np.array(cpu.backend.to_list(cpu(prompt)))
    got = np.array(gpu.backend.to_list(gpu(prompt)))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    # The cached path: prefill then one token at a time.
    _, cache = gpu.build_cache(prompt, cache_length=12)
    step, _, _ = gpu.call_with_cache([[5], [6]], cache, 8)
    _, cpu_cache = cpu.build_cache(prompt, cache_length=12)
    cpu_step, _, _ = cpu.call_with_cache([[5], [6]], cpu_cache, 8)
    np.testing.assert_allclose(np.array(gpu.backend.to_list(step)),
                               np.array(cpu.backend.to_list(cpu_step)), rtol=1e-4,
                               atol=1e-4 * scale)
    np.testing.assert_allclose(np.array(gpu.backend.to_list(cache)),
                               np.array(cpu.backend.to_list(cpu_cache)), rtol=1e-4, atol=1e-5)


def test_model_scores_match_cpu(tiny_models):
    cpu, gpu = tiny_models
    rows = PROMPT + [[11, 13, 262, 257, 286, 290, 284, 50256]]
    np.testing.assert_allclose(gpu.score(rows), cpu.score(rows), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which,steps", [("tiny", 120), ("small", 128)])
def test_greedy_tokens_match_cpu(which, steps, tiny_models, small_models):
    cpu, gpu = tiny_models if which == "tiny" else small_models
    assert _greedy(gpu, PROMPT, steps) == _greedy(cpu, PROMPT, steps)


def test_seeded_top_k_and_top_p_generation_match_cpu(tiny_models):
    from webgpt2.generation.samplers import TopKSampler, TopPSampler

    cpu, gpu = tiny_models
    prompts = ["The quick brown fox", "Hello"]
    # top-p is given peaked distributions (low temperatures): on the random model's nearly
    # flat ones its cut falls among tens of thousands of probabilities of ~2e-5 each, where
    # the order of float32 summation alone (sequential on the cpu, a tree on the device)
    # moves it, so no two implementations agree token for token there.
    for sampler in (TopKSampler(k=10, seed=3), TopKSampler(k=1000, seed=5),
                    TopPSampler(p=0.9, temperature=0.05, seed=4),
                    TopPSampler(p=0.5, temperature=0.1, seed=6)):
        got = gpu.generate(prompts, max_new_tokens=24, sampler=sampler, stop_token_ids=None)
        assert got == cpu.generate(prompts, max_new_tokens=24, sampler=sampler,
                                   stop_token_ids=None)


def test_a_greedy_decode_step_is_one_submission_and_reads_back_one_id_per_row(tiny_models):
    _, gpu = tiny_models
    b = gpu.backend
    for batch in (1, 2):
        prompt = PROMPT * batch
        _, cache = gpu.build_cache(prompt, cache_length=12)
        logits, _, cache = gpu.call_with_cache([[5]] * batch, cache, 8)
        b.argmax(logits)  # warm
        b.reset_counters()
        logits, _, cache = gpu.call_with_cache([[7]] * batch, cache, 9)
        b.argmax(logits)
        layers = gpu.backbone.num_layers
        assert b.counters["submissions"] == 1
        assert b.counters["readbacks"] == 1
        assert b.counters["bytes_read"] == 4 * batch
        assert b.counters["bytes_written"] == 4 * batch  # the token ids
        # embedding, per block 2 layer norms, 4 products and attention (which writes the
        # step's keys and values itself), final norm, LM head, argmax (the large profile adds
        # a combining pass per split product)
        if b.device_profile.name == "small":
            assert b.counters["dispatches"] == 1 + layers * 7 + 1 + 1 + 1
        b.reset_counters()
        logits, _, cache = gpu.call_with_cache([[9]] * batch, cache, 10)
        b.sample(logits, [0.5] * batch, top_k=5)
        assert b.counters["submissions"] == 1
        assert b.counters["bytes_read"] == 4 * batch


def test_float16_model_within_stated_tolerance(backend, tiny_checkpoint, tiny_models):
    from webgpt2.backends.webgpu import WebGPUBackend

    cpu, _ = tiny_models
    gpu = _load(tiny_checkpoint, WebGPUBackend(driver=backend.driver, dtype="float16"),
                "float16")
    expected = np.array(cpu.backend.to_list(cpu(PROMPT)))
    got = np.array(gpu.backend.to_list(gpu(PROMPT)))
    assert np.abs(got - expected).max() <= F16_LOGITS_TOLERANCE * np.abs(expected).max()


# ---- generation operations on the device ---------------------------------------------------
def _head_major_cache(b, values: np.ndarray):
    """A KV cache as the model makes it (zeros: head-major in memory) holding `values`
    [B, L, 2, T, nh, hd]."""
    cache = b.zeros(values.shape)
    assert cache.layout == "cache"
    b.recorder.write(cache.buffer, np.ascontiguousarray(values.swapaxes(3, 4)).tobytes())
    return cache


@pytest.mark.parametrize("shape", [(3, 1000), (3, 1, 1000)])
def test_generation_operations_run_on_the_device_and_equal_cpu(backend, shape):
    cpu = webgpt2.get_backend("cpu")
    r = np.random.default_rng(4)
    logits = (r.standard_normal(shape) * 3).astype(np.float32)
    logits.reshape(3, -1)[1, [4, 9, 300, 999]] = 9.5  # ties come in index order
    ids = [[1, 1, 5, 999, 2000], [], [0, 7, -3]]
    ours, theirs = backend.tensor(logits.tolist(), "float32"), cpu.tensor(logits.tolist(),
                                                                          "float32")
    np.testing.assert_allclose(values(backend, backend.log_softmax(ours)),
                               values(cpu, cpu.log_softmax(theirs)), rtol=1e-5, atol=1e-5)
    for k in (1, 4, 16, 17):  # 17: past the kernel's MAX_K, the host default
        assert backend.top_k(ours, k) == cpu.top_k(theirs, k)
    np.testing.assert_allclose(values(backend, backend.apply_repetition_penalty(ours, ids, 1.7)),
                               values(cpu, cpu.apply_repetition_penalty(theirs, ids, 1.7)))
    masked = backend.mask_tokens(ours, ids)
    np.testing.assert_array_equal(values(backend, masked),
                                  values(cpu, cpu.mask_tokens(theirs, ids)))
    assert backend.top_k(masked, 3) == cpu.top_k(cpu.mask_tokens(theirs, ids), 3)
    context = r.standard_normal((2, 5, 24)).astype(np.float32)
    candidates = r.standard_normal((6, 1, 24)).astype(np.float32)
    np.testing.assert_allclose(
        backend.max_cosine_similarity(backend.tensor(context.tolist(), "float32"),
                                      backend.tensor(candidates.tolist(), "float32")),
        cpu.max_cosine_similarity(cpu.tensor(context.tolist(), "float32"),
                                  cpu.tensor(candidates.tolist(), "float32")), atol=1e-5)
    # A beam step's log-softmax and top-k read back ids and values of k candidates per row,
    # not rows of logits.
    backend.reset_counters()
    backend.top_k(backend.log_softmax(backend.mask_tokens(ours, ids)), 8)
    assert backend.counters["bytes_read"] == 3 * 2 * 8 * 4


def test_cache_gather_reorder_and_concatenate_on_the_device(backend):
    r = np.random.default_rng(5)
    cache = r.standard_normal((3, 2, 2, 7, 3, 8)).astype(np.float32)
    t = _head_major_cache(backend, cache)
    gathered = backend.gather_batch(t, [2, 0, 0])
    assert gathered.layout == "cache"
    np.testing.assert_array_equal(values(backend, gathered), cache[[2, 0, 0]])
    backend.reset_counters()
    reordered = backend.reorder_cache(gathered, [1, 2, 0], 2, 6)
    expected = cache[[2, 0, 0]].copy()
    expected[:, :, :, 2:6] = cache[[0, 0, 2]][:, :, :, 2:6]
    np.testing.assert_array_equal(values(backend, reordered), expected)
    assert backend.counters["submissions"] == 1  # the read above; the reorder is two kernels
    x = r.standard_normal((2, 3, 8)).astype(np.float32)
    y = r.standard_normal((2, 1, 8)).astype(np.float32)
    joined = backend.concatenate([backend.tensor(x.tolist(), "float32"),
                                  backend.tensor(y.tolist(), "float32")], axis=1)
    np.testing.assert_array_equal(values(backend, joined), np.concatenate([x, y], 1))
    ints = backend.concatenate([backend.tensor([[1, 2]], "int32"),
                                backend.tensor([[3]], "int32")], axis=1)
    assert backend.to_list(ints) == [[1, 2, 3]]


def test_beam_and_contrastive_search_match_cpu(tiny_models):
    cpu, gpu = tiny_models
    for options in (dict(sampler="beam", num_beams=4), dict(sampler="contrastive", top_k=4,
                                                            penalty_alpha=0.6),
                    dict(sampler="beam", num_beams=3, repetition_penalty=1.3,
                         no_repeat_ngram_size=2)):
        got = gpu.generate(["The quick brown fox", "Hi"], max_new_tokens=10,
                           stop_token_ids=None, **options)
        assert got == cpu.generate(["The quick brown fox", "Hi"], max_new_tokens=10,
                                   stop_token_ids=None, **options)


# ---- float16 KV cache -----------------------------------------------------------------------
def test_float16_kv_cache_within_stated_tolerance(backend, tiny_checkpoint, small_checkpoint,
                                                  tiny_models, small_models):
    from webgpt2.backends.webgpu import WebGPUBackend

    with pytest.raises(ValueError, match="kv_dtype 'int8'"):
        WebGPUBackend(driver=backend.driver, kv_dtype="int8")
    b = WebGPUBackend(driver=backend.driver, kv_dtype="float16")
    b.poison = True
    prompt = PROMPT + [[50256, 11, 13, 262, 257, 286, 290, 284]]
    for (cpu, _), folder in ((tiny_models, tiny_checkpoint), (small_models, small_checkpoint)):
        gpu = _load(folder, b)
        _, cache = gpu.build_cache(prompt, cache_length=12)
        assert cache.dtype == "float16" and cache.buffer_size < cache.size * 2 + 16
        step, _, cache = gpu.call_with_cache([[5], [6]], cache, 8)
        _, cpu_cache = cpu.build_cache(prompt, cache_length=12)
        expected, _, cpu_cache = cpu.call_with_cache([[5], [6]], cpu_cache, 8)
        expected = np.array(cpu.backend.to_list(expected))
        got = np.array(b.to_list(step))
        assert np.abs(got - expected).max() <= F16_LOGITS_TOLERANCE * np.abs(expected).max()
        kv = np.array(cpu.backend.to_list(cpu_cache))
        np.testing.assert_allclose(np.array(b.to_list(cache)), kv, rtol=1e-3, atol=1e-3)
        # Beam search moves the float16 cache by its own gather and reorder.
        options = dict(max_new_tokens=6, stop_token_ids=None, sampler="beam", num_beams=3)
        assert gpu.generate(["The quick brown fox"], **options) == \
            cpu.generate(["The quick brown fox"], **options)
