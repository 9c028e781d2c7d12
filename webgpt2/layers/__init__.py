"""Layers written once against the backend interface (no numpy, wgpu or js here)."""

from webgpt2.layers.dense import Dense
from webgpt2.layers.embedding import PositionEmbedding, TokenEmbedding
from webgpt2.layers.layer import Layer
from webgpt2.layers.layer_norm import LayerNorm
from webgpt2.layers.reverse_embedding import ReverseEmbedding
from webgpt2.layers.transformer_decoder import CachedMultiHeadAttention, TransformerDecoder

__all__ = [
    "CachedMultiHeadAttention",
    "Dense",
    "Layer",
    "LayerNorm",
    "PositionEmbedding",
    "ReverseEmbedding",
    "TokenEmbedding",
    "TransformerDecoder",
]
