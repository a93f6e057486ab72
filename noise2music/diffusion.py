"""Continuous-time VP diffusion of Noise2Music (docs/PAPERS.md §2.2): schedules, parameterisations,
losses, step schedules, classifier-free guidance with dynamic clipping, and the ancestral step.

    sched = Schedule("cosine")                       # log-SNR +20 (t=0) .. -20 (t=1)
    x_t = q_sample(sched, x, t, eps)                 # alpha_t x + sigma_t eps
    loss = diffusion_loss(sched, pred, x, eps, t, parameterization="eps", weighting="simple")
    times = step_times("generator")                  # the paper's 1000 front-heavy steps, 1 -> 0
    x_s = denoise_step(sched, pred, x_t, t, s, z, gamma=0.0, clip="dynamic")   # one sampler step

Everything is pure `jax.numpy` (no Flax, no TensorFlow): it runs inside the jitted train step and
the jitted step of the sampler (`noise2music.sampler`, which runs the steps).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

_B = float(np.arctan(np.exp(-10.0)))
_A = float(np.arctan(np.exp(10.0))) - _B


@dataclasses.dataclass(frozen=True)
class Schedule:
    """alpha_t, sigma_t with alpha^2 + sigma^2 = 1.

    * 'cosine': alpha_t = cos(a t + b), b = arctan(e^-10), a = arctan(e^10) - b, so the log-SNR
      runs from +20 at t = 0 to -20 at t = 1.
    * 'linear': DDPM's linear beta from `beta_start` = 1e-4 to `beta_end` = 0.02 over
      `num_steps` = 1000 steps, in continuous time: beta(t) = N (beta_start + (beta_end -
      beta_start) t), alpha_t^2 = exp(-int_0^t beta) (the VP SDE limit of the discrete chain).
    """

    name: str = "cosine"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000

    def __post_init__(self):
        if self.name not in ("cosine", "linear"):
            raise ConfigError(f"Schedule.name={self.name!r}: use 'cosine' or 'linear'.")

    def alpha_sigma(self, t):
        t = jnp.asarray(t, jnp.float32)
        if self.name == "cosine":
            phi = _A * t + _B
            return jnp.cos(phi), jnp.sin(phi)
        n, b0, b1 = self.num_steps, self.beta_start, self.beta_end
        log_abar = -n * (b0 * t + 0.5 * (b1 - b0) * t * t)
        return jnp.exp(0.5 * log_abar), jnp.sqrt(-jnp.expm1(log_abar))

    def log_snr(self, t):
        a, s = self.alpha_sigma(t)
        return 2.0 * (jnp.log(a) - jnp.log(s))


def _bcast(v, x):
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def q_sample(sched: Schedule, x, t, eps):
    """x_t = alpha_t x + sigma_t eps (t per example, [B])."""
    a, s = sched.alpha_sigma(t)
    return _bcast(a, x) * x + _bcast(s, x) * eps


def target(sched: Schedule, x, t, eps, parameterization: str = "eps"):
    if parameterization == "eps":
        return eps
    if parameterization == "v":
        a, s = sched.alpha_sigma(t)
        return _bcast(a, x) * eps - _bcast(s, x) * x
    raise ConfigError(f"parameterization={parameterization!r}: use 'eps' or 'v'.")


def to_eps_x0(sched: Schedule, pred, x_t, t, parameterization: str = "eps"):
    """The model output -> (eps_hat, x0_hat)."""
    a, s = sched.alpha_sigma(t)
    a, s = _bcast(a, x_t), _bcast(s, x_t)
    if parameterization == "eps":
        return pred, (x_t - s * pred) / a
    if parameterization == "v":
        return s * x_t + a * pred, a * x_t - s * pred
    raise ConfigError(f"parameterization={parameterization!r}: use 'eps' or 'v'.")


def diffusion_loss(sched: Schedule, pred, x, eps, t, parameterization: str = "eps", weighting: str = "simple",
                   mask=None):
    """Per-example E[w_t ||target - pred||^2] (mean over the non-batch axes): [B].
    weighting 'simple' (w = 1) or 'sigma' (w = sigma_t^2, the spectrogram generator's).  `mask`
    [L] (1 = a real position, 0 = padding) restricts the mean to the real positions."""
    sq = jnp.square(pred - target(sched, x, t, eps, parameterization))
    axes = tuple(range(1, x.ndim))
    if mask is None:
        err = jnp.mean(sq, axis=axes)
    else:
        m = jnp.reshape(mask, (1, -1) + (1,) * (x.ndim - 2))
        err = jnp.sum(sq * m, axis=axes) / (jnp.sum(m) * (sq.size // (x.shape[0] * x.shape[1])))
    if weighting == "simple":
        return err
    if weighting == "sigma":
        return jnp.square(sched.alpha_sigma(t)[1]) * err
    raise ConfigError(f"weighting={weighting!r}: use 'simple' or 'sigma'.")


# -- step schedules ------------------------------------------------------------------------------

# (count, total span) from t = 0 upwards: the paper's front-heavy lists (many small steps near t = 0).
PRESETS = {
    "generator": [(200, 0.01), (400, 0.04), (200, 0.15), (150, 0.3), (50, 0.5)],
    "cascader": [(400, 0.05), (200, 0.15), (150, 0.3), (50, 0.5)],
    "vocoder": [(50, 0.05), (30, 0.15), (15, 0.3), (5, 0.5)],
}


def step_sizes(spec: str | Sequence[float]) -> np.ndarray:
    """Step sizes from t = 0 upwards, summing to 1. `spec`: a list of sizes (or a comma-separated
    string of them), a preset name ('generator', 'cascader', 'vocoder'), 'uniform:N', or
    'back_heavy:SCHEDULE' (SCHEDULE reversed: many small steps near t = 1)."""
    if not isinstance(spec, str):
        sizes = np.asarray(spec, np.float64)
    elif spec.startswith("uniform:"):
        n = spec.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"step schedule {spec!r}: 'uniform:N' needs a whole number of steps N >= 1")
        sizes = np.full(int(n), 1.0 / int(n))
    elif spec.startswith("back_heavy:"):
        sizes = step_sizes(spec.split(":", 1)[1])[::-1]
    elif spec in PRESETS:
        sizes = np.concatenate([np.full(n, span / n) for n, span in PRESETS[spec]])
    elif re.fullmatch(r"[0-9.eE+\-]+(,[0-9.eE+\-]+)*,?", spec.strip()):
        sizes = np.asarray([float(v) for v in spec.split(",") if v.strip()], np.float64)
    else:
        raise ConfigError(f"step schedule {spec!r}: comma-separated sizes, one of {sorted(PRESETS)}, 'uniform:N' or "
                         f"'back_heavy:SCHEDULE'")
    if sizes.ndim != 1 or not len(sizes) or np.any(sizes <= 0) or abs(sizes.sum() - 1.0) > 1e-6:
        raise ConfigError(f"step schedule {spec if isinstance(spec, str) else 'list'}: sizes must be positive "
                         f"and sum to 1 (sum {sizes.sum():.6g}, {len(sizes)} steps)")
    return sizes


def step_times(spec: str | Sequence[float]) -> np.ndarray:
    """The sampler's times, from 1 down to 0: [N + 1] float32."""
    up = np.concatenate([[0.0], np.cumsum(step_sizes(spec))])
    up[-1] = 1.0
    return up[::-1].astype(np.float32)


# -- guidance and sampling -----------------------------------------------------------------------

def dynamic_clip(x0, percentile: float = 99.5):
    """Imagen's dynamic thresholding: s = max(percentile of |x0| per example, 1); clip to [-s, s]
    and divide by s."""
    flat = jnp.abs(x0).reshape(x0.shape[0], -1)
    s = jnp.maximum(jnp.percentile(flat, percentile, axis=1), 1.0)
    s = _bcast(s, x0)
    return jnp.clip(x0, -s, s) / s


def guided(pred_cond, pred_uncond, w: float):
    """Classifier-free guidance: w * cond + (1 - w) * uncond (w = 1: no guidance)."""
    return w * pred_cond + (1.0 - w) * pred_uncond


def ancestral_step(sched: Schedule, x_t, t, s, eps_hat, x0_hat, key, gamma: float, z=None):
    """One step t -> s < t.  gamma = 1 is DDPM's ancestral step (the posterior variance), gamma = 0
    the deterministic DDIM step; in between interpolates the noise scale.  The noise is `z`, or
    drawn from `key`."""
    a_t, s_t = sched.alpha_sigma(t)
    a_s, s_s = sched.alpha_sigma(s)
    var = jnp.square(s_s / s_t) * (1.0 - jnp.square(a_t / a_s))
    std = gamma * jnp.sqrt(jnp.clip(var, 0.0))
    dir_scale = jnp.sqrt(jnp.clip(jnp.square(s_s) - jnp.square(std), 0.0))
    if z is None:
        z = jax.random.normal(key, x_t.shape, x_t.dtype)
    return a_s * x0_hat + dir_scale * eps_hat + std * z


def denoise_step(sched: Schedule, pred, x, t, s, z, gamma: float = 0.0, clip: str | None = None,
                 parameterization: str = "eps"):
    """One sampler step t -> s from the model's (guided) prediction at x_t, with noise z ~ N(0, I)
    of x's shape.  t, s: scalars.  `clip`: None, 'static' (x0 in [-1, 1]) or 'dynamic' (Imagen);
    eps is re-derived from the clipped x0.  At s = 0 the step returns x0_hat."""
    tb = jnp.full((x.shape[0],), t)
    eps, x0 = to_eps_x0(sched, pred, x, tb, parameterization)
    if clip is not None:
        x0 = dynamic_clip(x0) if clip == "dynamic" else jnp.clip(x0, -1.0, 1.0)
        a, sg = sched.alpha_sigma(t)
        eps = (x - a * x0) / sg
    x_s = ancestral_step(sched, x, t, jnp.maximum(s, 1e-6), eps, x0, None, gamma, z=z)
    return jnp.where(s > 0, x_s, x0)
