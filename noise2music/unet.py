"""The 1-D Efficient U-Net of Noise2Music (docs/PAPERS.md §2.1): one module for all five models.

    net = UNet1D(base=256, kernel=7, strides=(4,) * 6, multipliers=(1, 1, 2, 3, 4, 4),
                 blocks=(3, 3, 3, 4, 4, 4), self_attention=(False,) * 3 + (True,) * 3,
                 cross_attention=(False,) * 3 + (True,) * 3)
    out = net.apply(params, x_t, t, text=emb, text_mask=mask, drop_text=drop, cond=lowfi)

Layout, with C_i = base * multipliers[i] and L_i = L / (S_0 ... S_i):

* entry conv (kernel 3): [B, L, C_in (+ stacked conditioning channels)] -> [B, L, base];
* depth i, down: a strided conv S_i, C_{i-1} -> C_i (kernel = stride: non-overlapping, a reshape
  and one matmul), then `blocks[i]` residual blocks of width C_i; where flagged, each block is
  followed by self-attention and cross-attention to the text tokens (`attention_placement =
  'every_block'`, the reading that matches the paper's parameter counts, docs/PAPERS.md §2.1; or
  once after the depth's last block, 'per_level'), each with a residual MLP of hidden size 2 C_i and
  `num_heads` heads of `head_dim` (None: C_i / num_heads); the depth's output is kept for the skip;
* the bottom: an aligned input (the vocoder's spectrogram, [B, L / prod(strides), C_b]) is
  projected by a kernel-3 conv to C_last and added here (`bottom`);
* depth i, up (mirrored): + the depth's down output (**additive** skips), the same blocks and
  attention, then the transposed strided conv C_i -> C_{i-1};
* + the entry activation, exit conv (kernel 3) -> out_channels.

Each depth and direction is a `Depth` (`down{i}`, `up{i}`): its blocks (a `UNetBlock`: the
residual block and, 'every_block', its attention) unrolled (`down{i}/layer_{j}/res/...`) or, with
`scan_blocks`, one `nn.scan` (`down{i}/layers/...`, a leading 'layers' axis): the same arithmetic,
compiled once per depth and direction instead of once per block, which is what makes the
paper-size U-Nets compile in minutes (README, "Recipes").

Residual block: GroupNorm -> swish -> conv -> FiLM (channel-wise scale and bias from the time
embedding) -> GroupNorm -> swish -> conv, + input.  Time: sinusoidal embedding of t -> dense ->
swish -> dense (width `base`).  `drop_text` [B] (1 = drop) zeroes the cross-attention outputs of
those examples (classifier-free guidance training).  Every parameter and large activation carries
logical axes (`embed`, `conv_out`, `heads`, `mlp`; `activation_batch`, `activation_length`,
`activation_embed`) for FSDP + tensor sharding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from layers import remat as remat_lib
from layers import scan
from layers.attention import MultiHeadAttention

_ACT = ("activation_batch", "activation_length", "activation_embed")
_PLACEMENTS = ("every_block", "per_level")


def _init(scale: float = 1.0):
    return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def _constrain(x):
    return nn.with_logical_constraint(x, _ACT)


class Conv(nn.Module):
    """'Same' 1-D convolution [B, L, Cin] -> [B, L, Cout], kernel [k, Cin, Cout]."""

    features: int
    kernel: int
    zero_init: bool = False
    dtype: jnp.dtype = jnp.float32
    # The entry conv reads a few audio channels and the exit conv writes one: those narrow axes
    # stay unsharded (None) so any mesh divides them.
    axes: tuple = (None, "embed", "conv_out")

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.zero_init else _init()
        w = self.param("kernel", nn.with_logical_partitioning(init, self.axes), (self.kernel, x.shape[-1], self.features))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[2:]), (self.features,))
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (1,), "SAME",
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return y + b.astype(self.dtype)


class Resample(nn.Module):
    """Non-overlapping strided conv (down: [B, L, C] -> [B, L/S, F]) or its transpose
    (up: [B, L, C] -> [B, L*S, F]), each one matmul."""

    features: int
    stride: int
    up: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, n, c = x.shape
        s = self.stride
        if self.up:
            w = self.param("kernel", nn.with_logical_partitioning(_init(), ("embed", None, "conv_out")),
                           (c, s, self.features))
            y = jnp.einsum("blc,csf->blsf", x.astype(self.dtype), w.astype(self.dtype)).reshape(b, n * s, self.features)
        else:
            w = self.param("kernel", nn.with_logical_partitioning(_init(), (None, "embed", "conv_out")),
                           (s, c, self.features))
            y = jnp.einsum("blsc,scf->blf", x.astype(self.dtype).reshape(b, n // s, s, c), w.astype(self.dtype))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)), (self.features,))
        return y + bias.astype(self.dtype)


def _group_norm(channels: int, name: str, dtype=None) -> nn.GroupNorm:
    """Statistics in float32 (Flax's default), the output in `dtype`."""
    groups = math.gcd(32, channels)
    return nn.GroupNorm(num_groups=groups, name=name, dtype=dtype,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class ResBlock(nn.Module):
    kernel: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        c = x.shape[-1]
        h = Conv(c, self.kernel, dtype=self.dtype, name="conv1")(nn.swish(_group_norm(c, "norm1", self.dtype)(x)))
        film = nn.Dense(2 * c, name="film", dtype=self.dtype,
                        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(nn.swish(temb))
        scale, bias = jnp.split(film[:, None, :], 2, axis=-1)
        h = h * (1.0 + scale) + bias
        h = Conv(c, self.kernel, zero_init=True, dtype=self.dtype, name="conv2")(nn.swish(_group_norm(c, "norm2", self.dtype)(h)))
        return _constrain(x + h)


class AttentionBlock(nn.Module):
    """Pre-LN self- or cross-attention + residual MLP (hidden 2 C)."""

    num_heads: int
    cross: bool
    dtype: jnp.dtype = jnp.float32
    head_dim: int | None = None      # None: C / num_heads

    @nn.compact
    def __call__(self, x, text=None, text_mask=None, drop_text=None):
        c = x.shape[-1]
        attn = MultiHeadAttention(self.num_heads, self.head_dim or c // self.num_heads, dtype=self.dtype,
                                  name="attention")
        h = nn.LayerNorm(name="ln", dtype=self.dtype)(x)
        if self.cross:
            h = attn(h, text_mask, True, context=text)
            if drop_text is not None:
                h = h * (1.0 - drop_text.astype(h.dtype))[:, None, None]
        else:
            h = attn(h, None, True)
        x = x + h
        h = nn.LayerNorm(name="ln_mlp", dtype=self.dtype)(x)
        h = nn.Dense(2 * c, name="mlp_in", dtype=self.dtype,
                     kernel_init=nn.with_logical_partitioning(_init(), ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(h)
        h = nn.with_logical_constraint(nn.swish(h), ("activation_batch", "activation_length", "activation_mlp"))
        h = nn.Dense(c, name="mlp_out", dtype=self.dtype,
                     kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp", "embed")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(h)
        return _constrain(x + h)


class UNetBlock(nn.Module):
    """One residual block and, at a depth with attention placed after every block, its self- and
    cross-attention: the unit a depth repeats (`Depth`)."""

    kernel: int
    num_heads: int
    head_dim: int | None
    self_attn: bool
    cross_attn: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h, temb, text, text_mask, drop_text, deterministic: bool = True):
        del deterministic   # no dropout
        h = ResBlock(self.kernel, self.dtype, name="res")(h, temb)
        if self.self_attn:
            h = AttentionBlock(self.num_heads, False, self.dtype, self.head_dim, name="self_attn")(h)
        if self.cross_attn:
            h = AttentionBlock(self.num_heads, True, self.dtype, self.head_dim, name="cross_attn")(
                h, text, text_mask, drop_text)
        return h


class Depth(nn.Module):
    """One depth's `num` blocks in one direction: `UNetBlock`s unrolled (`layer_0`, `layer_1`, ...)
    or, `scan_blocks`, one `nn.scan` (`layers`, a leading 'layers' axis; `layers.scan.stack_params`
    converts one layout into the other), each under `remat`.  With attention 'every_block' each
    block carries its own; 'per_level', the depth's self- and cross-attention follow its last block."""

    num: int
    scan_blocks: bool
    remat: str
    every_block: bool
    kernel: int
    num_heads: int
    head_dim: int | None
    self_attn: bool
    cross_attn: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h, temb, text, text_mask, drop_text):
        h = scan.stack(UNetBlock, self.num, h, temb, text, text_mask, drop_text, True,
                       scan_layers=self.scan_blocks and self.num > 0, remat=self.remat, kernel=self.kernel, num_heads=self.num_heads, head_dim=self.head_dim,
                       self_attn=self.every_block and self.self_attn, cross_attn=self.every_block and self.cross_attn,
                       dtype=self.dtype)
        if not self.every_block:
            Attn = remat_lib.remat(AttentionBlock, self.remat)
            if self.self_attn:
                h = Attn(self.num_heads, False, self.dtype, self.head_dim, name="self_attn")(h)
            if self.cross_attn:
                h = Attn(self.num_heads, True, self.dtype, self.head_dim, name="cross_attn")(h, text, text_mask,
                                                                                            drop_text)
        return h


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """t in [0, 1] -> [B, dim] sinusoids (t scaled by 1000, as for discrete steps)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = 1000.0 * t[:, None].astype(jnp.float32) * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class UNet1D(nn.Module):
    base: int = 256
    kernel: int = 7
    strides: Sequence[int] = (4, 4, 4, 4)
    multipliers: Sequence[int] = (1, 1, 2, 2)
    blocks: Sequence[int] = (2, 2, 2, 2)
    self_attention: Sequence[bool] = (False, False, False, False)
    cross_attention: Sequence[bool] = (False, False, False, False)
    num_heads: int = 8
    head_dim: int | None = None             # None: C_i / num_heads at each depth
    attention_placement: str = "every_block"   # or 'per_level' (docs/PAPERS.md §2.1)
    out_channels: int = 1
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"          # the residual and attention blocks: 'none', 'full' or 'dots' (layers/remat.py)
    scan_blocks: bool = False    # each depth's blocks (with their attention, 'every_block') as one nn.scan

    def __post_init__(self):
        remat_lib.check(self.remat, "UNet1D.remat")
        if self.attention_placement not in _PLACEMENTS:
            raise ConfigError(f"UNet1D.attention_placement = {self.attention_placement!r}: expected one of {_PLACEMENTS}")
        n = len(self.strides)
        for name in ("multipliers", "blocks", "self_attention", "cross_attention"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"UNet1D.{name} has {len(getattr(self, name))} entries but strides has {n}: "
                                 f"one per depth")
        super().__post_init__()

    @property
    def downsampling(self) -> int:
        return math.prod(self.strides)

    @nn.compact
    def __call__(self, x, t, *, text=None, text_mask=None, drop_text=None, cond=None, bottom=None):
        """x: [B, L, C] (noisy input); t: [B]; text: [B, T, D] token embeddings; cond: [B, L, Cc]
        low-fi conditioning stacked as channels; bottom: [B, L / prod(strides), C_b] projected and added at the
        bottom of the U.  -> [B, L, out_channels]."""
        if x.shape[1] % self.downsampling:
            raise ConfigError(f"UNet1D: length {x.shape[1]} is not a multiple of prod(strides) = {self.downsampling} "
                             f"(pad or crop the input: Noise2MusicModel pads and masks, see noise2music/model.py)")
        if any(self.cross_attention) and text is None:
            raise ValueError("UNet1D: cross-attention is configured but no `text` was given")
        temb = timestep_embedding(t, self.base)
        temb = nn.Dense(self.base, name="time_in", kernel_init=nn.with_logical_partitioning(_init(), (None, "embed")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(temb)
        temb = nn.Dense(self.base, name="time_out", kernel_init=nn.with_logical_partitioning(_init(), ("embed", None)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(nn.swish(temb))
        if cond is not None:
            x = jnp.concatenate([x, cond.astype(x.dtype)], axis=-1)
        h = _constrain(Conv(self.base, 3, dtype=self.dtype, axes=(None, None, "conv_out"), name="entry")(x))
        entry = h
        widths = [self.base * m for m in self.multipliers]

        def level(h, i, direction):
            return Depth(self.blocks[i], self.scan_blocks, self.remat, self.attention_placement == "every_block",
                         self.kernel, self.num_heads, self.head_dim, self.self_attention[i], self.cross_attention[i],
                         self.dtype, name=f"{direction}{i}")(h, temb, text, text_mask, drop_text)

        skips = []
        for i, s in enumerate(self.strides):
            h = _constrain(Resample(widths[i], s, up=False, dtype=self.dtype, name=f"down{i}_resample")(h))
            h = level(h, i, "down")
            skips.append(h)
        if bottom is not None:
            if bottom.shape[:2] != h.shape[:2]:
                raise ValueError(f"UNet1D: `bottom` must be [{h.shape[0]}, {h.shape[1]}, channels] (aligned with the "
                                 f"bottom of the U: length / prod(strides)), got {bottom.shape}")
            h = h + _constrain(Conv(h.shape[-1], 3, dtype=self.dtype, axes=(None, None, "conv_out"),
                                    name="bottom_in")(bottom.astype(h.dtype)))
        for i in reversed(range(len(self.strides))):
            h = level(h + skips[i], i, "up")
            out_width = widths[i - 1] if i else self.base
            h = _constrain(Resample(out_width, self.strides[i], up=True, dtype=self.dtype, name=f"up{i}_resample")(h))
        h = nn.swish(_group_norm(self.base, "exit_norm")(h + entry))
        return Conv(self.out_channels, 3, zero_init=True, dtype=self.dtype, axes=(None, "embed", None), name="exit")(h)
