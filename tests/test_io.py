"""webgpt2.io: safetensors reading and writing, GPT-2 config parsing and weight loading.

References are independent of webgpt2: files written and read by the `safetensors` package,
and the state dict of the `transformers` model that wrote the checkpoint.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import webgpt2.io.safetensors as st_module
from webgpt2.backends.base import HostTensor
from webgpt2.io import (
    CheckpointError,
    SafetensorsError,
    gpt2_config_from_dict,
    read_gpt2_config,
    read_safetensors,
    write_safetensors,
)
from webgpt2.models.gpt2 import gpt2_weight_shapes, load_gpt2_weights

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

TORCH_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def to_numpy(host: HostTensor) -> np.ndarray:
    """float32 values of a HostTensor, decoded independently of the backends."""
    if host.dtype == "bfloat16":
        bits = np.frombuffer(host.data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(host.shape)
    np_dtype = {"float32": "<f4", "float16": "<f2", "int32": "<i4"}[host.dtype]
    return np.frombuffer(host.data, dtype=np_dtype).astype(np.float32).reshape(host.shape)


def torch_bytes(t) -> bytes:
    """A torch tensor's raw little-endian bytes (bfloat16 included)."""
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.contiguous().numpy().tobytes()


# ---- safetensors ------------------------------------------------------------------------

def sample_file(path: Path) -> tuple[bytes, int]:
    """A small valid file written by us; returns its bytes and header length."""
    write_safetensors(path, {
        "a": HostTensor.from_floats([1.0, 2.0, 3.0, 4.0], (2, 2)),
        "b": HostTensor("int32", (3,), struct.pack("<3i", 7, -8, 9)),
    })
    data = path.read_bytes()
    return data, struct.unpack("<Q", data[:8])[0]


def raw_file(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def test_reads_every_dtype_the_safetensors_package_writes(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(4, 2).half(),
        "bf16": torch.randn(2, 3, 2).bfloat16(),
        "i32": torch.randint(-1000, 1000, (7,), dtype=torch.int32),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "f64": torch.randn(2).double(),
        "i64": torch.arange(3),
        "bool": torch.tensor([True, False]),
        "u8": torch.arange(4, dtype=torch.uint8),
    }
    path = tmp_path / "all.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    unsupported = {"f64": "F64", "i64": "I64", "bool": "BOOL", "u8": "U8"}
    with pytest.raises(SafetensorsError) as info:
        read_safetensors(path)
    assert any(f"'{n}' has dtype '{d}'" in str(info.value) for n, d in unsupported.items())
    for name, dtype in unsupported.items():
        with pytest.raises(SafetensorsError, match=f"tensor '{name}' has dtype '{dtype}'"):
            read_safetensors(path, skip=lambda n, keep=name: n in unsupported and n != keep)
    ours = read_safetensors(path, skip=lambda n: n in unsupported)
    assert set(ours) == set(tensors) - set(unsupported)
    expected_dtype = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "i32": "int32",
                      "scalar": "float32", "empty": "float32"}
    for name, host in ours.items():
        assert host.dtype == expected_dtype[name]
        assert host.shape == tuple(tensors[name].shape)
        assert bytes(host.data) == torch_bytes(tensors[name])


def test_the_safetensors_package_reads_what_we_write(tmp_path):
    values = {
        "w.f32": np.random.default_rng(0).standard_normal((4, 3)).astype("<f4"),
        "w.f16": np.random.default_rng(1).standard_normal((5,)).astype("<f2"),
        "ids": np.arange(-3, 3, dtype="<i4").reshape(2, 3),
        "none": np.zeros((0,), dtype="<f4"),
    }
    dtype_name = {"float32": "float32", "float16": "float16", "int32": "int32"}
    hosts = {k: HostTensor(dtype_name[v.dtype.name], v.shape, v.tobytes())
             for k, v in values.items()}
    bf16 = torch.randn(3, 2).bfloat16()
    hosts["w.bf16"] = HostTensor("bfloat16", (3, 2), torch_bytes(bf16))
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, hosts, metadata={"format": "pt", "note": "webgpt2"})
    loaded = safetensors_torch.load_file(str(path))
    assert set(loaded) == set(hosts)
    for name, array in values.items():
        np.testing.assert_array_equal(loaded[name].numpy(), array)
    assert torch.equal(loaded["w.bf16"], bf16)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "webgpt2"}
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
    .filter(lambda s: s != "__metadata__"),
    st.tuples(st.sampled_from(["float32", "float16", "bfloat16", "int32"]),
              st.lists(st.integers(0, 4), max_size=3)),
    max_size=5,
))
def test_round_trip_through_both_implementations(tmp_path_factory, spec):
    rng = np.random.default_rng(len(spec))
    hosts = {}
    for name, (dtype, shape) in spec.items():
        size = int(np.prod(shape)) * (2 if dtype in ("float16", "bfloat16") else 4)
        hosts[name] = HostTensor(dtype, tuple(shape), rng.bytes(size))
    path = tmp_path_factory.mktemp("rt") / "x.safetensors"
    write_safetensors(path, hosts)
    theirs = safetensors_torch.load_file(str(path))
    ours = read_safetensors(path)
    assert set(theirs) == set(ours) == set(hosts)
    for name, host in hosts.items():
        assert torch_bytes(theirs[name]) == bytes(host.data)
        assert bytes(ours[name].data) == bytes(host.data)
        assert ours[name].shape == host.shape and ours[name].dtype == host.dtype
    # And the other way: the package's bytes, read by us.
    assert {k: bytes(v.data) for k, v in read_safetensors(
        safetensors_torch.save(theirs)).items()} == {k: bytes(v.data) for k, v in hosts.items()}


def test_a_path_is_memory_mapped_and_tensors_are_views(tmp_path):
    data, _ = sample_file(tmp_path / "s.safetensors")
    import mmap
    tensors = read_safetensors(tmp_path / "s.safetensors")
    assert all(isinstance(t.data, memoryview) for t in tensors.values())
    assert isinstance(tensors["a"].data.obj, mmap.mmap)
    assert tensors["a"].data.readonly
    assert list(struct.unpack("<3i", tensors["b"].data)) == [7, -8, 9]
    # A bytes source is sliced, not copied.
    source = bytearray(data)
    from_bytes = read_safetensors(source)
    assert from_bytes["a"].data.obj is source
    assert bytes(read_safetensors(memoryview(data))["a"].data) == bytes(tensors["a"].data)


def test_without_mmap_the_file_is_read_with_progress(tmp_path, monkeypatch):
    path = tmp_path / "s.safetensors"
    data, _ = sample_file(path)
    monkeypatch.setattr(st_module, "mmap", None)
    monkeypatch.setattr(st_module, "_READ_CHUNK", 16)
    calls = []
    tensors = read_safetensors(path, progress=lambda done, total: calls.append((done, total)))
    assert bytes(tensors["a"].data) == struct.pack("<4f", 1, 2, 3, 4)
    assert len(calls) == -(-len(data) // 16) and calls[-1] == (len(data), len(data))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_mmap_failure_falls_back_to_reading(tmp_path, monkeypatch):
    path = tmp_path / "s.safetensors"
    sample_file(path)

    class NoMmap:
        ACCESS_READ = 1

        @staticmethod
        def mmap(*args, **kwargs):
            raise OSError("mmap is not supported here")

    monkeypatch.setattr(st_module, "mmap", NoMmap)
    tensors = read_safetensors(path)
    assert isinstance(tensors["a"].data.obj, bytearray)


def test_truncated_files_are_refused(tmp_path):
    data, header_len = sample_file(tmp_path / "s.safetensors")
    for cut in sorted({0, 3, 7, 8, 9, 8 + header_len // 2, 8 + header_len - 1, 8 + header_len,
                       8 + header_len + 5, len(data) - 1}):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(SafetensorsError, match="truncated|not a safetensors file") as info:
            read_safetensors(path)
        assert str(path) in str(info.value)
        with pytest.raises(SafetensorsError):
            read_safetensors(data[:cut])


NOT_JSON = "header is not (valid JSON|UTF-8 text)"


@pytest.mark.parametrize("mutate, message", [
    (lambda d, n: d[:8] + b"x" * n + d[8 + n:], "is not a safetensors file"),
    (lambda d, n: d[:8] + b"{" + b"x" * (n - 1) + d[8 + n:], NOT_JSON),
    (lambda d, n: struct.pack("<Q", n + 8) + d[8:], NOT_JSON),
    (lambda d, n: struct.pack("<Q", n - 3) + d[8:], NOT_JSON),
    (lambda d, n: struct.pack("<Q", 1 << 40) + d[8:], "is not a safetensors file"),
    (lambda d, n: struct.pack("<Q", len(d)) + d[8:], "truncated"),
    (lambda d, n: d + b"\0" * 8, "not covered by any tensor"),
])
def test_garbage_headers_and_wrong_header_lengths_are_refused(tmp_path, mutate, message):
    data, header_len = sample_file(tmp_path / "s.safetensors")
    with pytest.raises(SafetensorsError, match=message):
        read_safetensors(mutate(data, header_len))


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), "gap"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "truncated"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8),
     r"shape \[3\] and dtype F32 needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "non-negative"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), "data_offsets"),
    ({"a": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "dtype 5"),
    ({"a": [1, 2]}, b"", "expected an object"),
    ({"__metadata__": "x"}, b"", "__metadata__"),
])
def test_inconsistent_headers_are_refused(header, data, message):
    with pytest.raises(SafetensorsError, match=message):
        read_safetensors(raw_file(header, data))


def test_header_must_be_an_object():
    with pytest.raises(SafetensorsError, match="the header does not start with"):
        read_safetensors(struct.pack("<Q", 6) + b"[1, 2]")


def test_pickles_and_zips_are_not_safetensors(tmp_path):
    torch_file = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, torch_file)  # a zip archive
    with pytest.raises(SafetensorsError, match="is not a safetensors file: it is a zip"):
        read_safetensors(torch_file)
    for protocol in (2, 4, 5):
        with pytest.raises(SafetensorsError, match="is not a safetensors file: it is a Python"):
            read_safetensors(pickle.dumps({"w": [1.0]}, protocol=protocol))
    zipped = tmp_path / "z.safetensors"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a", "b")
    with pytest.raises(SafetensorsError, match="is not a safetensors file"):
        read_safetensors(zipped)


def test_write_is_atomic_and_refuses_bad_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(SafetensorsError, match="metadata must map str to str"):
        write_safetensors(path, {"a": HostTensor.from_floats([1.0], (1,))}, {"k": 1})
    assert not list(tmp_path.iterdir())
    write_safetensors(path, {"a": HostTensor.from_floats([1.0], (1,))})
    assert (8 + struct.unpack("<Q", path.read_bytes()[:8])[0]) % 8 == 0


# ---- GPT-2 config -------------------------------------------------------------------------

def test_config_of_a_transformers_checkpoint(checkpoint):
    from transformers import GPT2Config

    hf = GPT2Config.from_pretrained(checkpoint)
    assert read_gpt2_config(checkpoint) == {
        "vocabulary_size": hf.vocab_size,
        "num_layers": hf.n_layer,
        "num_heads": hf.n_head,
        "hidden_dim": hf.n_embd,
        "intermediate_dim": 4 * hf.n_embd,
        "max_sequence_length": hf.n_positions,
        "layer_norm_epsilon": hf.layer_norm_epsilon,
        "dropout": hf.resid_pdrop,
    }
    assert read_gpt2_config(checkpoint / "config.json") == read_gpt2_config(checkpoint)


BASE_CONFIG = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 64,
               "n_positions": 128, "vocab_size": 50257}


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt_neo"}, "model_type is 'gpt_neo'"),
    ({"activation_function": "relu"}, "activation_function is 'relu'"),
    ({"activation_function": "gelu"}, "activation_function is 'gelu'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx is True"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn is True"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings is False"),
    ({"add_cross_attention": True}, "add_cross_attention is True"),
    ({"scale_attn_weights": False}, "scale_attn_weights is False"),
    ({"n_head": 5}, "n_embd 64 is not divisible by n_head 5"),
    ({"n_layer": 0}, "n_layer is 0; expected a positive integer"),
    ({"n_embd": "64"}, "n_embd is '64'"),
    ({"n_inner": -1}, "n_inner is -1"),
    ({"layer_norm_epsilon": 0}, "layer_norm_epsilon is 0"),
])
def test_config_refusals(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({**BASE_CONFIG, **change}))
    with pytest.raises(CheckpointError, match=message):
        read_gpt2_config(tmp_path)


def test_config_accepts_the_other_tanh_gelus_and_n_inner():
    for activation in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        cfg = gpt2_config_from_dict({**BASE_CONFIG, "activation_function": activation,
                                     "n_inner": 100})
        assert cfg["intermediate_dim"] == 100


def test_missing_or_invalid_config_json(tmp_path):
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        read_gpt2_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        read_gpt2_config(tmp_path)


# ---- GPT-2 weights ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_state():
    """checkpoint folder -> transformers' state dict of the model loaded from it."""
    from transformers import GPT2LMHeadModel

    cache = {}

    def get(folder: Path) -> dict:
        if folder not in cache:
            model = GPT2LMHeadModel.from_pretrained(folder).eval()
            cache[folder] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return cache[folder]

    return get


def hub_layout(src: Path, dst: Path, dtype: str = "float32", mask_dtype=torch.float32,
               lm_head: bool = False) -> Path:
    """Re-key a transformers 5 file the way the hub stores GPT-2: bare names, causal-mask
    buffers per layer, optionally the tied lm_head.weight; floats cast to dtype."""
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    config = json.loads((src / "config.json").read_text())
    positions = config["n_positions"]
    tensors = {}
    for name, value in safetensors_torch.load_file(str(src / "model.safetensors")).items():
        tensors[name.removeprefix("transformer.")] = value.to(TORCH_DTYPE[dtype])
    mask = torch.tril(torch.ones(positions, positions)).view(1, 1, positions, positions)
    for i in range(config["n_layer"]):
        tensors[f"h.{i}.attn.bias"] = mask.to(mask_dtype).clone()
        tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    if lm_head:
        tensors["lm_head.weight"] = tensors["wte.weight"].clone()
    safetensors_torch.save_file(tensors, str(dst / "model.safetensors"),
                                metadata={"format": "pt"})
    return dst


def assert_matches_transformers(weights: dict, state: dict, config: dict, dtype: str) -> None:
    assert list(weights) == list(gpt2_weight_shapes(config))
    for name, host in weights.items():
        reference = state["transformer." + name].to(TORCH_DTYPE[dtype]).float().numpy()
        assert host.dtype == dtype, name
        assert host.shape == reference.shape, name
        np.testing.assert_array_equal(to_numpy(host), reference, err_msg=name)


def test_transformers_written_checkpoints_load_exactly(checkpoint, reference_state):
    config = read_gpt2_config(checkpoint)
    weights = load_gpt2_weights(checkpoint, config)
    assert_matches_transformers(weights, reference_state(checkpoint), config, "float32")
    # The config is read from the folder when not given, and a file path works too.
    again = load_gpt2_weights(checkpoint / "model.safetensors")
    assert {k: bytes(v.data) for k, v in again.items()} == {
        k: bytes(v.data) for k, v in weights.items()}


@pytest.mark.parametrize("dtype, mask_dtype, lm_head", [
    ("float32", torch.float32, True),
    ("float16", torch.bool, False),
    ("bfloat16", torch.uint8, True),
])
def test_hub_layout_in_each_dtype(tiny_checkpoint, reference_state, tmp_path, dtype,
                                  mask_dtype, lm_head):
    folder = hub_layout(tiny_checkpoint, tmp_path / "hub", dtype, mask_dtype, lm_head)
    config = read_gpt2_config(folder)
    weights = load_gpt2_weights(folder, config)
    assert_matches_transformers(weights, reference_state(tiny_checkpoint), config, dtype)


def test_bytes_source(tiny_checkpoint, reference_state):
    config = read_gpt2_config(tiny_checkpoint)
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    assert_matches_transformers(load_gpt2_weights(data, config),
                                reference_state(tiny_checkpoint), config, "float32")
    with pytest.raises(CheckpointError, match="need a config"):
        load_gpt2_weights(data)


def write_sharded(src: Path, dst: Path) -> Path:
    """Split a checkpoint's weights into two shards with an index, as the hub does."""
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    tensors = safetensors_torch.load_file(str(src / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, members in shards.items():
        safetensors_torch.save_file({n: tensors[n] for n in members}, str(dst / shard),
                                    metadata={"format": "pt"})
        weight_map.update({n: shard for n in members})
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return dst


def test_sharded_checkpoint_with_progress(tiny_checkpoint, reference_state, tmp_path):
    folder = write_sharded(tiny_checkpoint, tmp_path / "sharded")
    config = read_gpt2_config(folder)
    calls = []
    weights = load_gpt2_weights(folder, config, progress=lambda d, t: calls.append((d, t)))
    assert_matches_transformers(weights, reference_state(tiny_checkpoint), config, "float32")
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert calls[-1] == (total, total) and len(calls) >= 2
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert load_gpt2_weights(folder / "model.safetensors.index.json", config).keys() == \
        weights.keys()

    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing: model-00002-of-00002.safetensors"):
        load_gpt2_weights(folder, config)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["wte.weight"] = "../evil.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="maps to shard '../evil.safetensors'"):
        load_gpt2_weights(folder, config)


def rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of a checkpoint whose tensors dict went through edit()."""
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    tensors = safetensors_torch.load_file(str(src / "model.safetensors"))
    edit(tensors)
    safetensors_torch.save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_tensors_are_named_and_counted(tiny_checkpoint, tmp_path):
    def drop_layer_1(t):
        for name in [n for n in t if n.startswith("transformer.h.1.")]:
            del t[name]

    folder = rewrite(tiny_checkpoint, tmp_path / "c", drop_layer_1)
    with pytest.raises(CheckpointError,
                       match=r"12 missing tensors: h\.1\.ln_1\.weight, .*\(7 more\)"):
        load_gpt2_weights(folder)
    config = {**read_gpt2_config(tiny_checkpoint), "num_layers": 3}
    with pytest.raises(CheckpointError, match=r"num_layers=3.*24 missing tensors: h\.1\."):
        load_gpt2_weights(folder, config)


def test_misshaped_tensors_name_expected_and_actual(tiny_checkpoint, tmp_path):
    folder = rewrite(tiny_checkpoint, tmp_path / "c", lambda t: t.update(
        {"transformer.ln_f.bias": torch.zeros(63)}))
    with pytest.raises(CheckpointError, match=r"ln_f\.bias expected \[64\], got \[63\]"):
        load_gpt2_weights(folder)
    config = {**read_gpt2_config(tiny_checkpoint), "max_sequence_length": 1024}
    expected = r"wpe\.weight expected \[1024, 64\], got \[128, 64\]"
    with pytest.raises(CheckpointError, match=expected):
        load_gpt2_weights(tiny_checkpoint, config)


def test_unexpected_tensors_are_named(tiny_checkpoint, tmp_path):
    folder = rewrite(tiny_checkpoint, tmp_path / "c", lambda t: t.update({
        "transformer.h.2.ln_1.weight": torch.zeros(64), "score.weight": torch.zeros(2, 64)}))
    with pytest.raises(CheckpointError,
                       match=r"2 unexpected tensors: h\.2\.ln_1\.weight, score\.weight"):
        load_gpt2_weights(folder)


def test_duplicate_names_and_integer_weights(tiny_checkpoint, tmp_path):
    folder = rewrite(tiny_checkpoint, tmp_path / "dup", lambda t: t.update(
        {"wte.weight": t["transformer.wte.weight"].clone()}))
    with pytest.raises(CheckpointError, match="'wte.weight' appears twice"):
        load_gpt2_weights(folder)
    folder = rewrite(tiny_checkpoint, tmp_path / "int", lambda t: t.update(
        {"transformer.ln_f.bias": torch.zeros(64, dtype=torch.int32)}))
    with pytest.raises(CheckpointError, match="ln_f.bias is int32"):
        load_gpt2_weights(folder)


def test_pickled_checkpoints_are_refused_without_unpickling(tiny_checkpoint, tmp_path,
                                                            monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.setattr(torch, "load", never)
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_checkpoint / "config.json").read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    with pytest.raises(CheckpointError, match="refusing to load pickled checkpoint .*"
                       "pytorch_model.bin.*convert it to model.safetensors"):
        load_gpt2_weights(folder)
    for name in ("model.pt", "model.ckpt", "pytorch_model.bin"):
        (folder / name).write_bytes(b"PK\x03\x04")
        with pytest.raises(CheckpointError, match=f"refusing to load pickled checkpoint .*{name}"):
            load_gpt2_weights(folder / name)
    (folder / "model.safetensors").write_bytes(b"\x80\x04 a pickle under the wrong name")
    with pytest.raises(SafetensorsError, match="is not a safetensors file"):
        load_gpt2_weights(folder)


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(BASE_CONFIG))
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_gpt2_weights(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gpt2_weights(tmp_path / "nothing.safetensors")


def test_user_defined_sizes_load(tmp_path):
    """n_inner and the tanh GELU variants come through to intermediate_dim and the shapes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    hf = GPT2Config(vocab_size=300, n_layer=1, n_head=2, n_embd=16, n_positions=32,
                    n_inner=40, activation_function="gelu_pytorch_tanh")
    model = GPT2LMHeadModel(hf).eval()
    model.save_pretrained(tmp_path)
    config = read_gpt2_config(tmp_path)
    assert config["intermediate_dim"] == 40
    weights = load_gpt2_weights(tmp_path, config)
    assert_matches_transformers(weights, model.state_dict(), config, "float32")


def test_io_imports_no_numpy():
    """The io package must run in a Pyodide without numpy."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['numpy'] = None; import webgpt2.io, webgpt2.io.hub; "
            "assert 'numpy' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
