"""The transformer encoder layer (the AST audio tower, the BERT text tower) and its helpers.

Parameters carry logical axis names (`embed`, `heads`, `kv`, `mlp`, `norm`);
`configs/mesh/*.gin` maps them to mesh axes.  Parameter names follow the checkpoints
we convert from (HF BERT / AST) closely enough that `mulan/pretrained.py` is a table.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers.attention import INIT, Dtype, MultiHeadAttention


def dense(features: int, axes: tuple[str | None, str | None], name: str, *, dtype=jnp.float32,
          use_bias: bool = True, kernel_init: Callable = INIT) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def layer_norm(name: str, eps: float = 1e-12, dtype=jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class TransformerBlock(nn.Module):
    """One encoder layer.  `pre_norm=True`: ViT/AST order; False: BERT's post-LayerNorm order.

    x: [batch, length, embed] -> same shape.
    """

    num_heads: int
    head_dim: int
    mlp_dim: int
    pre_norm: bool
    dropout_rate: float = 0.0
    layer_norm_eps: float = 1e-12
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool) -> jax.Array:
        embed = x.shape[-1]
        drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        attn = MultiHeadAttention(self.num_heads, self.head_dim, self.dropout_rate, self.dtype, name="attention")
        mlp_in = dense(self.mlp_dim, ("embed", "mlp"), "mlp_in", dtype=self.dtype)
        mlp_out = dense(embed, ("mlp", "embed"), "mlp_out", dtype=self.dtype)

        def mlp(y):
            h = nn.gelu(mlp_in(y), approximate=False)
            h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
            return mlp_out(h)

        ln_attn = layer_norm("ln_attn", self.layer_norm_eps, self.dtype)
        ln_mlp = layer_norm("ln_mlp", self.layer_norm_eps, self.dtype)
        if self.pre_norm:
            x = x + drop(attn(ln_attn(x), mask, deterministic))
            x = x + drop(mlp(ln_mlp(x)))
        else:
            x = ln_attn(x + drop(attn(x, mask, deterministic)))
            x = ln_mlp(x + drop(mlp(x)))
        return nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
