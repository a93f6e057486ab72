"""Low-fi conditioning: FFT upsampling against a band-limited sine, blur, noise augmentation."""
import jax
import jax.numpy as jnp
import numpy as np

from noise2music import conditioning as c
from noise2music.diffusion import Schedule


def test_fft_upsample_reproduces_a_band_limited_sine():
    n, f = 640, 200.0  # 3.2 kHz, 200 Hz: an integer number of periods in 0.2 s
    t_lo = np.arange(n) / 3200.0
    t_hi = np.arange(5 * n) / 16000.0
    x = np.sin(2 * np.pi * f * t_lo)[None, :, None].astype(np.float32)
    up = c.fft_upsample(jnp.asarray(x), 5)
    assert up.shape == (1, 5 * n, 1)
    np.testing.assert_allclose(up[0, :, 0], np.sin(2 * np.pi * f * t_hi), atol=1e-4)
    np.testing.assert_allclose(up[:, ::5], x, atol=1e-4)  # the original samples are kept


def test_blur_smooths_and_keeps_the_mean():
    x = jnp.zeros((2, 64, 1)).at[:, 32, 0].set(1.0)
    y = c.blur_1d(x, jnp.array([0.5, 3.0]), 10)
    assert y.shape == x.shape
    assert float(y[1, 32, 0]) < float(y[0, 32, 0]) < 1.0                # larger sigma, flatter peak
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    spec = jnp.zeros((1, 20, 16)).at[0, 10, 8].set(1.0)
    z = c.blur_2d(spec, jnp.array([1.0]), 5)
    assert float(z[0, 10, 8]) < 1.0 and float(z[0, 9, 8]) > 0 and float(z[0, 10, 7]) > 0


def test_augment_noises_at_a_time_below_t_max():
    sched = Schedule("cosine")
    cond = jnp.ones((512, 32, 1))
    out, s = c.augment(cond, jax.random.PRNGKey(0), sched, t_max=0.5, blur="1d")
    assert out.shape == cond.shape and float(s.max()) <= 0.5 and float(s.min()) >= 0.0
    a, sg = sched.alpha_sigma(s)
    resid = (out[:, 16, 0] - a) / sg          # the noise that was added, at an interior sample
    assert abs(float(resid.mean())) < 0.15 and abs(float(resid.std()) - 1.0) < 0.15


def test_fft_resample_down_keeps_a_band_limited_sine():
    t_hi = np.arange(3200) / 16000.0
    t_lo = np.arange(640) / 3200.0
    x = jnp.asarray(np.sin(2 * np.pi * 400.0 * t_hi)[None, :, None], jnp.float32)
    np.testing.assert_allclose(c.fft_resample(x, 640)[0, :, 0], np.sin(2 * np.pi * 400.0 * t_lo), atol=1e-4)
    np.testing.assert_allclose(c.fft_resample(c.fft_resample(x, 640), 3200), x, atol=1e-4)
