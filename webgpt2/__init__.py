"""webgpt2: GPT-2 causal language modelling in Python, on NumPy, WebGPU and in the browser.

Example:
    >>> import webgpt2
    >>> lm = webgpt2.GPT2CausalLM.from_preset("gpt2_shakespeare_en")
    >>> isinstance(lm.generate("ROMEO:", max_new_tokens=4), str)
    True
"""

from webgpt2.backends import (
    Backend,
    BackendError,
    HostTensor,
    available_backends,
    backend_status,
    get_backend,
    set_backend,
)

__version__ = "0.1.0"

_LAZY = {
    "GPT2Backbone": "webgpt2.models.gpt2.gpt2_backbone",
    "GPT2CausalLM": "webgpt2.models.gpt2.gpt2_causal_lm",
    "GPT2Tokenizer": "webgpt2.models.gpt2.gpt2_tokenizer",
    "GPT2Preprocessor": "webgpt2.models.gpt2.gpt2_preprocessor",
    "GPT2CausalLMPreprocessor": "webgpt2.models.gpt2.gpt2_causal_lm_preprocessor",
    "ReverseEmbedding": "webgpt2.layers.reverse_embedding",
    "GenerationConfig": "webgpt2.generation.config",
    "GreedySampler": "webgpt2.generation.samplers",
    "RandomSampler": "webgpt2.generation.samplers",
    "TopKSampler": "webgpt2.generation.samplers",
    "TopPSampler": "webgpt2.generation.samplers",
    "get_sampler": "webgpt2.generation.samplers",
    "sampler_from_config": "webgpt2.generation.config",
    "TextStreamer": "webgpt2.generation.streamers",
}

__all__ = [
    "Backend",
    "BackendError",
    "HostTensor",
    "__version__",
    "available_backends",
    "backend_status",
    "get_backend",
    "set_backend",
    *_LAZY,
]


def __getattr__(name: str):
    # Models load lazily so `import webgpt2` stays cheap (it matters in Pyodide).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'webgpt2' has no attribute {name!r}")
