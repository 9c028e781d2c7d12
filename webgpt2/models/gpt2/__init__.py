"""GPT-2: backbone, causal LM, tokenizer, preprocessors and presets."""

from webgpt2.models.gpt2.gpt2_backbone import GPT2Backbone
from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM
from webgpt2.models.gpt2.gpt2_checkpoint import gpt2_weight_shapes, load_gpt2_weights

__all__ = ["GPT2Backbone", "GPT2CausalLM", "gpt2_weight_shapes", "load_gpt2_weights"]
