"""The audio front end, on device: raw 16 kHz waveform -> normalised log-mel, SpecAugment, and the
80-bin log-mel in [-1, 1] of Noise2Music's spectrogram path (`MelSpec`).

Choices (docs/PAPERS.md §1 fixes window, hop, bins and rate; the rest is ours):
- 25 ms periodic Hann window (400 samples), 10 ms hop (160), FFT size 512.
- Frames are centred: the waveform is zero-padded by (window - hop) / 2 = 120 samples at each end,
  so a T-sample clip gives exactly T / hop frames (10 s -> 1000 frames, the papers' 64 x 1000).
- Power spectrum -> HTK-mel triangles (the same construction as `tf.signal.linear_to_mel_weight_matrix`,
  DC bin excluded), 125-7500 Hz by default (Hershey et al.'s VGGish front end; a setting).
- `log(max(mel, log_floor))`, then `(x - norm_mean) / norm_std` with fixed constants measured on
  the demo corpus (64 bins: mean -0.05, std 3.55), so features are roughly zero-mean and unit-variance
  with no data-dependent state; re-measure them for very different audio.

Everything is jit-able, batch-first and shape-static; `tests/test_audio_frontend.py` checks it
against `tf.signal`.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import gin
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError


def hz_to_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def mel_matrix(num_mels: int, num_bins: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """[num_bins, num_mels] HTK-mel triangle weights; bins are linear from 0 Hz to Nyquist."""
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ConfigError(f"LogMel: need 0 <= fmin ({fmin}) < fmax ({fmax}) <= sample_rate/2 ({sample_rate / 2}).")
    freqs = hz_to_mel(np.linspace(0.0, sample_rate / 2, num_bins)[1:])[:, None]
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((freqs - lower) / (center - lower), (upper - freqs) / (upper - center)))
    return np.pad(w, [[1, 0], [0, 0]]).astype(np.float32)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LogMel:
    """waveform [batch, samples] (float, [-1, 1]) -> features [batch, frames, num_mels]."""

    num_mels: int = 64
    sample_rate: int = 16_000
    window_ms: float = 25.0
    hop_ms: float = 10.0
    fft_size: int = 512
    fmin: float = 125.0
    fmax: float = 7500.0
    log_floor: float = 1e-5
    norm_mean: float = 0.0
    norm_std: float = 3.5

    @property
    def window(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop

    def hann(self) -> np.ndarray:
        n = np.arange(self.window)
        return (0.5 - 0.5 * np.cos(2 * np.pi * n / self.window)).astype(np.float32)  # periodic

    def frames(self, wave: jax.Array) -> jax.Array:
        """[batch, samples] -> [batch, frames, window], centred (see module doc)."""
        pad = (self.window - self.hop) // 2
        n = self.num_frames(wave.shape[-1])
        wave = jnp.pad(wave, [(0, 0), (pad, self.window - self.hop - pad)])
        idx = np.arange(n)[:, None] * self.hop + np.arange(self.window)[None, :]
        return wave[:, idx]

    def power_spectrum(self, wave: jax.Array) -> jax.Array:
        """[batch, samples] -> [batch, frames, fft_size // 2 + 1]."""
        if self.window > self.fft_size:
            raise ConfigError(f"LogMel.fft_size={self.fft_size} is shorter than the window ({self.window}).")
        spec = jnp.fft.rfft(self.frames(wave.astype(jnp.float32)) * self.hann(), n=self.fft_size)
        return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2

    def log_mel(self, wave: jax.Array) -> jax.Array:
        """Un-normalised natural-log mel power, [batch, frames, num_mels]."""
        mel = self.power_spectrum(wave) @ mel_matrix(self.num_mels, self.fft_size // 2 + 1, self.sample_rate,
                                                     self.fmin, self.fmax)
        return jnp.log(jnp.maximum(mel, self.log_floor))

    def __call__(self, wave: jax.Array) -> jax.Array:
        return (self.log_mel(wave) - self.norm_mean) / self.norm_std


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """Time and frequency masking (Park et al. 2019), training only.

    features [batch, frames, mels] -> same; masked cells are set to 0 (the normalised mean).
    Each example draws its own masks: widths uniform in [0, max_*], positions uniform.
    """

    num_time_masks: int = 2
    time_mask_max: int = 100
    num_freq_masks: int = 2
    freq_mask_max: int = 8

    def __call__(self, x: jax.Array, rng: jax.Array) -> jax.Array:
        b, t, f = x.shape

        def masks(key, count, max_width, size):
            if count == 0 or max_width == 0:
                return jnp.zeros((b, size), bool)
            kw, ks = jax.random.split(key)
            width = jax.random.randint(kw, (b, count), 0, max_width + 1)
            start = (jax.random.uniform(ks, (b, count)) * (size - width + 1)).astype(jnp.int32)
            pos = jnp.arange(size)[None, None, :]
            return jnp.any((pos >= start[..., None]) & (pos < (start + width)[..., None]), axis=1)

        kt, kf = jax.random.split(rng)
        mask = masks(kt, self.num_time_masks, min(self.time_mask_max, t), t)[:, :, None] | \
            masks(kf, self.num_freq_masks, min(self.freq_mask_max, f), f)[:, None, :]
        return jnp.where(mask, jnp.zeros_like(x), x)


# -- the spectrogram path's representation (docs/PAPERS.md §2) ------------------------------------
# 80-bin log-mel, 100 frames/s, in [-1, 1]: the front end above with 80 bins over 0-8 kHz; the log
# power is mapped linearly from [log(1e-5), log(1e-5) + 20] to [-1, 1] and clipped: -1 is the
# floor (silence), and on the demo corpus the 99.9th percentile of log power is 6.2 (0.89 after
# scaling) and the maximum 8.0, so the clip is rarely reached.  A T-sample clip gives exactly
# T / 160 frames (30 s -> 3,000).  Noise2Music's spectrogram generator and vocoder use it; the
# evaluation report draws it.
@dataclasses.dataclass(frozen=True)
class MelSpec:
    num_mels: int = 80
    sample_rate: int = 16000
    fmax: float = 8000.0
    log_floor: float = 1e-5
    log_range: float = 20.0

    @property
    def front_end(self) -> LogMel:
        return LogMel(num_mels=self.num_mels, sample_rate=self.sample_rate, fmin=0.0, fmax=self.fmax,
                      log_floor=self.log_floor)

    @property
    def hop(self) -> int:
        return self.front_end.hop

    def __call__(self, wave):
        """[B, T] waveform -> [B, T / hop, num_mels] in [-1, 1]."""
        lo = math.log(self.log_floor)
        x = (self.front_end.log_mel(wave) - lo) / self.log_range
        return jnp.clip(2.0 * x - 1.0, -1.0, 1.0)

    def save_png(self, spec, path: str, title: str = "") -> str:
        """One [frames, num_mels] spectrogram in [-1, 1] -> a PNG a person can read (`common.plots`)."""
        from common import plots

        seconds = np.asarray(spec).shape[0] * self.hop / self.sample_rate
        return plots.spectrogram_png(spec, path, seconds, f"mel bin (0-{self.fmax / 1000:g} kHz)", title)

    def image(self, spec) -> np.ndarray:
        """[frames, num_mels] in [-1, 1] -> a uint8 RGB image [num_mels, frames, 3] (for TensorBoard)."""
        from common import plots

        return plots.spectrogram_rgb(spec)
