"""Every JSON the loader reads is depth-checked before parsing, quoted values are cut short,
and config.json's sizes are sane: clean errors, never a RecursionError or a huge message."""

from __future__ import annotations

import json
import struct

import pytest

from webgpt2.io import CheckpointError, SafetensorsError, read_gpt2_config, read_safetensors
from webgpt2.io.checkpoint import gpt2_config_from_dict, shard_names
from webgpt2.models.gpt2.gpt2_checkpoint import load_gpt2_weights
from webgpt2.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
from webgpt2.tokenizers import BytePairTokenizer, TokenizerError

DEEP = "[" * 10_000 + "]" * 10_000
VOCAB = {"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}


def safetensors_with_header(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def test_deep_safetensors_header_is_a_clean_error():
    data = safetensors_with_header(b'{"a": ' + DEEP.encode() + b"}")
    with pytest.raises(SafetensorsError, match="nested deeper than 64 levels"):
        read_safetensors(data)


def test_deep_json_files_are_clean_errors(tmp_path):
    (tmp_path / "config.json").write_text('{"n_layer": ' + DEEP + "}")
    with pytest.raises(CheckpointError, match="config.json: JSON nested deeper"):
        read_gpt2_config(tmp_path)
    with pytest.raises(CheckpointError, match="nested deeper"):
        shard_names("index.json", '{"weight_map": ' + DEEP + "}")
    (tmp_path / "vocab.json").write_text('{"a": ' + DEEP + "}")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerError, match="vocab.json: JSON nested deeper"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").unlink()
    (tmp_path / "tokenizer.json").write_text('{"model": ' + DEEP + "}")
    with pytest.raises(TokenizerError, match="tokenizer.json: JSON nested deeper"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def test_brackets_inside_strings_do_not_count(tmp_path):
    vocab = {**VOCAB, "[" * 200: 4, "{" * 200: 5}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    assert GPT2Tokenizer.from_pretrained(tmp_path, use_fast=False).vocabulary_size() == 6


def test_error_messages_quote_bad_values_cut_short():
    name = "n" * 5_000_000
    header = json.dumps({name: {"dtype": "F32", "shape": "x" * 5_000_000,
                                "data_offsets": [0, 0]}}).encode()
    with pytest.raises(SafetensorsError) as info:
        read_safetensors(safetensors_with_header(header))
    assert len(str(info.value)) < 400
    with pytest.raises(CheckpointError) as info:
        gpt2_config_from_dict({"model_type": "x" * 1_000_000})
    assert len(str(info.value)) < 300
    with pytest.raises(TokenizerError) as info:
        BytePairTokenizer(VOCAB, ["a b " * 100_000])
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("key,value,message", [
    ("n_layer", 0, "expected a positive integer"),
    ("n_layer", True, "expected a positive integer"),
    ("n_layer", 2.0, "expected a positive integer"),
    ("n_layer", "2", "expected a positive integer"),
    ("n_embd", 10**9, "at most 65536"),
    ("n_positions", 10**12, "at most"),
    ("vocab_size", 1 << 30, "at most"),
    ("n_inner", -4, "expected a positive integer"),
    ("n_head", 5, "not divisible by n_head 5"),
    ("layer_norm_epsilon", float("nan"), "expected a finite number"),
    ("layer_norm_epsilon", float("inf"), "expected a finite number"),
    ("layer_norm_epsilon", 10**400, "expected a finite number"),
    ("layer_norm_epsilon", -1e-5, "expected a positive number"),
    ("layer_norm_epsilon", "1e-5", "expected a finite number"),
    ("resid_pdrop", "x", "expected a finite number"),
    ("scale_attn_weights", "no", "scale_attn_weights=True only"),
])
def test_config_sizes_are_checked(key, value, message):
    config = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 64, key: value}
    with pytest.raises(CheckpointError, match=message):
        gpt2_config_from_dict(config)


def test_nan_in_config_json_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"layer_norm_epsilon": NaN}')
    with pytest.raises(CheckpointError, match="NaN is not a JSON value"):
        read_gpt2_config(tmp_path)


def test_a_config_that_disagrees_with_the_weights_fails_before_allocation(tiny_checkpoint):
    config = read_gpt2_config(tiny_checkpoint)
    for change in ({"num_layers": 1000}, {"hidden_dim": 4096, "num_heads": 4},
                   {"vocabulary_size": 1 << 24}, {"max_sequence_length": 1 << 20}):
        with pytest.raises(CheckpointError, match="do not match the GPT-2 config"):
            load_gpt2_weights(tiny_checkpoint, {**config, **change})


@pytest.mark.parametrize("vocabulary,merges,message", [
    ({"a": -1}, [], "has id -1"),
    ({"a": True}, [], "has id True"),
    ({"a": 1.0}, [], "has id 1.0"),
    ({"a": 1 << 40}, [], "expected an integer from 0"),
    ({"a": "0"}, [], "has id '0'"),
    (VOCAB, ["a"], "a merge must be two tokens"),
    (VOCAB, [["a", 1]], "a merge must be two tokens"),
    (VOCAB, [5], "a merge must be two tokens"),
    ({"a": 0, "b": 1}, ["a b"], "uses token 'ab', which is not in the vocabulary"),
    ({"a": 0, "ab": 1}, ["a b"], "uses token 'b'"),
])
def test_vocabulary_and_merges_are_checked(vocabulary, merges, message):
    # With Hugging Face tokenizers present, an unknown merge token used to panic in Rust.
    with pytest.raises(TokenizerError, match=message):
        BytePairTokenizer(vocabulary, merges)


def test_tokenizer_files_give_clean_errors(tmp_path):
    (tmp_path / "vocab.json").write_bytes(b'{"a": 0, "\xff": 1}')
    (tmp_path / "merges.txt").write_bytes(b"a b\n")
    with pytest.raises(TokenizerError, match="vocab.json is not UTF-8 text"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    (tmp_path / "merges.txt").write_bytes(b"a b\n\xfe\xff\n")
    with pytest.raises(TokenizerError, match="merges.txt is not UTF-8 text"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="expected a JSON object"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").unlink()
    for spec, message in [([1], "does not hold a BPE model"),
                          ({"model": {"vocab": []}}, "does not hold a BPE model"),
                          ({"model": {"vocab": VOCAB}, "added_tokens": [5]}, "added token 5"),
                          ({"model": {"vocab": VOCAB}, "added_tokens": {"a": 1}}, "a list"),
                          ({"model": {"vocab": VOCAB, "merges": "a b"}}, "expected a list"),
                          ({"model": {"vocab": VOCAB, "merges": ["a"]}}, "merge must be")]:
        (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
        with pytest.raises(TokenizerError, match=message):
            GPT2Tokenizer.from_pretrained(tmp_path)
