"""GPT-2: backbone, causal LM, tokenizer, preprocessors and presets."""

from webgpt2.models.gpt2.gpt2_backbone import GPT2Backbone
from webgpt2.models.gpt2.gpt2_causal_lm import GPT2CausalLM

__all__ = ["GPT2Backbone", "GPT2CausalLM"]
