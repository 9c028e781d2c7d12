"""GPT-2's weights from a Hugging Face checkpoint, checked against the backbone's own schema.

io reads and canonicalises the tensors; the names and shapes a config needs come from
`GPT2Backbone.expected_weights()` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webgpt2.backends import HostTensor
from webgpt2.io.checkpoint import (
    CheckpointError,
    Progress,
    WeightSource,
    checkpoint_folder,
    read_checkpoint_weights,
    read_gpt2_config,
)
from webgpt2.models.gpt2.gpt2_backbone import GPT2Backbone

_BACKBONE_ARGUMENTS = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
                       "intermediate_dim", "max_sequence_length", "layer_norm_epsilon")


def _schema(config: Mapping[str, Any]) -> GPT2Backbone:
    """A backbone with no weights (and no backend started) for a config's schema. Shapes do
    not depend on the number of heads, so a config may leave it out."""
    args = {k: config[k] for k in _BACKBONE_ARGUMENTS if k in config}
    args.setdefault("num_heads", 1)
    return GPT2Backbone(**args)


def gpt2_weight_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Canonical weight name -> shape for backbone arguments, in model order
    (`GPT2Backbone.expected_weights`).

    Example:
        >>> cfg = {"vocabulary_size": 10, "num_layers": 1, "hidden_dim": 4,
        ...        "intermediate_dim": 16, "max_sequence_length": 8}
        >>> shapes = gpt2_weight_shapes(cfg)
        >>> len(shapes), shapes["h.0.attn.c_attn.weight"], shapes["h.0.mlp.c_proj.weight"]
        (16, (4, 12), (16, 4))
    """
    return _schema(config).expected_weights()


def load_gpt2_weights(source: WeightSource, config: Mapping[str, Any] | None = None, *,
                      progress: Progress | None = None) -> dict[str, HostTensor]:
    """GPT-2's weights under canonical names, checked against the config's schema.

    source: a checkpoint folder, a model.safetensors file, a model.safetensors.index.json
    (sharded), or a safetensors file's bytes (then config is needed). config: the backbone
    arguments (`read_gpt2_config`); None reads config.json beside the weights. progress:
    called with (bytes done, total bytes) as the files are read.

    Returns {canonical name: HostTensor} in model order: float32, float16 or bfloat16 as
    stored, sharing the file's memory. Raises CheckpointError naming missing, extra or
    mis-shaped tensors, and for pickled checkpoints.

    Example:
        >>> import math, os, tempfile
        >>> from webgpt2.io.safetensors import write_safetensors
        >>> cfg = {"vocabulary_size": 3, "num_layers": 1, "num_heads": 1, "hidden_dim": 2,
        ...        "intermediate_dim": 8, "max_sequence_length": 4}
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> write_safetensors(path, {  # transformers 5 names, in any order
        ...     "transformer." + name: HostTensor("float32", shape, bytes(4 * math.prod(shape)))
        ...     for name, shape in reversed(gpt2_weight_shapes(cfg).items())})
        >>> names = list(load_gpt2_weights(path, cfg))
        >>> len(names), names[:3]
        (16, ['wte.weight', 'wpe.weight', 'h.0.ln_1.weight'])
    """
    folder = checkpoint_folder(source)
    if config is None and folder is None:
        raise CheckpointError("weights given as bytes need a config: pass config=")
    found = read_checkpoint_weights(source, progress=progress)
    return _schema(config or read_gpt2_config(folder)).check_weights(found)
