"""The sampler (docs/PAPERS.md §2.2): classifier-free guidance, x0 clipping and the ancestral step,
one jitted call per step.  It knows nothing of stages or runs: it drives anything that supplies a
`Denoiser` (a trained stage, `noise2music.model.Noise2MusicModel`; a closed-form denoiser in the
tests), and `noise2music.cascade` feeds it the inputs of each stage.

    step = make_step(model, guided=True, settings=Settings(steps="generator", guidance=10.0))
    x0 = sample(step, params, x1, settings, keys=keys, emb=emb, mask=mask)   # x1 ~ N(0, I), [N, L, C]

Each step is one jitted call: the conditional and the unconditional prediction in one forward pass
of a doubled batch (w * cond + (1 - w) * uncond; no doubling when unguided), the x0 estimate
clipped (Imagen's dynamic thresholding by default), then the ancestral step with `gamma` and
noise `z` drawn per example from `keys[i]` folded with the step index, so a sample does not
depend on what it was batched with.  Every tenth of the steps the values are checked:
non-finite ones stop with `SamplingError` naming the step.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from noise2music import diffusion


class SamplingError(RuntimeError):
    """Sampling cannot go on; the message names the stage, step or input at fault."""


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: str = "uniform:100"       # a diffusion.step_sizes spec
    guidance: float = 1.0            # classifier-free guidance w (1 = none)
    gamma: float = 0.0               # ancestral stochasticity (0 = DDIM, 1 = DDPM)
    clip: str | None = "dynamic"     # x0 clipping: 'dynamic', 'static' or None
    cond_noise: float = 0.0          # diffusion time at which a low-fi input is noised (augmentation level)


class Denoiser(Protocol):
    schedule: diffusion.Schedule
    parameterization: str

    def denoise(self, params: Any, x_t, t, emb, mask, drop, cond=None, bottom=None):
        """The network's prediction at x_t [B, L, C], t [B]; `drop` [B] (1 = without text)."""


def make_step(denoiser: Denoiser, guided: bool, settings: Settings) -> Callable:
    """The jitted step (params, x, t, s, i, keys, emb, mask, cond, bottom, w) -> (x_s, all finite)."""

    def step(params, x, t, s, i, keys, emb, mask, cond, bottom, w):
        b = x.shape[0]
        tb = jnp.full((b,), t)
        zeros = jnp.zeros((b,), jnp.int32)
        if guided:
            two = lambda a: None if a is None else jnp.concatenate([a, a])
            pred = denoiser.denoise(params, two(x), two(tb), two(emb), two(mask),
                                    jnp.concatenate([zeros, jnp.ones_like(zeros)]), two(cond), two(bottom))
            pred = diffusion.guided(pred[:b], pred[b:], w)
        else:
            pred = denoiser.denoise(params, x, tb, emb, mask, zeros, cond, bottom)
        z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:]))(keys)
        x = diffusion.denoise_step(denoiser.schedule, pred, x, t, s, z, settings.gamma, settings.clip,
                                   denoiser.parameterization)
        return x, jnp.all(jnp.isfinite(x))

    return jax.jit(step, donate_argnums=(1,))


def sample(step: Callable, params: Any, x: jax.Array, settings: Settings, *, keys: jax.Array, emb=None, mask=None,
           cond=None, bottom=None, progress: Callable[[int, int], None] | None = None, name: str = "sampler",
           hint: str = "") -> jax.Array:
    """Runs `step` (from `make_step` with the same settings) from x_1 = `x` down the step schedule
    of `settings.steps` to x_0.  `keys` [B, 2]: each example's noise key.  `progress(i, n)` is told
    at every check; non-finite values raise `SamplingError` naming `name` and the step (then `hint`)."""
    times = diffusion.step_times(settings.steps)
    n_steps = len(times) - 1
    check = max(1, n_steps // 10)
    for i in range(n_steps):
        x, finite = step(params, x, float(times[i]), float(times[i + 1]), i, keys, emb, mask, cond, bottom,
                         float(settings.guidance))
        if (i + 1) % check == 0 or i + 1 == n_steps:
            if not bool(finite):
                raise SamplingError(f"{name}: non-finite values at step {i + 1} of {n_steps} "
                                    f"(t = {times[i + 1]:.4f}){hint}")
            if progress:
                progress(i + 1, n_steps)
    return x


def example_keys(seeds, ids, salt: int) -> jax.Array:
    """[N, 2] keys: example k's from (seeds[k], ids[k], salt), independent of its batch."""
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(s)), int(i)), salt)
                      for s, i in zip(seeds, ids)])


def num_steps(settings: Settings) -> int:
    return int(len(diffusion.step_sizes(settings.steps)))

