"""MuLan: the two-tower model and its `trainer.BaseModel`.

    audio [B, samples] --LogMel--> [B, frames, mels] --SpecAugment (train)--> audio tower -> [B, 128]
    text_tokens [B, L], text_mask [B, L] --> text tower -> [B, 128]
    both L2-normalised; logits = a t^T / tau over the global batch; loss from `mulan.loss`.

The temperature is learned in the unconstrained `temperature_raw` with
tau = max(exp(-softplus(raw)), 1e-3), which keeps tau in (0, 1] for any parameter value.  Clips shorter than `audio_samples` are
zero-padded to it by the data pipeline and by `mulan.embed`; the front end is shape-static.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from mulan import loss as loss_lib
from layers import precision
from layers.audio_frontend import LogMel, SpecAugment
from trainer.base_model import BaseModel

log = logging.getLogger(__name__)


def raw_from_temperature(tau: float) -> float:
    """Inverse of tau = exp(-softplus(raw))."""
    y = max(-math.log(tau), 1e-6)
    return math.log(math.expm1(y))


MIN_TEMPERATURE = 1e-3  # a floor, so an extreme parameter cannot make tau underflow to 0


def temperature_from_raw(raw: jax.Array) -> jax.Array:
    return jnp.maximum(jnp.exp(-jax.nn.softplus(raw)), MIN_TEMPERATURE)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class MuLan(nn.Module):
    """The dual encoder.  `embed_audio`, `embed_text` and `__call__` are the apply methods."""

    audio_tower: nn.Module
    text_tower: nn.Module
    frontend: LogMel
    spec_augment: SpecAugment | None
    init_temperature: float = 0.1
    learn_temperature: bool = True

    def setup(self):
        self.temperature_raw = self.param(
            "temperature_raw", nn.with_logical_partitioning(
                nn.initializers.constant(raw_from_temperature(self.init_temperature)), ()), ())

    def temperature(self) -> jax.Array:
        raw = self.temperature_raw
        if not self.learn_temperature:
            raw = jax.lax.stop_gradient(raw)
        return temperature_from_raw(raw)

    def features(self, audio: jax.Array, train: bool = False) -> jax.Array:
        x = self.frontend(audio)
        if train and self.spec_augment is not None:
            x = self.spec_augment(x, self.make_rng("augment"))
        return x

    def embed_audio(self, audio: jax.Array, train: bool = False) -> jax.Array:
        """[B, samples] -> un-normalised [B, embed_dim]."""
        feats = nn.with_logical_constraint(self.features(audio, train), ("activation_batch", None, None))
        rng = self.make_rng("augment") if train else None
        return self.audio_tower(feats, rng, train)

    def embed_text(self, tokens: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
        """[B, L], [B, L] -> un-normalised [B, embed_dim]."""
        return self.text_tower(tokens, mask, not train)

    def __call__(self, audio, tokens, mask, train: bool = False):
        return self.embed_audio(audio, train), self.embed_text(tokens, mask, train), self.temperature()


@gin.configurable
class MulanModel(BaseModel):
    """MuLan for the trainer.

    Args:
      audio_tower / text_tower: modules from `ast_tower()` / `resnet_tower()` and `bert_tower()`.
      frontend: the `LogMel` front end (its `num_mels` must suit the tower: 64 ResNet, 128 AST).
      spec_augment: a `SpecAugment`, or None for no augmentation.
      audio_samples: samples per training clip (10 s at 16 kHz).
      text_length: WordPiece tokens per text, [CLS] and [SEP] included.
      loss_type: 'mulan' (the paper's) or 'infonce'.
      init_temperature: tau at step 0, in (0, 1].
      learn_temperature: False keeps tau fixed.
      text_checkpoint: an HF BERT checkpoint (folder or .safetensors) loaded into the text
        encoder when a run starts fresh (not on resume).
      audio_checkpoint: a converted audio-tower checkpoint (`python -m mulan.convert`), likewise.
      vocabulary: the text tokens' vocabulary (a seqio vocabulary: the gin macro TEXT_VOCAB, shared
        with the task); `mulan.inference` tokenizes texts with it (None: the installed MiniLM's).
      dtype / param_dtype: both towers' compute dtype and the parameters' dtype, 'float32' or
        'bfloat16' (layers/precision.py); the front end, the towers' outputs, the logits and the
        loss stay float32.
    """

    loss_is_example_mean = False   # the contrastive loss's negatives are the rest of the batch

    def __init__(self, audio_tower: nn.Module, text_tower: nn.Module, frontend: LogMel | None = None,
                 spec_augment: SpecAugment | None = None, audio_samples: int = 160_000, text_length: int = 64,
                 loss_type: str = "mulan", init_temperature: float = 0.1, learn_temperature: bool = True,
                 text_checkpoint: str | None = None, audio_checkpoint: str | None = None, vocabulary=None,
                 dtype: str = "float32", param_dtype: str = "float32"):
        if not MIN_TEMPERATURE <= init_temperature <= 1.0:
            raise ConfigError(f"MulanModel.init_temperature={init_temperature} must be in (0, 1] "
                             f"(at least {MIN_TEMPERATURE}).")
        if loss_type not in loss_lib.LOSSES:
            raise ConfigError(f"MulanModel.loss_type={loss_type!r}: use one of {loss_lib.LOSSES}.")
        self.frontend = frontend or LogMel()
        self.audio_samples, self.text_length, self.loss_type = audio_samples, text_length, loss_type
        self.text_checkpoint, self.audio_checkpoint = text_checkpoint, audio_checkpoint
        self.vocabulary = vocabulary
        compute = precision.dtype(dtype, "MulanModel.dtype")
        self.param_dtype = precision.dtype(param_dtype, "MulanModel.param_dtype")
        audio_tower = audio_tower.clone(dtype=compute)
        text_tower = text_tower.clone(encoder=text_tower.encoder.clone(dtype=compute))
        self.module = MuLan(audio_tower, text_tower, self.frontend, spec_augment, init_temperature,
                            learn_temperature)

    # -- BaseModel -------------------------------------------------------------
    def without_remat(self) -> "MulanModel":
        audio, text = self.module.audio_tower, self.module.text_tower
        encoder = getattr(text, "encoder", None)
        if getattr(audio, "remat", "none") == "none" and getattr(encoder, "remat", "none") == "none":
            return self
        if getattr(audio, "remat", "none") != "none":
            audio = audio.clone(remat="none")
        if getattr(encoder, "remat", "none") != "none":
            text = text.clone(encoder=encoder.clone(remat="none"))
        other = copy.copy(self)
        other.module = self.module.clone(audio_tower=audio, text_tower=text)
        return other

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {"audio": jax.ShapeDtypeStruct((batch_size, self.audio_samples), jnp.float32),
                "text_tokens": jax.ShapeDtypeStruct((batch_size, self.text_length), jnp.int32),
                "text_mask": jax.ShapeDtypeStruct((batch_size, self.text_length), jnp.int32)}

    def init_params(self, rng, batch):
        params = self.module.init({"params": rng, "augment": rng, "dropout": rng}, batch["audio"],
                                  batch["text_tokens"], batch["text_mask"])["params"]
        return precision.cast_params(params, self.param_dtype)

    def forward(self, params, batch, rng=None, train: bool = False):
        """Normalised embeddings (a, t), the raw norms and tau for a batch."""
        rngs = {}
        if train:
            ka, kd = jax.random.split(rng)
            rngs = {"augment": ka, "dropout": kd}
        a, t, tau = self.module.apply({"params": params}, batch["audio"], batch["text_tokens"],
                                      batch["text_mask"], train, rngs=rngs)
        a, t, tau = a.astype(jnp.float32), t.astype(jnp.float32), tau.astype(jnp.float32)  # float32 logits
        return l2_normalize(a), l2_normalize(t), jnp.linalg.norm(a, axis=-1), jnp.linalg.norm(t, axis=-1), tau

    def loss(self, params, batch, rng):
        return self._loss(params, batch, rng, train=True)

    def eval_metrics(self, params, batch):
        loss, metrics = self._loss(params, batch, None, train=False)
        return {"loss": loss, **metrics}

    def _loss(self, params, batch, rng, train):
        a, t, a_norm, t_norm, tau = self.forward(params, batch, rng, train)
        logits = loss_lib.similarity_logits(a, t, tau)
        loss = loss_lib.contrastive_loss(logits, self.loss_type)
        acc_a2t, acc_t2a = loss_lib.retrieval_accuracy(logits)
        b = logits.shape[0]
        cos = logits * tau
        off = (jnp.sum(cos) - jnp.trace(cos)) / (b * (b - 1))
        return loss, {"temperature": tau, "acc_audio_to_text": acc_a2t, "acc_text_to_audio": acc_t2a,
                      "audio_norm": a_norm.mean(), "text_norm": t_norm.mean(),
                      "cos_positive": jnp.trace(cos) / b, "cos_negative": off,
                      "chance_loss": jnp.log(2.0 * (b - 1)) if self.loss_type == "mulan" else jnp.log(1.0 * b)}

    # -- embedding entry points (used by mulan.embed / evaluate) ---------------
    def embed_audio(self, params, audio: jax.Array) -> jax.Array:
        """[B, audio_samples] -> L2-normalised [B, D]."""
        return l2_normalize(self.module.apply({"params": params}, audio, method=MuLan.embed_audio).astype(jnp.float32))

    def embed_text(self, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        """[B, L], [B, L] -> L2-normalised [B, D]."""
        return l2_normalize(self.module.apply({"params": params}, tokens, mask,
                                              method=MuLan.embed_text).astype(jnp.float32))

    # -- pretrained weights -------------------------------------------------------
    def load_pretrained(self, params: Any, shardings: Any) -> Any:
        """Fresh-run hook: replaces the towers' parameters with the configured checkpoints."""
        from mulan import pretrained  # Numpy/safetensors only; loaded when a checkpoint is named.
        from layers.pretrained import match_layout, place

        params = dict(params)
        if self.text_checkpoint:
            tower = dict(params["text_tower"])
            tower["encoder"] = place(
                pretrained.bert_params_from_hf(self.text_checkpoint), tower["encoder"],
                shardings["text_tower"]["encoder"], what=f"MulanModel.text_checkpoint={self.text_checkpoint!r}")
            params["text_tower"] = tower
            log.info("text encoder initialised from %s", self.text_checkpoint)
        if self.audio_checkpoint:
            what = f"MulanModel.audio_checkpoint={self.audio_checkpoint!r}"
            tower = dict(params["audio_tower"])
            loaded = match_layout(pretrained.load_tree(self.audio_checkpoint), tower, what)
            for k, v in place(loaded, {k: tower[k] for k in loaded},
                                         {k: shardings["audio_tower"][k] for k in loaded}, what=what).items():
                tower[k] = v
            params["audio_tower"] = tower
            log.info("audio tower initialised from %s (%d of its modules)", self.audio_checkpoint, len(loaded))
        return params


def num_windows(samples: int, window: int) -> int:
    """Non-overlapping windows of a clip (at least one: a short clip is zero-padded)."""
    return max(1, samples // window)


def windows(audio: np.ndarray, window: int) -> np.ndarray:
    """[samples] -> [num_windows, window]: non-overlapping windows; a short clip is zero-padded."""
    n = num_windows(len(audio), window)
    if len(audio) < window:
        audio = np.pad(audio, (0, window - len(audio)))
    return np.asarray(audio[: n * window], np.float32).reshape(n, window)
