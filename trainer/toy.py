"""The trainer's test model and its embedded default data.

A small transformer encoder that regresses a fixed nonlinear "teacher"
function of a `[length, features]` sequence.  It exists to exercise the
runtime end to end (attention heads, MLP, embeddings: every logical axis the
real models use) in seconds on a CPU; `configs/toy/tiny_cpu.gin` trains it.

The data is step-indexed: example `g` is drawn from `numpy.random.default_rng
((seed, g))`, so any host count, batch layout or resume point sees the same
examples.
"""
from __future__ import annotations


import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from trainer.base_model import BaseModel
from trainer.input_pipeline import DataIterator, DataSource, IndexedIterator
from trainer.partitioning import DataLayout

_INIT = nn.initializers.lecun_normal()


def _dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.with_logical_partitioning(_INIT, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


class Block(nn.Module):
    """Pre-LayerNorm attention + MLP block.  x: [batch, length, embed]."""

    embed_dim: int
    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        head_dim = self.embed_dim // self.num_heads
        ln = lambda name: nn.LayerNorm(
            name=name, scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))
        h = ln("ln_attn")(x)
        proj = lambda name, shape, axes: self.param(
            name, nn.with_logical_partitioning(_INIT, axes), shape)
        shape_in = (self.embed_dim, self.num_heads, head_dim)
        q, k, v = (
            nn.with_logical_constraint(
                jnp.einsum("ble,ehd->blhd", h, proj(n, shape_in, ("embed", "heads", "kv"))),
                ("activation_batch", "activation_length", "activation_heads", None))
            for n in ("query", "key", "value"))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(x.dtype)
        attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        out = jnp.einsum("blhd,hde->ble", attn,
                         proj("out", (self.num_heads, head_dim, self.embed_dim), ("heads", "kv", "embed")))
        x = x + out
        h = ln("ln_mlp")(x)
        h = nn.gelu(_dense(self.mlp_dim, ("embed", "mlp"), "mlp_in")(h))
        h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
        x = x + _dense(self.embed_dim, ("mlp", "embed"), "mlp_out")(h)
        return nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))


class ToyEncoder(nn.Module):
    """inputs: [batch, length, features] -> [batch, outputs]."""

    embed_dim: int = 32
    num_heads: int = 4
    mlp_dim: int = 64
    num_layers: int = 2
    outputs: int = 4

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        x = _dense(self.embed_dim, ("features", "embed"), "embed_in")(inputs)
        pos = self.param("pos_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("length", "embed")), x.shape[1:])
        x = x + pos
        for i in range(self.num_layers):
            x = Block(self.embed_dim, self.num_heads, self.mlp_dim, name=f"block_{i}")(x)
        x = nn.LayerNorm(name="ln_out", scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))(x)
        return _dense(self.outputs, ("embed", "outputs"), "head")(x.mean(axis=1))


@gin.configurable
class ToyModel(BaseModel):
    """Mean-squared-error regression with `ToyEncoder`."""

    def __init__(self, length: int = 16, features: int = 8, outputs: int = 4,
                 embed_dim: int = 32, num_heads: int = 4, mlp_dim: int = 64, num_layers: int = 2):
        self.length, self.features, self.outputs = length, features, outputs
        self.module = ToyEncoder(embed_dim, num_heads, mlp_dim, num_layers, outputs)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {
            "inputs": jax.ShapeDtypeStruct((batch_size, self.length, self.features), jnp.float32),
            "targets": jax.ShapeDtypeStruct((batch_size, self.outputs), jnp.float32),
        }

    def init_params(self, rng, batch):
        return self.module.init(rng, batch["inputs"])["params"]

    def loss(self, params, batch, rng):
        del rng  # Deterministic model.
        pred = self.module.apply({"params": params}, batch["inputs"])
        err = pred - batch["targets"]
        mse = jnp.mean(err**2)
        var = jnp.mean((batch["targets"] - batch["targets"].mean(0)) ** 2)
        return mse, {"r2": 1.0 - mse / var}


@gin.configurable
class ToyData(DataSource):
    """The teacher: y = tanh(2 mean_t(x) A) + 0.5 tanh(max_t(x) B) + 0.05 * noise.

    `split` picks an independent stream of examples ('train', 'validation').
    """

    def __init__(self, length: int = 16, features: int = 8, outputs: int = 4,
                 split: str = "train", teacher_seed: int = 1234):
        self.length, self.features, self.outputs = length, features, outputs
        self.split_id = {"train": 0, "validation": 1, "test": 2}[split]
        t = np.random.default_rng(teacher_seed)
        self.a = t.normal(size=(features, outputs)).astype(np.float32)
        self.b = t.normal(size=(features, outputs)).astype(np.float32) / np.sqrt(features)

    def examples(self, indices: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        xs = np.stack([
            np.random.default_rng((seed, self.split_id, int(g))).normal(size=(self.length, self.features))
            for g in indices
        ]).astype(np.float32)
        noise = np.stack([np.random.default_rng((seed, self.split_id, int(g), 1)).normal(size=self.outputs)
                          for g in indices]).astype(np.float32)
        y = np.tanh(2 * xs.mean(1) @ self.a) + 0.5 * np.tanh(xs.max(1) @ self.b) + 0.05 * noise
        return {"inputs": xs, "targets": y.astype(np.float32)}

    def make_iterator(self, layout: DataLayout, *, seed: int) -> DataIterator:
        return IndexedIterator(lambda idx: self.examples(idx, seed), layout)

