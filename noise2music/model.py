"""Noise2Music stages for the trainer (docs/PAPERS.md §2): the diffusion loss of one U-Net of the cascade.

    Noise2MusicModel(unet, stage="generator", rate=3200)                      # text -> 3.2 kHz
    Noise2MusicModel(unet, stage="cascader", rate=16000, low_rate=3200)       # text + 3.2 kHz -> 16 kHz
    Noise2MusicModel(unet, stage="super_resolution", source_rate=24000, rate=24000, low_rate=16000,
                     text_encoder=None)                                       # 16 kHz -> 24 kHz
    Noise2MusicModel(unet, stage="spectrogram_generator", text_length=96, weighting="sigma")  # text -> log-mel
    Noise2MusicModel(unet, stage="vocoder", rate=16000, text_encoder=None)    # log-mel -> 16 kHz

What each stage generates and is conditioned on is its `noise2music.stages.StageSpec`.  Batches
are the corpus tasks' (`audio` [B, T] at `source_rate`, `text_tokens`, `text_mask`).  Inside the
jitted step:

* the target x is the clip FFT-resampled to `rate` ([B, L, 1]), or for the spectrogram generator
  its 80-bin log-mel in [-1, 1] ([B, frames, 80], `layers.audio_frontend.MelSpec`);
* cascader and super-resolution: the low-fi input is the clip at `low_rate`, FFT-resampled back to
  `rate` and stacked with x_t as input channels; vocoder: the clip's log-mel is added at the
  bottom of the U (`UNet1D(bottom=...)`); in training both are augmented (docs/PAPERS.md §2.2:
  blur and noise at s ~ U[0, cond_t_max]);
* the text goes through the frozen T5 encoder (a stop-gradient), or with `text_embeddings` (a
  store of precomputed encoder outputs, `data.text_embeddings`) the batch brings them as
  `text_embeddings` [B, L, D] and the step runs no encoder; it is dropped for `text_drop` of the
  examples by zeroing the cross-attention outputs;
* t ~ U[0, 1]; loss E[w_t ||target - prediction||^2] over the valid (unpadded) positions.

Lengths the U-Net cannot divide: a length that is not a multiple of prod(strides) is **padded at
the end** (zeros for audio, -1 = silence for log-mel) to the next multiple, and the padding is
masked out of the loss; the sampler generates the padded length and crops it.  For the paper's
30 s clips: 96,000 samples at 3.2 kHz -> 98,304 (4^6 = 4,096 x 24; 2.4% padding) for the waveform
generator, 3,000 frames -> 3,072 (96 x 32) for the spectrogram generator; the cascaders' and
vocoder's 3.2 s snippets divide exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import logging

import gin
import jax
import jax.numpy as jnp
import flax.linen as nn

from common.errors import ConfigError
from noise2music import conditioning, diffusion
from layers import precision
from layers.audio_frontend import MelSpec
from noise2music.stages import LOWFI, MEL, MEL_BOTTOM, spec as stage_spec
from noise2music.t5 import T5Config, T5Encoder
from noise2music.unet import UNet1D
from trainer.base_model import BaseModel

log = logging.getLogger(__name__)

# The building blocks are configured from gin files (configs/noise2music/*.gin).
gin.external_configurable(UNet1D, module="noise2music")
gin.external_configurable(T5Config, module="noise2music")


class StageNet(nn.Module):
    """The stage's U-Net and its (frozen) text encoder; `encode` once, `denoise` per step."""

    unet: UNet1D
    text: T5Config | None
    dtype: jnp.dtype = jnp.float32   # the text encoder's compute dtype (the U-Net has its own)

    def setup(self):
        self.text_encoder = T5Encoder(self.text, self.dtype) if self.text is not None else None

    def encode(self, tokens, mask):
        return None if self.text_encoder is None else jax.lax.stop_gradient(self.text_encoder(tokens, mask))

    def denoise(self, x_t, t, emb, mask, drop, cond=None, bottom=None):
        out = self.unet(x_t, t, text=emb, text_mask=mask, drop_text=drop, cond=cond, bottom=bottom)
        return out.astype(jnp.float32)   # the loss and the sampler's updates stay float32

    def __call__(self, x_t, t, tokens, mask, drop, cond=None, bottom=None):
        return self.denoise(x_t, t, self.encode(tokens, mask), mask, drop, cond, bottom)


def _pad_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@gin.configurable
class Noise2MusicModel(BaseModel):
    """One stage of the cascade.

    Args:
      unet: the stage's `UNet1D`.
      stage: a name in `noise2music.stages.STAGES` (what it generates and is conditioned on).
      source_rate / audio_samples: the batch's clips (16 kHz, or 24 kHz for super-resolution).
      rate / low_rate: the stage's output rate and (low-fi conditioned stages) its input rate.
      text_encoder: a `T5Config` (frozen encoder), or None for a model without text.
      text_length: tokens per text.
      schedule: 'cosine' or 'linear'; parameterization 'eps' or 'v'; weighting 'simple' or 'sigma'.
      text_drop: the share of examples trained without text (classifier-free guidance).
      cond_t_max / cond_blur / cond_blur_sigma / cond_blur_size: conditioning augmentation (blur
        None, '1d' or '2d').
      mel: the spectrogram representation (spectrogram generator and vocoder).
      vocabulary: the text tokens' vocabulary (a seqio vocabulary: the gin macro TEXT_VOCAB, shared
        with the task; T5's SentencePiece, `data.vocab.T5SentencePieceVocabulary`); the sampler
        tokenizes prompts with it, and a `T5Config` whose `vocab_size` is None takes its size.
      text_checkpoint: a Hugging Face T5 (v1.1) encoder checkpoint (a folder with
        `model.safetensors`, or the file) loaded into the frozen encoder when a run starts; it
        must have been trained with `vocabulary`'s SentencePiece model (`noise2music.t5.load_hf_t5`).
      text_embeddings: a store of the encoder's outputs for every training text (the macro
        TEXT_EMBEDDINGS, built by `python -m noise2music.embed_texts`; the task reads it too): the
        train step takes the batch's `text_embeddings` instead of running T5, as the paper does.  The
        run keeps the frozen encoder for its prompts (sampling); at a fresh start its parameters, the
        vocabulary and the text length are checked against the store's.
      dtype / param_dtype: the U-Net's and text encoder's compute dtype and the parameters' dtype,
        'float32' or 'bfloat16' (layers/precision.py); the prediction, the loss and the sampler
        stay float32.
    """

    programs = {"sample": "noise2music.cascade:sample_step_program"}   # for trainer.compile

    def __init__(self, unet: UNet1D, stage: str = "generator", source_rate: int = 16000, audio_samples: int = 160000,
                 rate: int = 3200, low_rate: int | None = None, text_encoder: T5Config | None = None,
                 text_length: int = 64, schedule: str = "cosine", parameterization: str = "eps",
                 weighting: str = "simple", text_drop: float = 0.1, cond_t_max: float = 0.5,
                 cond_blur: str | None = "1d", cond_blur_sigma: tuple[float, float] = (0.1, 5.0),
                 cond_blur_size: int = 10, mel: MelSpec = MelSpec(), vocabulary=None,
                 text_checkpoint: str | None = None, text_embeddings: str | None = None, dtype: str = "float32",
                 param_dtype: str = "float32"):
        self.spec = sp = stage_spec(stage)
        self.vocabulary, self.text_checkpoint = vocabulary, text_checkpoint
        if text_checkpoint and text_encoder is None:
            raise ConfigError(f"Noise2MusicModel.text_checkpoint={text_checkpoint!r}, but stage {stage!r} has no text "
                             f"encoder")
        if text_embeddings and text_encoder is None:
            raise ConfigError(f"Noise2MusicModel.text_embeddings={text_embeddings!r} (TEXT_EMBEDDINGS), but stage "
                             f"{stage!r} has no text encoder")
        self.text_embeddings = text_embeddings
        if text_encoder is not None and text_encoder.vocab_size is None:
            if vocabulary is None:
                raise ConfigError("T5Config.vocab_size=None takes the size of Noise2MusicModel.vocabulary, "
                                 "which is not set (bind it to %TEXT_VOCAB, or give T5Config.vocab_size)")
            text_encoder = dataclasses.replace(text_encoder, vocab_size=int(vocabulary.vocab_size))
        if cond_blur not in (None, "1d", "2d"):
            raise ConfigError(f"Noise2MusicModel.cond_blur={cond_blur!r}: None, '1d' or '2d'")
        self.stage, self.source_rate, self.audio_samples = stage, source_rate, audio_samples
        self.rate, self.low_rate, self.text_length, self.mel = rate, low_rate, text_length, mel
        compute = precision.dtype(dtype, "Noise2MusicModel.dtype")
        self.param_dtype = precision.dtype(param_dtype, "Noise2MusicModel.param_dtype")
        self.unet = unet = unet.clone(dtype=compute)
        if sp.uses_mel:
            reads_mel_audio = sp.conditioning == MEL_BOTTOM
            if source_rate != mel.sample_rate or (reads_mel_audio and rate != mel.sample_rate):
                raise ConfigError(f"Noise2MusicModel(stage={stage!r}): the spectrogram is of {mel.sample_rate} Hz audio; "
                                 f"source_rate={source_rate}" + (f", rate={rate}" if reads_mel_audio else ""))
            if audio_samples % mel.hop:
                raise ConfigError(f"Noise2MusicModel: audio_samples={audio_samples} is not a whole number of "
                                 f"{mel.hop}-sample spectrogram frames")
        if sp.output == MEL:
            self.rate = None
            self.length = audio_samples // mel.hop
        else:
            if (audio_samples * rate) % source_rate:
                raise ConfigError(f"Noise2MusicModel: {audio_samples} samples at {source_rate} Hz are not a whole "
                                 f"number of samples at rate={rate}")
            self.length = audio_samples * rate // source_rate
        if sp.conditioning == MEL_BOTTOM and unet.downsampling != mel.hop:
            raise ConfigError(f"Noise2MusicModel(stage={stage!r}): prod(UNet1D.strides) = {unet.downsampling} must "
                             f"equal the spectrogram hop ({mel.hop} samples) so the spectrogram aligns with the bottom "
                             f"of the U")
        if sp.conditioning == LOWFI:
            if not low_rate or low_rate >= rate or (audio_samples * low_rate) % source_rate:
                raise ConfigError(f"Noise2MusicModel(stage={stage!r}): low_rate={low_rate} must be below rate={rate} and "
                                 f"give whole samples: the cascade's sample rates must chain")
        channels = mel.num_mels if sp.output == MEL else 1
        if unet.out_channels != channels:
            raise ConfigError(f"Noise2MusicModel(stage={stage!r}): UNet1D.out_channels={unet.out_channels}, but the stage "
                             f"predicts {channels} channel(s)")
        self.channels = channels
        self.padded = _pad_to(self.length, unet.downsampling)
        self.schedule = diffusion.Schedule(schedule)
        self.parameterization, self.weighting, self.text_drop = parameterization, weighting, text_drop
        self.cond_t_max, self.cond_blur = cond_t_max, cond_blur
        self.cond_blur_sigma, self.cond_blur_size = tuple(cond_blur_sigma), cond_blur_size
        self.net = StageNet(unet, text_encoder, compute)

    @property
    def has_text(self) -> bool:
        return self.net.text is not None

    def load_pretrained(self, params, shardings):
        """Fresh-run hook: checks the tokens fit the T5 embedding, loads `text_checkpoint`, and
        checks a `text_embeddings` store was made by this encoder."""
        params = self.load_text_encoder(params, shardings)
        if self.text_embeddings:
            from data import text_embeddings

            text_embeddings.Store.open(self.text_embeddings).check(
                text_length=self.text_length, d_model=self.net.text.d_model,
                vocabulary_file=getattr(self.vocabulary, "sentencepiece_model_file", None),
                fingerprint=text_embeddings.fingerprint(params["text_encoder"]),
                what="Noise2MusicModel.text_embeddings (TEXT_EMBEDDINGS)")
        return params

    def load_text_encoder(self, params, shardings):
        """Checks the tokens fit the T5 embedding and loads `text_checkpoint` into `params`."""
        if not self.has_text:
            return params
        if self.vocabulary is not None and int(self.vocabulary.vocab_size) > self.net.text.vocab_size:
            raise ConfigError(f"the text vocabulary ({getattr(self.vocabulary, 'sentencepiece_model_file', '')}) has "
                             f"{self.vocabulary.vocab_size} tokens but T5Config.vocab_size is "
                             f"{self.net.text.vocab_size}: ids beyond it have no embedding")
        if not self.text_checkpoint:
            return params
        from noise2music.t5 import load_hf_t5
        from layers.pretrained import place

        loaded = load_hf_t5(self.text_checkpoint, self.net.text, self.vocabulary)
        params = dict(params)
        params["text_encoder"] = place(loaded, params["text_encoder"], shardings["text_encoder"],
                                       what=f"Noise2MusicModel.text_checkpoint={self.text_checkpoint!r}")
        log.info("T5 encoder initialised from %s", self.text_checkpoint)
        return params

    def without_remat(self) -> "Noise2MusicModel":
        if self.unet.remat == "none":
            return self
        other = copy.copy(self)
        other.unet = self.unet.clone(remat="none")
        other.net = self.net.clone(unet=other.unet)
        return other

    # -- representations -----------------------------------------------------------
    def padded_length(self, length: int) -> int:
        return _pad_to(length, self.unet.downsampling)

    def pad(self, x, length: int | None = None):
        """[B, n, C] -> [B, padded_length(n), C] (silence: zeros for audio, -1 for log-mel)."""
        n = x.shape[1]
        extra = self.padded_length(n) - n
        return jnp.pad(x, [(0, 0), (0, extra), (0, 0)], constant_values=self.spec.pad_value) if extra else x

    def target(self, audio):
        """The clip [B, T] at source_rate -> the stage's x [B, length, C] (unpadded)."""
        if self.spec.output == MEL:
            return self.mel(audio)
        return conditioning.fft_resample(audio[..., None], self.length)

    def lowfi(self, low, length: int):
        """Low-fi audio [B, n, 1] at low_rate -> the conditioning channels at `rate`, [B, length, 1]."""
        return conditioning.fft_resample(low, length)

    def _conditioning(self, audio, rng, train: bool):
        """-> (cond, bottom): the stacked low-fi channels or the bottom spectrogram, augmented in training."""
        cond = bottom = None
        aug = dict(sched=self.schedule, t_max=self.cond_t_max, blur=self.cond_blur, blur_sigma=self.cond_blur_sigma,
                   blur_size=self.cond_blur_size)
        if self.spec.conditioning == LOWFI:
            n_low = self.audio_samples * self.low_rate // self.source_rate
            cond = self.lowfi(conditioning.fft_resample(audio[..., None], n_low), self.length)
            if train:
                cond, _ = conditioning.augment(cond, jax.random.fold_in(rng, 1), **aug)
            cond = self.pad(cond)
        elif self.spec.conditioning == MEL_BOTTOM:
            bottom = self.mel(audio)
            if train:
                bottom, _ = conditioning.augment(bottom, jax.random.fold_in(rng, 1), **aug)
        return cond, bottom

    # -- BaseModel ---------------------------------------------------------------
    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        spec = {"audio": jax.ShapeDtypeStruct((batch_size, self.audio_samples), jnp.float32),
                "text_tokens": jax.ShapeDtypeStruct((batch_size, self.text_length), jnp.int32),
                "text_mask": jax.ShapeDtypeStruct((batch_size, self.text_length), jnp.int32)}
        if self.text_embeddings:
            spec["text_embeddings"] = jax.ShapeDtypeStruct((batch_size, self.text_length, self.net.text.d_model),
                                                           jnp.float32)
        return spec

    def _inputs(self, batch, rng, train: bool):
        b = batch["audio"].shape[0]
        x = self.pad(self.target(batch["audio"]))
        cond, bottom = self._conditioning(batch["audio"], rng, train)
        drop = (jax.random.uniform(jax.random.fold_in(rng, 2), (b,)) < self.text_drop).astype(jnp.int32) \
            if train and self.has_text else jnp.zeros((b,), jnp.int32)
        return x, cond, bottom, drop

    def init_params(self, rng, batch):
        x, cond, bottom, drop = self._inputs(batch, rng, train=False)
        params = self.net.init(rng, x, jnp.zeros((x.shape[0],)), batch["text_tokens"], batch["text_mask"], drop,
                               cond, bottom)["params"]
        return precision.cast_params(params, self.param_dtype)

    def loss(self, params, batch, rng):
        return self._loss(params, batch, rng, train=True)

    def eval_metrics(self, params, batch):
        loss, metrics = self._loss(params, batch, jax.random.PRNGKey(0), train=False)
        return {"loss": loss, **metrics}

    def _loss(self, params, batch, rng, train: bool):
        x, cond, bottom, drop = self._inputs(batch, rng, train)
        b = x.shape[0]
        t = jax.random.uniform(jax.random.fold_in(rng, 3), (b,))
        eps = jax.random.normal(jax.random.fold_in(rng, 4), x.shape)
        x_t = diffusion.q_sample(self.schedule, x, t, eps)
        if self.text_embeddings:
            emb = batch["text_embeddings"].astype(self.net.dtype)   # what the encoder gives, in its dtype
            pred = self.denoise(params, x_t, t, emb, batch["text_mask"], drop, cond, bottom)
        else:
            pred = self.net.apply({"params": params}, x_t, t, batch["text_tokens"], batch["text_mask"], drop, cond,
                                  bottom)
        valid = (jnp.arange(x.shape[1]) < self.length).astype(jnp.float32)
        per = diffusion.diffusion_loss(self.schedule, pred, x, eps, t, self.parameterization, self.weighting,
                                       mask=None if self.padded == self.length else valid)
        low_t = (t < 0.5).astype(jnp.float32)
        metrics = {"loss_t_below_half": jnp.sum(per * low_t) / jnp.maximum(low_t.sum(), 1.0),
                   "text_dropped": drop.astype(jnp.float32).mean(), "target_rms": jnp.sqrt(jnp.mean(x * x))}
        return per.mean(), metrics

    # -- inference (noise2music.sampler, noise2music.cascade) ---------------------------
    def encode_text(self, params, tokens, mask):
        return self.net.apply({"params": params}, tokens, mask, method=StageNet.encode)

    def denoise(self, params, x_t, t, emb, mask, drop, cond=None, bottom=None):
        return self.net.apply({"params": params}, x_t, t, emb, mask, drop, cond, bottom, method=StageNet.denoise)

    def sampler_inputs(self, audio):
        """What the sampler feeds this stage, made from clips [N, T] at source_rate: the low-fi
        audio at low_rate (LOWFI), the log-mel (MEL_BOTTOM), else None."""
        if self.spec.conditioning == LOWFI:
            n_low = audio.shape[1] * self.low_rate // self.source_rate
            return conditioning.fft_resample(jnp.asarray(audio)[..., None], n_low)[..., 0]
        if self.spec.conditioning == MEL_BOTTOM:
            return self.mel(jnp.asarray(audio))
        return None
