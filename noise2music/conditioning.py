"""Low-fi conditioning of the cascaders, the vocoder and super-resolution (docs/PAPERS.md §2 and §2.2).

* `fft_upsample(x, factor)`: the low-fi audio upsampled by zero-extending its spectrum (rFFT ->
  zero-pad -> inverse rFFT, amplitude preserved), as the paper does before stacking it with x_t.
* `augment(cond, key, sched, t_max, blur_sigma, blur_size)`: conditioning augmentation in
  training: Gaussian blur with a random sigma, then noise at a random diffusion time in
  [0, t_max] (x -> alpha_s x + sigma_s eps).  The cascader blurs 1-D (kernel 10, sigma in
  [0.1, 5.0], t_max 0.5); the vocoder blurs its spectrogram 2-D (5 x 5, sigma in [0.2, 1.0],
  t_max 1.0); super-resolution uses t_max 1.0 without blur.

Pure `jax.numpy`; shapes [B, L, C] (audio) or [B, frames, mels] (spectrograms).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from noise2music.diffusion import Schedule


def fft_upsample(x, factor: int, axis: int = 1):
    """[.., L, ..] -> [.., L * factor, ..]: the spectrum zero-extended (band-limited interpolation)."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"fft_upsample: factor must be a positive integer, got {factor}")
    if factor == 1:
        return x
    n = x.shape[axis]
    spec = jnp.fft.rfft(x.astype(jnp.float32), axis=axis)
    out_n = n * factor
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, out_n // 2 + 1 - spec.shape[axis])
    return jnp.fft.irfft(jnp.pad(spec, pad), n=out_n, axis=axis) * factor


def fft_resample(x, n_out: int, axis: int = 1):
    """Band-limited resampling of [.., L, ..] to n_out samples along `axis` (spectrum truncated or
    zero-extended, amplitude preserved): 16 kHz -> 3.2 kHz is n_out = L / 5."""
    n = x.shape[axis]
    if n_out == n:
        return x
    spec = jnp.fft.rfft(x.astype(jnp.float32), axis=axis)
    keep = min(spec.shape[axis], n_out // 2 + 1)
    spec = jax.lax.slice_in_dim(spec, 0, keep, axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n_out // 2 + 1 - keep)
    return jnp.fft.irfft(jnp.pad(spec, pad), n=n_out, axis=axis) * (n_out / n)


def _gauss(sigma, size: int):
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
    w = jnp.exp(-0.5 * jnp.square(r / sigma))
    return w / w.sum()


def blur_1d(x, sigma, size: int = 10):
    """Per-example Gaussian blur along the length of [B, L, C] (sigma [B])."""
    k = jax.vmap(lambda s: _gauss(s, size))(sigma)                       # [B, size]

    def one(xb, kb):  # xb [L, C]
        return jax.vmap(lambda col: jnp.convolve(col, kb, mode="same"), in_axes=1, out_axes=1)(xb)

    return jax.vmap(one)(x, k)


def blur_2d(x, sigma, size: int = 5):
    """Per-example separable Gaussian blur of [B, frames, mels] (sigma [B])."""
    y = blur_1d(x, sigma, size)                                           # along frames
    return jnp.swapaxes(blur_1d(jnp.swapaxes(y, 1, 2), sigma, size), 1, 2)  # along mels


def augment(cond, key, sched: Schedule, t_max: float, blur: str | None = None,
            blur_sigma: tuple[float, float] = (0.1, 5.0), blur_size: int = 10):
    """Training-time conditioning augmentation: blur (None, '1d' or '2d') with sigma ~ U(blur_sigma),
    then noise at s ~ U[0, t_max].  Returns (augmented cond, s [B]): s can condition the model."""
    b = cond.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    if blur is not None:
        sigma = jax.random.uniform(k1, (b,), minval=blur_sigma[0], maxval=blur_sigma[1])
        cond = blur_1d(cond, sigma, blur_size) if blur == "1d" else blur_2d(cond, sigma, blur_size)
    s = jax.random.uniform(k2, (b,), maxval=t_max)
    a, sg = sched.alpha_sigma(s)
    shape = (b,) + (1,) * (cond.ndim - 1)
    return a.reshape(shape) * cond + sg.reshape(shape) * jax.random.normal(k3, cond.shape), s
