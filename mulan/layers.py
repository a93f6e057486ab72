"""Transformer building blocks shared by the AST audio tower and the BERT text tower.

Parameters carry logical axis names (`embed`, `heads`, `kv`, `mlp`, `vocab`);
`configs/mesh/*.gin` maps them to mesh axes.  Attention projections keep the
head axis explicit (`[embed, heads, head_dim]`), so tensor parallelism splits
heads without reshapes.  Parameter names follow the checkpoints we convert from
(HF BERT / AST) closely enough that `mulan/convert.py` is a table.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype
INIT = nn.initializers.truncated_normal(0.02)


def dense(features: int, axes: tuple[str | None, str | None], name: str, *, dtype=jnp.float32,
          use_bias: bool = True, kernel_init: Callable = INIT) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def layer_norm(name: str, eps: float = 1e-12, dtype=jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class MultiHeadAttention(nn.Module):
    """Self-attention, or cross-attention to `context` [batch, ctx_length, ctx_embed].
    x: [batch, length, embed]; mask: [batch, length or ctx_length] (1 = attend) or None."""

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool,
                 context: jax.Array | None = None) -> jax.Array:
        embed = x.shape[-1]

        def proj(name, src):
            kernel = self.param(f"{name}_kernel", nn.with_logical_partitioning(INIT, ("embed", "heads", "kv")),
                                (src.shape[-1], self.num_heads, self.head_dim))
            bias = self.param(f"{name}_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv")),
                              (self.num_heads, self.head_dim))
            y = jnp.einsum("ble,ehd->bhld", src.astype(self.dtype), kernel.astype(self.dtype))
            y = y + bias.astype(self.dtype)[None, :, None, :]
            return nn.with_logical_constraint(y, ("activation_batch", "activation_heads", "activation_length", None))

        # Head-major [batch, heads, length, head_dim]: XLA:CPU runs these batched matmuls about
        # twice as fast as the [batch, length, heads, head_dim] layout (measured, 249 tokens).
        kv = x if context is None else context
        q, k, v = proj("query", x), proj("key", kv), proj("value", kv)
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(self.head_dim).astype(self.dtype)
        if mask is not None:
            big_neg = jnp.finfo(logits.dtype).min
            logits = jnp.where(mask[:, None, None, :].astype(bool), logits, big_neg)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        attn = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
        out_k = self.param("out_kernel", nn.with_logical_partitioning(INIT, ("heads", "kv", "embed")),
                           (self.num_heads, self.head_dim, embed))
        out_b = self.param("out_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (embed,))
        return jnp.einsum("bhld,hde->ble", attn, out_k.astype(self.dtype)) + out_b.astype(self.dtype)


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
