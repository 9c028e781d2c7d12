"""GPT-2 presets, KerasHub's names, as data: where each checkpoint lives and what it is.

A preset names either a Hugging Face hub id (downloaded and cached by
`webgpt2.io.resolve_checkpoint`) or a folder shipped inside this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["GPT2_PRESETS", "resolve_preset"]

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the `webgpt2` folder

# Parameter counts are the backbone's (the LM head is tied to the token embedding):
# V*H + P*H + L*(12*H*H + 13*H) + 2*H.
GPT2_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2_base_en": {
        "hub_id": "openai-community/gpt2",
        "description": "12-layer GPT-2 model where case is maintained. Trained on WebText.",
        "params": 124_439_808,
        "config": {"vocabulary_size": 50257, "num_layers": 12, "num_heads": 12,
                   "hidden_dim": 768, "intermediate_dim": 3072, "max_sequence_length": 1024},
    },
    "gpt2_medium_en": {
        "hub_id": "openai-community/gpt2-medium",
        "description": "24-layer GPT-2 model where case is maintained. Trained on WebText.",
        "params": 354_823_168,
        "config": {"vocabulary_size": 50257, "num_layers": 24, "num_heads": 16,
                   "hidden_dim": 1024, "intermediate_dim": 4096, "max_sequence_length": 1024},
    },
    "gpt2_large_en": {
        "hub_id": "openai-community/gpt2-large",
        "description": "36-layer GPT-2 model where case is maintained. Trained on WebText.",
        "params": 774_030_080,
        "config": {"vocabulary_size": 50257, "num_layers": 36, "num_heads": 20,
                   "hidden_dim": 1280, "intermediate_dim": 5120, "max_sequence_length": 1024},
    },
    "gpt2_extra_large_en": {
        "hub_id": "openai-community/gpt2-xl",
        "description": "48-layer GPT-2 model where case is maintained. Trained on WebText.",
        "params": 1_557_611_200,
        "config": {"vocabulary_size": 50257, "num_layers": 48, "num_heads": 25,
                   "hidden_dim": 1600, "intermediate_dim": 6400, "max_sequence_length": 1024},
    },
    "gpt2_shakespeare_en": {
        # Trained for this project and shipped in the package; its config.json says its size.
        "package_path": "assets/gpt2_shakespeare",
        "description": "Small GPT-2 trained on Shakespeare's plays, shipped with webgpt2.",
        "params": None,
        "config": None,
    },
}


def resolve_preset(name: str) -> str | Path:
    """Where a preset's checkpoint lives: a hub id (str) or a folder in the package (Path).

    Raises ValueError naming the unknown preset and listing the known ones.

    Example:
        >>> resolve_preset("gpt2_base_en")
        'openai-community/gpt2'
        >>> resolve_preset("gpt2_shakespeare_en").name
        'gpt2_shakespeare'
    """
    preset = GPT2_PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(GPT2_PRESETS)}")
    if "package_path" in preset:
        return _PACKAGE_ROOT / preset["package_path"]
    return preset["hub_id"]
