"""GPT-2's pre-norm decoder block with cached causal self-attention."""

from __future__ import annotations

from typing import Any

from webgpt2.backends import Backend
from webgpt2.layers.dense import Dense
from webgpt2.layers.layer import Layer
from webgpt2.layers.layer_norm import LayerNorm


class CachedMultiHeadAttention(Layer):
    """c_attn -> attention through the KV cache -> c_proj (+ the residual, fused)."""

    def __init__(self, num_heads: int, hidden_dim: int, layer_index: int,
                 backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}"
            )
        self.num_heads, self.hidden_dim, self.layer_index = num_heads, hidden_dim, layer_index
        self.c_attn = Dense(hidden_dim, 3 * hidden_dim, backend=backend)
        self.c_proj = Dense(hidden_dim, hidden_dim, backend=backend)

    def children(self) -> dict[str, Layer]:
        return {"c_attn": self.c_attn, "c_proj": self.c_proj}

    def __call__(self, x: Any, residual: Any, cache: Any, cache_update_index: int,
                 last_position_only: bool = False) -> Any:
        """[B, S, H] -> [B, S, H], or [B, 1, H] for the last position only (the cache still
        gets every position's keys and values)."""
        b = self.backend
        qkv = self.c_attn(x)  # [B, S, 3H]
        attended = b.cached_attention(qkv, cache, self.layer_index, cache_update_index,
                                      self.num_heads, last_position_only)
        b.release(qkv)
        if last_position_only:  # attended is [B, 1, H]
            residual = b.select_position(residual, b.shape(residual)[1] - 1)
        out = self.c_proj(attended, residual=residual)
        b.release(attended)
        return out


class TransformerDecoder(Layer):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)); the MLP is c_fc (tanh-GELU) then c_proj.

    Named like Hugging Face's `h.N` blocks so checkpoints load by name.
    """

    def __init__(self, num_heads: int, hidden_dim: int, intermediate_dim: int,
                 layer_index: int, layer_norm_epsilon: float = 1e-5,
                 backend: Backend | str | None = None) -> None:
        super().__init__(backend)
        self.ln_1 = LayerNorm(hidden_dim, layer_norm_epsilon, backend=backend)
        self.attn = CachedMultiHeadAttention(num_heads, hidden_dim, layer_index,
                                             backend=backend)
        self.ln_2 = LayerNorm(hidden_dim, layer_norm_epsilon, backend=backend)
        self.mlp_c_fc = Dense(hidden_dim, intermediate_dim, activation="gelu",
                              backend=backend)
        self.mlp_c_proj = Dense(intermediate_dim, hidden_dim, backend=backend)

    def children(self) -> dict[str, Layer]:
        return {"ln_1": self.ln_1, "attn": self.attn, "ln_2": self.ln_2,
                "mlp.c_fc": self.mlp_c_fc, "mlp.c_proj": self.mlp_c_proj}

    def __call__(self, x: Any, cache: Any, cache_update_index: int,
                 last_position_only: bool = False) -> Any:
        """x [B, S, H] -> [B, S, H] ([B, 1, H] with last_position_only, for a prefill whose
        other positions only matter through the cache); writes this step's keys and values
        into `cache`."""
        b = self.backend
        normed = self.ln_1(x)
        x = self.attn(normed, x, cache, cache_update_index, last_position_only)
        b.release(normed)
        normed = self.ln_2(x)
        inner = self.mlp_c_fc(normed)  # [B, S, intermediate]
        b.release(normed)
        out = self.mlp_c_proj(inner, residual=x)
        b.release(inner)
        b.release(x)
        return out
