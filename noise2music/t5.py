"""The T5 (v1.1) encoder of Noise2Music's text conditioning (docs/PAPERS.md §2.2), in Flax, frozen.

    enc = T5Encoder(T5Config.v1_1("base"))
    params = load_hf_t5(path_or_state_dict, enc.config)         # HF T5 / T5 v1.1 weights, converted
    tokens = enc.apply({"params": params}, ids, mask)           # [B, T, d_model], non-pooled

T5 v1.1: token embedding (unscaled); per layer pre-RMSNorm -> self-attention without biases and
without 1/sqrt(d) scaling, plus a bucketed relative-position bias computed once (first layer) and
shared by all layers -> residual; pre-RMSNorm -> gated-GELU MLP (wi_0, wi_1, wo) -> residual; a
final RMSNorm.  Padding positions are masked in attention; outputs at padding are left as computed
(consumers mask them).  `T5Config.v1_1(size)` gives 'small', 'base', 'large', 'xl', 'xxl'.

The layers are `T5Layer`s, unrolled (`layer_{i}`) or one scanned stack (`T5Config.scan_layers`,
layers/scan.py), which compiles T5-XL's 24 layers once.

`load_hf_t5` reads a Hugging Face T5 v1.1 checkpoint (a folder holding `model.safetensors`, a
`.safetensors` file, or a dict of arrays named like HF's `encoder.block.0.layer.0.SelfAttention.
q.weight`) and names the first tensor that is missing or has the wrong shape; given the stage's
SentencePiece vocabulary it also refuses a checkpoint trained with another one
(`check_vocabulary`).  `Noise2MusicModel.text_checkpoint` loads one when a run starts.  No weights
are downloaded; tests use random initialisation.
"""
from __future__ import annotations

import dataclasses
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from layers import scan

_SIZES = {  # d_model, d_ff, heads, layers  (d_kv = 64)
    "small": (512, 1024, 6, 8), "base": (768, 2048, 12, 12), "large": (1024, 2816, 16, 24),
    "xl": (2048, 5120, 32, 24), "xxl": (4096, 10240, 64, 24),
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """`vocab_size=None`: the size of the stage's text vocabulary (`Noise2MusicModel.vocabulary`)."""

    vocab_size: int | None = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 2048
    num_heads: int = 12
    num_layers: int = 12
    rel_buckets: int = 32
    rel_max_distance: int = 128
    eps: float = 1e-6
    scan_layers: bool = False     # one nn.scan'ned layer instead of `num_layers` (layers/scan.py)

    @classmethod
    def v1_1(cls, size: str = "base", **kw) -> "T5Config":
        if size not in _SIZES:
            raise ConfigError(f"T5Config.v1_1: size {size!r} not in {sorted(_SIZES)}")
        d, ff, h, n = _SIZES[size]
        return cls(d_model=d, d_ff=ff, num_heads=h, num_layers=n, **kw)


def relative_position_bucket(rel, num_buckets: int = 32, max_distance: int = 128):
    """T5's bidirectional bucketing of memory_position - query_position."""
    num_buckets //= 2
    ret = (rel > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(rel)
    max_exact = num_buckets // 2
    large = max_exact + (jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
                         / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return ret + jnp.where(n < max_exact, n, large)


class RMSNorm(nn.Module):
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        w = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps) * w).astype(x.dtype)


class T5Layer(nn.Module):
    """Pre-RMSNorm self-attention (no biases, no 1/sqrt(d)) + pre-RMSNorm gated-GELU MLP."""

    config: T5Config
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool = True):
        del deterministic   # no dropout: the encoder is frozen
        c = self.config
        dense_init = nn.initializers.normal(c.d_model ** -0.5)
        p = lambda name, shape, axes: self.param(name, nn.with_logical_partitioning(dense_init, axes),
                                                 shape).astype(self.dtype)
        h = RMSNorm(c.eps, name="ln_attn")(x)
        q = jnp.einsum("btd,dhk->bhtk", h, p("q", (c.d_model, c.num_heads, c.d_kv), ("embed", "heads", "kv")))
        k = jnp.einsum("btd,dhk->bhtk", h, p("k", (c.d_model, c.num_heads, c.d_kv), ("embed", "heads", "kv")))
        v = jnp.einsum("btd,dhk->bhtk", h, p("v", (c.d_model, c.num_heads, c.d_kv), ("embed", "heads", "kv")))
        logits = jnp.einsum("bhqk,bhsk->bhqs", q, k).astype(jnp.float32) + bias
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        a = jnp.einsum("bhqs,bhsk->bhqk", probs, v)
        x = x + jnp.einsum("bhtk,hkd->btd", a, p("o", (c.num_heads, c.d_kv, c.d_model), ("heads", "kv", "embed")))
        h = RMSNorm(c.eps, name="ln_mlp")(x)
        g = jax.nn.gelu(h @ p("wi_0", (c.d_model, c.d_ff), ("embed", "mlp")), approximate=True)
        g = nn.with_logical_constraint(g * (h @ p("wi_1", (c.d_model, c.d_ff), ("embed", "mlp"))),
                                       ("activation_batch", "activation_length", "activation_mlp"))
        x = x + g @ p("wo", (c.d_ff, c.d_model), ("mlp", "embed"))
        return nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))


class T5Encoder(nn.Module):
    config: T5Config = T5Config()
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, ids, mask=None):
        """ids [B, T] int, mask [B, T] (1 = token) -> [B, T, d_model]."""
        c = self.config
        init = nn.initializers.normal(1.0)
        emb = self.param("embedding", nn.with_logical_partitioning(init, ("vocab", "embed")), (c.vocab_size, c.d_model))
        x = jnp.take(emb, ids, axis=0).astype(self.dtype)
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
        t = ids.shape[1]
        pos = jnp.arange(t)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], c.rel_buckets, c.rel_max_distance)
        rel = self.param("relative_attention_bias", nn.with_logical_partitioning(init, (None, "heads")),
                         (c.rel_buckets, c.num_heads))
        bias = jnp.transpose(rel[buckets], (2, 0, 1))[None].astype(jnp.float32)      # [1, H, T, T]
        if mask is not None:
            bias = bias + jnp.where(mask[:, None, None, :].astype(bool), 0.0, -1e9)
        x = scan.stack(T5Layer, c.num_layers, x, bias, True, scan_layers=c.scan_layers, remat="none",
                       config=c, dtype=self.dtype)
        return RMSNorm(c.eps, name="final_ln")(x)


class T5CheckpointError(ValueError):
    pass


def _hf_tensors(src) -> dict[str, np.ndarray]:
    if isinstance(src, dict):
        return {k: np.asarray(v) for k, v in src.items()}
    path = src
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    if not os.path.exists(path):
        raise T5CheckpointError(f"{path}: no such file (give a HF T5 folder with model.safetensors, or the file)")
    from safetensors.numpy import load_file

    return load_file(path)


def load_hf_t5(src, config: T5Config, vocabulary=None) -> dict:
    """HF T5 encoder weights -> this module's params (float32 numpy), per layer (`layer_{i}`) or
    stacked for a scanned encoder (`layers`).  With `vocabulary` (the stage's SentencePiece
    tokens), the checkpoint must be the one trained with it: see `check_vocabulary`."""
    t = _hf_tensors(src)
    c = config

    def get(name, shape):
        for cand in (name, f"encoder.{name}" if not name.startswith(("encoder.", "shared.")) else name):
            if cand in t:
                a = np.asarray(t[cand], np.float32)
                if a.shape != shape:
                    raise T5CheckpointError(f"T5 checkpoint tensor {cand} has shape {a.shape}, the config wants {shape} "
                                            f"(is the checkpoint a different T5 size?)")
                return a
        raise T5CheckpointError(f"T5 checkpoint has no tensor {name} (keys start {sorted(t)[:3]})")

    emb_name = "shared.weight" if "shared.weight" in t else "encoder.embed_tokens.weight"
    if vocabulary is not None and emb_name in t:
        check_vocabulary(src, int(t[emb_name].shape[0]), vocabulary)
    params: dict = {"embedding": get(emb_name, (c.vocab_size, c.d_model)),
                    "relative_attention_bias": get(
                        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                        (c.rel_buckets, c.num_heads)),
                    "final_ln": {"scale": get("encoder.final_layer_norm.weight", (c.d_model,))}}
    hk = c.num_heads * c.d_kv
    for i in range(c.num_layers):
        b = f"encoder.block.{i}.layer"
        layer = {n: get(f"{b}.0.SelfAttention.{n}.weight", (hk, c.d_model)).T.reshape(c.d_model, c.num_heads, c.d_kv)
                 for n in "qkv"}
        layer["o"] = get(f"{b}.0.SelfAttention.o.weight", (c.d_model, hk)).T.reshape(c.num_heads, c.d_kv, c.d_model)
        layer["wi_0"] = get(f"{b}.1.DenseReluDense.wi_0.weight", (c.d_ff, c.d_model)).T
        layer["wi_1"] = get(f"{b}.1.DenseReluDense.wi_1.weight", (c.d_ff, c.d_model)).T
        layer["wo"] = get(f"{b}.1.DenseReluDense.wo.weight", (c.d_model, c.d_ff)).T
        layer["ln_attn"] = {"scale": get(f"{b}.0.layer_norm.weight", (c.d_model,))}
        layer["ln_mlp"] = {"scale": get(f"{b}.1.layer_norm.weight", (c.d_model,))}
        params[f"layer_{i}"] = layer
    return scan.stack_params(params) if c.scan_layers else params


def check_vocabulary(src, rows: int, vocabulary) -> None:
    """A T5 checkpoint's embedding (`rows` ids) must have been trained with `vocabulary`'s
    SentencePiece model: a `spiece.model` beside the checkpoint must be the same file, and the
    rows must cover the pieces with at most T5's padding (its 32,000 pieces have 32,128 rows)."""
    model_file = getattr(vocabulary, "sentencepiece_model_file", None)
    if isinstance(src, str) and model_file:
        beside = os.path.join(src if os.path.isdir(src) else os.path.dirname(src), "spiece.model")
        if os.path.exists(beside) and open(beside, "rb").read() != open(model_file, "rb").read():
            raise T5CheckpointError(f"T5 checkpoint {src} comes with {beside}, but the text is tokenized with "
                                    f"{model_file}, another SentencePiece model: set "
                                    f"--gin.T5SentencePieceVocabulary.path='{beside}'")
    pieces = int(vocabulary.vocab_size)
    if not pieces <= rows < pieces + 256:
        where = f" ({model_file})" if model_file else ""
        raise T5CheckpointError(f"T5 checkpoint {src if isinstance(src, str) else '(tensors)'} has {rows} token "
                                f"embeddings, but the SentencePiece vocabulary{where} has {pieces} pieces: it is not "
                                f"the model the checkpoint was trained with (T5SentencePieceVocabulary.path)")
