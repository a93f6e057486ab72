"""Noise2Music stages for the trainer (SPEC.md §2): the diffusion loss of one U-Net of the cascade.

    model = Noise2MusicModel(unet=UNet1D(...), stage="generator", rate=3200)    # text -> 3.2 kHz
    model = Noise2MusicModel(unet=UNet1D(...), stage="cascader", rate=16000, low_rate=3200)

Batches are the corpus tasks' (`audio` [B, T] at `source_rate` = 16 kHz, `text_tokens`,
`text_mask`).  Inside the jitted step the clip is resampled by FFT to the stage's `rate` (the
target x); a cascader's low-fi input is the clip at `low_rate`, FFT-upsampled back to `rate`,
blurred and noised at s ~ U[0, cond_t_max] (conditioning augmentation), and stacked with x_t as
input channels.  The text goes through the frozen T5 encoder (its output is a stop-gradient, so its
parameters never move) and is dropped for `text_drop` of the examples by zeroing the
cross-attention outputs.  t ~ U[0, 1]; loss E[w_t ||target - prediction||^2].
"""
from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import flax.linen as nn

from noise2music import conditioning, diffusion
from noise2music.t5 import T5Config, T5Encoder
from noise2music.unet import UNet1D
from trainer.base_model import BaseModel

STAGES = ("generator", "cascader")

# The building blocks are configured from gin files (configs/noise2music/*.gin).
gin.external_configurable(UNet1D, module="noise2music")
gin.external_configurable(T5Config, module="noise2music")


class _Net(nn.Module):
    unet: UNet1D
    text: T5Config | None

    @nn.compact
    def __call__(self, x_t, t, tokens, mask, drop, cond):
        emb = None
        if self.text is not None:
            emb = jax.lax.stop_gradient(T5Encoder(self.text, name="text_encoder")(tokens, mask))
        return self.unet(x_t, t, text=emb, text_mask=mask, drop_text=drop, cond=cond)


@gin.configurable
class Noise2MusicModel(BaseModel):
    """One stage of the cascade.

    Args:
      unet: the stage's `UNet1D`.
      stage: 'generator' (text -> `rate`) or 'cascader' (text + `low_rate` audio -> `rate`).
      source_rate / audio_samples: the batch's clips (16 kHz; samples per clip).
      rate / low_rate: the stage's output rate and (cascader) its low-fi input rate.
      text_encoder: a `T5Config` (frozen encoder), or None for a model without text.
      text_length: tokens per text.
      schedule: 'cosine' or 'linear'; parameterization 'eps' or 'v'; weighting 'simple' or 'sigma'.
      text_drop: the share of examples trained without text (classifier-free guidance).
      cond_t_max / cond_blur_sigma / cond_blur_size: the cascader's conditioning augmentation.
    """

    def __init__(self, unet: UNet1D, stage: str = "generator", source_rate: int = 16000, audio_samples: int = 160000,
                 rate: int = 3200, low_rate: int | None = None, text_encoder: T5Config | None = None,
                 text_length: int = 64, schedule: str = "cosine", parameterization: str = "eps",
                 weighting: str = "simple", text_drop: float = 0.1, cond_t_max: float = 0.5,
                 cond_blur_sigma: tuple[float, float] = (0.1, 5.0), cond_blur_size: int = 10):
        if stage not in STAGES:
            raise ValueError(f"Noise2MusicModel.stage={stage!r}: one of {STAGES}")
        if (audio_samples * rate) % source_rate:
            raise ValueError(f"Noise2MusicModel: {audio_samples} samples at {source_rate} Hz are not a whole number "
                             f"of samples at rate={rate}")
        self.length = audio_samples * rate // source_rate
        if self.length % unet.downsampling:
            raise ValueError(f"Noise2MusicModel: {self.length} samples at {rate} Hz are not a multiple of the U-Net's "
                             f"prod(strides) = {unet.downsampling}; change audio_samples (pad or crop the clips)")
        if stage == "cascader" and (not low_rate or rate % low_rate):
            raise ValueError(f"Noise2MusicModel(stage='cascader'): low_rate={low_rate} must divide rate={rate}: the "
                             f"cascade's sample rates must chain")
        self.stage, self.source_rate, self.audio_samples = stage, source_rate, audio_samples
        self.rate, self.low_rate, self.text_length = rate, low_rate, text_length
        self.schedule = diffusion.Schedule(schedule)
        self.parameterization, self.weighting, self.text_drop = parameterization, weighting, text_drop
        self.cond_t_max, self.cond_blur_sigma, self.cond_blur_size = cond_t_max, tuple(cond_blur_sigma), cond_blur_size
        self.net = _Net(unet, text_encoder)

    # -- BaseModel ---------------------------------------------------------------
    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {"audio": jax.ShapeDtypeStruct((batch_size, self.audio_samples), jnp.float32),
                "text_tokens": jax.ShapeDtypeStruct((batch_size, self.text_length), jnp.int32),
                "text_mask": jax.ShapeDtypeStruct((batch_size, self.text_length), jnp.int32)}

    def _inputs(self, batch, rng, train: bool):
        b = batch["audio"].shape[0]
        x = conditioning.fft_resample(batch["audio"][..., None], self.length)
        cond = None
        if self.stage == "cascader":
            low = conditioning.fft_resample(batch["audio"][..., None], self.length * self.low_rate // self.rate)
            cond = conditioning.fft_upsample(low, self.rate // self.low_rate)
            if train:
                cond, _ = conditioning.augment(cond, jax.random.fold_in(rng, 1), self.schedule, self.cond_t_max,
                                               blur="1d", blur_sigma=self.cond_blur_sigma,
                                               blur_size=self.cond_blur_size)
        drop = (jax.random.uniform(jax.random.fold_in(rng, 2), (b,)) < self.text_drop).astype(jnp.int32) \
            if train else jnp.zeros((b,), jnp.int32)
        return x, cond, drop

    def init_params(self, rng, batch):
        x, cond, drop = self._inputs(batch, rng, train=False)
        return self.net.init(rng, x, jnp.zeros((x.shape[0],)), batch["text_tokens"], batch["text_mask"], drop,
                             cond)["params"]

    def loss(self, params, batch, rng):
        return self._loss(params, batch, rng, train=True)

    def eval_metrics(self, params, batch):
        loss, metrics = self._loss(params, batch, jax.random.PRNGKey(0), train=False)
        return {"loss": loss, **metrics}

    def _loss(self, params, batch, rng, train: bool):
        x, cond, drop = self._inputs(batch, rng, train)
        b = x.shape[0]
        t = jax.random.uniform(jax.random.fold_in(rng, 3), (b,))
        eps = jax.random.normal(jax.random.fold_in(rng, 4), x.shape)
        x_t = diffusion.q_sample(self.schedule, x, t, eps)
        pred = self.net.apply({"params": params}, x_t, t, batch["text_tokens"], batch["text_mask"], drop, cond)
        per = diffusion.diffusion_loss(self.schedule, pred, x, eps, t, self.parameterization, self.weighting)
        low_t = (t < 0.5).astype(jnp.float32)
        metrics = {"loss_t_below_half": jnp.sum(per * low_t) / jnp.maximum(low_t.sum(), 1.0),
                   "text_dropped": drop.astype(jnp.float32).mean(), "target_rms": jnp.sqrt(jnp.mean(x * x))}
        return per.mean(), metrics
