"""Hugging Face GPT-2 checkpoints: config.json to backbone arguments, safetensors to weights.

This module only reads and canonicalises: which names and shapes a model needs is the
model's own (`GPT2Backbone.expected_weights`), and `GPT2Backbone.check_weights` checks them.

Weights come back under one canonical set of names whatever the file's style (the hub's bare
`h.0.attn.c_attn.weight`, transformers 5's `transformer.h.0.attn.c_attn.weight`), in the
layout Hugging Face stores them: `Conv1D` weights are [in, out] (y = x @ W + b); the backend
chooses its own layout at upload. The causal-mask buffers (`attn.bias`, `attn.masked_bias`)
and the tied `lm_head.weight` are skipped without being decoded. Pickled checkpoints
(`pytorch_model.bin`, `*.pt`, `*.ckpt`) are refused, never unpickled.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from webgpt2.backends.base import HostTensor
from webgpt2.io.jsonsafe import excerpt, loads
from webgpt2.io.safetensors import read_safetensors

__all__ = [
    "CheckpointError",
    "find_weight_files",
    "gpt2_config_from_dict",
    "checkpoint_folder",
    "missing_checkpoint_files",
    "pickle_refusal",
    "read_checkpoint_weights",
    "read_gpt2_config",
    "shard_names",
]

Progress = Callable[[int, int], None]
WeightSource = str | os.PathLike | bytes | bytearray | memoryview

SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# GPT2Config's defaults, for keys a config.json leaves out (as transformers fills them).
_DEFAULTS = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
}
# Options GPT2Config has that change the computation in ways this runtime does not implement,
# with the value the runtime assumes.
_UNSUPPORTED = {
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": True,
    "add_cross_attention": False,
    "scale_attn_weights": True,
}
# Far above any GPT-2 (XL: 48 layers, 1600 wide, 25 heads); a guard against garbage sizes
# that would otherwise reach an allocation.
_MAXIMA = {"n_layer": 1024, "n_head": 1024, "n_embd": 1 << 16, "n_inner": 1 << 18,
           "n_positions": 1 << 20, "vocab_size": 1 << 24}
_IGNORED = re.compile(r"^(?:transformer\.)?h\.\d+\.attn\.(?:bias|masked_bias)$|^lm_head\.weight$")
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint folder, config or weight set that this runtime cannot load."""


def gpt2_config_from_dict(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone's keyword arguments from a parsed Hugging Face GPT-2 config.json.

    Returns vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim (n_inner,
    or 4 * n_embd when null), max_sequence_length, layer_norm_epsilon and dropout
    (resid_pdrop; unused at inference). Raises CheckpointError for a model or an option the
    runtime does not implement.

    Example:
        >>> cfg = gpt2_config_from_dict({"model_type": "gpt2", "n_layer": 2, "n_head": 4,
        ...                              "n_embd": 64, "n_positions": 128})
        >>> cfg["hidden_dim"], cfg["intermediate_dim"], cfg["num_layers"]
        (64, 256, 2)
    """
    if not isinstance(hf_config, Mapping):
        raise CheckpointError(f"the config is {excerpt(hf_config)}; expected a JSON object")
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise CheckpointError(
            f"model_type is {excerpt(model_type)}; this runtime loads 'gpt2' only")
    activation = hf_config.get("activation_function", _DEFAULTS["activation_function"])
    if not isinstance(activation, str) or activation not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"activation_function is {excerpt(activation)}; this runtime implements the tanh "
            f"GELU only ({', '.join(SUPPORTED_ACTIVATIONS)})"
        )
    for key, assumed in _UNSUPPORTED.items():
        value = hf_config.get(key, assumed)
        if value is not None and value != assumed:
            raise CheckpointError(
                f"{key} is {excerpt(value)}; this runtime implements GPT-2 with "
                f"{key}={assumed} only"
            )

    def integer(key: str, value: Any = None) -> int:
        value = hf_config.get(key, _DEFAULTS[key]) if value is None else value
        # bool is an int, and 12.0 is not a layer count: both are refused, not rounded.
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{key} is {excerpt(value)}; expected a positive integer")
        if value > _MAXIMA[key]:
            raise CheckpointError(f"{key} is {value}; the runtime allows at most {_MAXIMA[key]}")
        return value

    hidden = integer("n_embd")
    heads = integer("n_head")
    if hidden % heads:
        raise CheckpointError(f"n_embd {hidden} is not divisible by n_head {heads}")
    n_inner = hf_config.get("n_inner")
    epsilon = _number(hf_config, "layer_norm_epsilon")
    if epsilon <= 0:
        raise CheckpointError(f"layer_norm_epsilon is {epsilon!r}; expected a positive number")
    dropout = _number(hf_config, "resid_pdrop", optional=True)
    if not 0 <= dropout <= 1:
        raise CheckpointError(f"resid_pdrop is {dropout!r}; expected a probability in [0, 1]")
    return {
        "vocabulary_size": integer("vocab_size"),
        "num_layers": integer("n_layer"),
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": 4 * hidden if n_inner is None else integer("n_inner", n_inner),
        "max_sequence_length": integer("n_positions"),
        "layer_norm_epsilon": epsilon,
        "dropout": dropout,
    }


def _number(hf_config: Mapping[str, Any], key: str, optional: bool = False) -> float:
    """A finite float from the config (its default when absent; 0.0 when optional and null)."""
    value = hf_config.get(key, _DEFAULTS[key])
    if value is None and optional:
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise CheckpointError(f"{key} is {excerpt(value)}; expected a finite number")


def read_gpt2_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The backbone's keyword arguments from a checkpoint folder's config.json.

    folder: the checkpoint folder, or the config.json file itself. See
    `gpt2_config_from_dict` for what is returned and refused.

    Example:
        >>> import json, os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> with open(os.path.join(d, "config.json"), "w") as f:
        ...     json.dump({"model_type": "gpt2", "n_layer": 12, "n_head": 12}, f)
        >>> read_gpt2_config(d)["max_sequence_length"]
        1024
    """
    path = Path(folder)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; a GPT-2 checkpoint folder holds config.json, "
            "model.safetensors, vocab.json and merges.txt"
        )
    hf_config = loads(path.read_bytes(), str(path), error=CheckpointError)
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(hf_config).__name__}; expected an object")
    try:
        return gpt2_config_from_dict(hf_config)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def find_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files of a checkpoint folder: model.safetensors, or the shards its
    model.safetensors.index.json names. Refuses a folder that has pickled weights only.

    Example:
        >>> import tempfile
        >>> find_weight_files(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        webgpt2.io.checkpoint.CheckpointError: ... has no model.safetensors ...
    """
    folder = Path(folder)
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    if (folder / INDEX_FILE).is_file():
        shards = shard_names(folder / INDEX_FILE)
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder / INDEX_FILE} names {len(shards)} shards; missing: {', '.join(missing)}"
            )
        return [folder / name for name in shards]
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES)) \
        if folder.is_dir() else []
    if pickles:
        raise CheckpointError(pickle_refusal(folder / pickles[0]))
    raise CheckpointError(
        f"{folder} has no {SINGLE_FILE} (nor {INDEX_FILE} with its shards); expected a "
        "Hugging Face GPT-2 checkpoint folder"
    )


def missing_checkpoint_files(folder: str | os.PathLike) -> list[str]:
    """What a checkpoint folder lacks, in words ([] when complete): config.json, the
    safetensors weights (single or sharded), and vocab.json + merges.txt or tokenizer.json.
    Raises CheckpointError when the weights exist only as a pickle.

    Example:
        >>> import tempfile
        >>> missing_checkpoint_files(tempfile.mkdtemp())[0]
        'config.json'
    """
    folder = Path(folder)
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if (folder / SINGLE_FILE).is_file():
        pass
    elif (folder / INDEX_FILE).is_file():
        missing += [f"{name} (a shard named by {INDEX_FILE})" for name in shard_names(
            folder / INDEX_FILE) if not (folder / name).is_file()]
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(pickle_refusal(folder / pickles[0]))
        missing.append(f"{SINGLE_FILE} (or {INDEX_FILE} with its shards)")
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not has_bpe and not (folder / "tokenizer.json").is_file():
        missing.append("vocab.json + merges.txt (or tokenizer.json)")
    return missing


def shard_names(index_path: str | os.PathLike, text: str | None = None) -> list[str]:
    """The distinct shard file names of a model.safetensors.index.json, in first-use order.

    text: the index's contents when already read (a download); else read from index_path.
    Names must be plain file names ending in .safetensors (no folders, nothing hidden).

    Example:
        >>> shard_names("index.json", '{"weight_map": {"a": "m-1.safetensors", '
        ...             '"b": "m-2.safetensors", "c": "m-1.safetensors"}}')
        ['m-1.safetensors', 'm-2.safetensors']
    """
    index = loads(Path(index_path).read_bytes() if text is None else text, str(index_path),
                  error=CheckpointError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no weight_map object; expected "
                              '{"weight_map": {tensor name: shard file}}')
    names: list[str] = []
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard):
            raise CheckpointError(
                f"{index_path}: tensor {excerpt(tensor)} maps to shard {excerpt(shard)}; "
                "expected a plain "
                "file name ending in .safetensors"
            )
        if shard not in names:
            names.append(shard)
    return names


def pickle_refusal(path: str | os.PathLike) -> str:
    """The message for a checkpoint that exists only as a pickle.

    Example:
        >>> pickle_refusal("gpt2/pytorch_model.bin").split(":")[0]
        'refusing to load pickled checkpoint gpt2/pytorch_model.bin'
    """
    return (
        f"refusing to load pickled checkpoint {path}: unpickling can run arbitrary code; "
        "convert it to model.safetensors (transformers: "
        "`GPT2LMHeadModel.from_pretrained(folder).save_pretrained(folder)`)"
    )


def checkpoint_folder(source: WeightSource) -> Path | None:
    """The folder whose config.json goes with a weight source (None for bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    path = Path(source)
    return path if path.is_dir() else path.parent


def read_checkpoint_weights(source: WeightSource, *,
                            progress: Progress | None = None) -> dict[str, HostTensor]:
    """Every tensor of a checkpoint under its canonical name, as stored (not yet checked
    against a model: `GPT2Backbone.check_weights` does that).

    source: a checkpoint folder, a model.safetensors file, a model.safetensors.index.json
    (sharded), or a safetensors file's bytes. progress: called with (bytes done, total
    bytes) as the files are read. Returns {name: HostTensor}, float32, float16 or bfloat16
    as stored, sharing the file's memory; names lose transformers 5's `transformer.` prefix,
    and the causal-mask buffers and the tied `lm_head.weight` are skipped. Raises
    CheckpointError for a name that appears twice and for pickled checkpoints.

    Example:
        >>> import os, tempfile
        >>> from webgpt2.io.safetensors import write_safetensors
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> write_safetensors(path, {
        ...     "transformer.wte.weight": HostTensor("float32", (3, 2), bytes(24)),
        ...     "h.0.attn.bias": HostTensor("float32", (1, 1, 2, 2), bytes(16))})
        >>> list(read_checkpoint_weights(path))
        ['wte.weight']
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        files: list[Any] = [source]
        sizes = [memoryview(source).nbytes]
    else:
        path = Path(source)
        if path.is_dir():
            files = find_weight_files(path)
        elif path.name.endswith(PICKLE_SUFFIXES):
            raise CheckpointError(pickle_refusal(path))
        elif path.name.endswith(".index.json"):
            files = [path.parent / name for name in shard_names(path)]
        elif path.is_file():
            files = [path]
        else:
            raise CheckpointError(f"{path} does not exist; expected a checkpoint folder or "
                                  "a .safetensors file")
        sizes = [os.path.getsize(f) for f in files]
    total, base = sum(sizes), 0
    found: dict[str, HostTensor] = {}
    origin: dict[str, str] = {}
    for file, size in zip(files, sizes):
        label = "<bytes>" if isinstance(file, (bytes, bytearray, memoryview)) else str(file)
        report = None if progress is None else (lambda d, _t, b=base: progress(b + d, total))
        try:
            tensors = read_safetensors(file, skip=_IGNORED.match, progress=report)
        except FileNotFoundError:
            raise CheckpointError(f"{file} does not exist (named by the shard index)") from None
        for name, tensor in tensors.items():
            canonical = name.removeprefix("transformer.")
            if canonical in found:
                raise CheckpointError(
                    f"tensor {canonical!r} appears twice: as {origin[canonical]} and as "
                    f"{name!r} in {label}"
                )
            found[canonical] = tensor
            origin[canonical] = f"{name!r} in {label}"
        base += size
    return found
