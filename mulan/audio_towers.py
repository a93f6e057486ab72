"""Audio towers: log-mel [batch, frames, mels] -> embedding [batch, embed_dim] (not normalised).

* `ResNetTower`: the audio ResNet of Hershey et al. (2017): a ResNet-50 (bottleneck stages
  3-4-6-3, widths 64-128-256-512 x4) over the log-mel image (time as height, mel as width, one
  channel), global mean pool over time and frequency, then a linear projection.
  Normalisation: GroupNorm by default, so the train state is parameters only and the loss does
  not depend on how the global batch is split over devices; `norm='affine'` is a per-channel
  scale and bias (BatchNorm with its statistics folded in), used when loading a pretrained
  BatchNorm checkpoint through `mulan.pretrained.resnet_params_from_torch`.
* `ASTTower`: the Audio Spectrogram Transformer (Gong et al. 2021): 16 x 16 patches with a
  configurable stride (AST used 10; the patch size gives non-overlapping patches), learned
  positional embeddings, a [CLS] token, pre-LayerNorm encoder, [CLS] -> projection.  Optional
  patch dropout (a random subset of patches per example, training only), as in the peer
  MuLaN implementation.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from layers import remat as remat_lib
from layers import scan
from layers.transformer import INIT, TransformerBlock, dense, layer_norm

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel: tuple[int, int], strides: tuple[int, int], name: str, dtype) -> nn.Conv:
    # Symmetric k // 2 padding, as torchvision's ResNet (so converted weights see the same frames).
    pad = [(k // 2, k // 2) for k in kernel]
    return nn.Conv(features, kernel, strides, padding=pad, use_bias=False, dtype=dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(_CONV_INIT, (None, None, "conv_in", "conv_out")))


class Norm(nn.Module):
    """GroupNorm (`kind='group'`) or a per-channel affine (`'affine'`, folded BatchNorm)."""

    kind: str = "group"
    groups: int = 32
    zero_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
        scale = self.param("scale", nn.with_logical_partitioning(scale_init, ("conv_out",)), (c,))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)), (c,))
        if self.kind == "group":
            g = math.gcd(self.groups, c)
            xs = x.astype(jnp.float32).reshape(*x.shape[:-1], g, c // g)
            axes = tuple(range(1, xs.ndim - 2)) + (xs.ndim - 1,)
            mean = xs.mean(axes, keepdims=True)
            var = jnp.square(xs - mean).mean(axes, keepdims=True)
            x = ((xs - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(x.shape).astype(x.dtype)
        elif self.kind != "affine":
            raise ConfigError(f"resnet_tower.norm={self.kind!r}: use 'group' or 'affine'.")
        return x * scale.astype(x.dtype) + bias.astype(x.dtype)


class Bottleneck(nn.Module):
    width: int
    strides: int
    norm: str
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = (self.strides, self.strides)
        y = nn.relu(Norm(self.norm, name="norm1")(conv(self.width, (1, 1), (1, 1), "conv1", self.dtype)(x)))
        y = nn.relu(Norm(self.norm, name="norm2")(conv(self.width, (3, 3), s, "conv2", self.dtype)(y)))
        y = Norm(self.norm, zero_init=True, name="norm3")(conv(4 * self.width, (1, 1), (1, 1), "conv3", self.dtype)(y))
        if x.shape[-1] != 4 * self.width or self.strides != 1:
            x = Norm(self.norm, name="shortcut_norm")(conv(4 * self.width, (1, 1), s, "shortcut", self.dtype)(x))
        return nn.relu(x + y)


class ResNetTower(nn.Module):
    """features [B, T, F] -> [B, embed_dim].  ResNet-50 by default."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    norm: str = "group"
    embed_dim: int = 128
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: jax.Array, rng: jax.Array | None = None, train: bool = False) -> jax.Array:
        del rng, train  # No stochastic layers.
        x = feats[..., None].astype(self.dtype)
        x = conv(self.width, (7, 7), (2, 2), "stem", self.dtype)(x)
        x = nn.relu(Norm(self.norm, name="stem_norm")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                x = Bottleneck(self.width * 2**i, 2 if (i > 0 and j == 0) else 1, self.norm, self.dtype,
                               name=f"stage{i + 1}_block{j}")(x)
            x = nn.with_logical_constraint(x, ("activation_batch", None, None, "activation_conv_out"))
        pooled = x.astype(jnp.float32).mean(axis=(1, 2))
        return dense(self.embed_dim, ("conv_out", "latent"), "projection")(pooled)


class PatchEmbed(nn.Module):
    """[B, T, F] -> [B, nt * nf, dim] in (time, mel) order; kernel [pt, pf, 1, dim] like a Conv's.

    Non-overlapping patches (stride == patch) are a reshape and one matmul, which every backend runs
    at matmul speed; overlapping ones use a strided convolution.
    """

    dim: int
    patch: tuple[int, int]
    stride: tuple[int, int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: jax.Array) -> jax.Array:
        (pt, pf), (st, sf) = self.patch, self.stride
        kernel = self.param("kernel", nn.with_logical_partitioning(INIT, (None, None, "conv_in", "embed")),
                            (pt, pf, 1, self.dim))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (self.dim,))
        b, t, f = feats.shape
        nt, nf = (t - pt) // st + 1, (f - pf) // sf + 1
        x = feats.astype(self.dtype)
        if (st, sf) == (pt, pf):
            x = x[:, : nt * pt, : nf * pf].reshape(b, nt, pt, nf, pf).transpose(0, 1, 3, 2, 4)
            y = x.reshape(b, nt * nf, pt * pf) @ kernel.reshape(pt * pf, self.dim).astype(self.dtype)
        else:
            y = jax.lax.conv_general_dilated(x[..., None], kernel.astype(self.dtype), (st, sf), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = y.reshape(b, nt * nf, self.dim)
        return y + bias.astype(self.dtype)


class ASTTower(nn.Module):
    """features [B, T, F] -> [B, embed_dim].  Patches tile (time, mel) with `patch` and `stride`."""

    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    patch: tuple[int, int] = (16, 16)
    stride: tuple[int, int] = (10, 10)
    patch_dropout: float = 0.0
    dropout_rate: float = 0.0
    embed_dim: int = 128
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"          # the transformer layers: 'none', 'full' or 'dots' (layers/remat.py)
    scan_layers: bool = False    # one scanned `layers` module instead of `layer_{i}` (layers/scan.py)

    def grid(self, frames: int, mels: int) -> tuple[int, int]:
        return ((frames - self.patch[0]) // self.stride[0] + 1, (mels - self.patch[1]) // self.stride[1] + 1)

    @nn.compact
    def __call__(self, feats: jax.Array, rng: jax.Array | None = None, train: bool = False) -> jax.Array:
        b, t, f = feats.shape
        nt, nf = self.grid(t, f)
        if nt < 1 or nf < 1:
            raise ConfigError(f"AST: a {t} x {f} log-mel is smaller than one {self.patch} patch.")
        x = PatchEmbed(self.dim, self.patch, self.stride, self.dtype, name="patch_embed")(feats)
        pos = self.param("pos_embedding", nn.with_logical_partitioning(INIT, (None, "embed")),
                         (1 + nt * nf, self.dim))
        cls = self.param("cls_token", nn.with_logical_partitioning(INIT, ("embed",)), (self.dim,))
        x = x + pos[None, 1:].astype(self.dtype)
        if train and self.patch_dropout > 0:
            if rng is None:
                raise ValueError("AST patch dropout needs an rng in training.")
            keep = max(1, int(round(nt * nf * (1.0 - self.patch_dropout))))
            order = jnp.argsort(jax.random.uniform(rng, (b, nt * nf)), axis=1)[:, :keep]
            x = jnp.take_along_axis(x, order[..., None], axis=1)
        cls_tok = jnp.broadcast_to((cls + pos[0]).astype(self.dtype), (b, 1, self.dim))
        x = jnp.concatenate([cls_tok, x], axis=1)
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
        x = scan.stack(TransformerBlock, self.depth, x, None, not train, scan_layers=self.scan_layers,
                       remat=self.remat, num_heads=self.num_heads, head_dim=self.dim // self.num_heads,
                       mlp_dim=self.mlp_ratio * self.dim, pre_norm=True, dropout_rate=self.dropout_rate,
                       layer_norm_eps=1e-6, dtype=self.dtype)
        x = layer_norm("ln_out", 1e-6)(x.astype(jnp.float32))
        return dense(self.embed_dim, ("embed", "latent"), "projection")(x[:, 0])


@gin.configurable
def ast_tower(dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: int = 4,
              patch: tuple[int, int] = (16, 16), stride: tuple[int, int] = (10, 10),
              patch_dropout: float = 0.0, dropout_rate: float = 0.0, embed_dim: int = 128,
              remat: str = "none", scan_layers: bool = False) -> ASTTower:
    """The AST audio tower (defaults: AST-Base, 768-d, stride 10).  Gin: `MulanModel.audio_tower = @ast_tower()`;
    its compute dtype is the model's (`MulanModel.dtype`, layers/precision.py)."""
    if not 0.0 <= patch_dropout < 1.0:
        raise ConfigError(f"ast_tower.patch_dropout={patch_dropout} must be in [0, 1).")
    remat_lib.check(remat, "ast_tower.remat")
    return ASTTower(dim, depth, num_heads, mlp_ratio, tuple(patch), tuple(stride), patch_dropout,
                    dropout_rate, embed_dim, remat=remat, scan_layers=scan_layers)


@gin.configurable
def resnet_tower(stage_sizes: Sequence[int] = (3, 4, 6, 3), width: int = 64, norm: str = "group",
                 embed_dim: int = 128) -> ResNetTower:
    """The ResNet audio tower (defaults: ResNet-50).  Gin: `MulanModel.audio_tower = @resnet_tower()`;
    its compute dtype is the model's (`MulanModel.dtype`)."""
    return ResNetTower(tuple(stage_sizes), width, norm, embed_dim)
