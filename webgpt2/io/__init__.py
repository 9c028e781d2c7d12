"""Checkpoint input and output with the standard library only (no numpy: runs in Pyodide).

- `read_safetensors` / `write_safetensors`: the safetensors format, zero-copy on read.
- `read_gpt2_config` / `read_checkpoint_weights`: Hugging Face GPT-2 checkpoints to backbone
  arguments and canonically named HostTensors (checked by the model:
  `webgpt2.models.gpt2.load_gpt2_weights`).
- `resolve_checkpoint`: a local folder, a folder URL or a hub id to a local (cached) folder.
- `ProgressBar`: the progress line shown for downloads and weight loading.

Example:
    >>> import webgpt2.io as wio
    >>> wio.gpt2_config_from_dict({"n_layer": 12})["hidden_dim"]
    768
"""

from webgpt2.io.checkpoint import (
    CheckpointError,
    find_weight_files,
    gpt2_config_from_dict,
    missing_checkpoint_files,
    read_checkpoint_weights,
    read_gpt2_config,
)
from webgpt2.io.hub import DownloadError, cache_root, resolve_checkpoint
from webgpt2.io.progress import ProgressBar
from webgpt2.io.safetensors import SafetensorsError, read_safetensors, write_safetensors

__all__ = [
    "CheckpointError",
    "DownloadError",
    "ProgressBar",
    "SafetensorsError",
    "cache_root",
    "find_weight_files",
    "gpt2_config_from_dict",
    "missing_checkpoint_files",
    "read_checkpoint_weights",
    "read_gpt2_config",
    "read_safetensors",
    "resolve_checkpoint",
    "write_safetensors",
]
