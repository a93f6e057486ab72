"""Sampling one stage of the cascade, and chaining stages (SPEC.md §2.2).

    stage = Stage.from_model_dir("runs/n2m_gen", "generator")        # EMA weights of the newest step
    out = stage.sample(texts=["a calm solo piano piece"], seeds=[0], settings=StageSettings(
        steps="generator", guidance=10.0))                           # [N, samples at 3.2 kHz]
    hi = cascader.sample(texts=..., seeds=..., inputs=out, settings=...)   # [N, samples at 16 kHz]

Every step is one jitted call (the batch split over the devices): the conditional and the
unconditional prediction in one forward pass of a doubled batch (classifier-free guidance,
w * cond + (1 - w) * uncond; none when w = 1 or the stage has no text), the x0 estimate clipped
(Imagen's dynamic thresholding by default), then the ancestral step with `gamma`.  The text is
encoded once per stage.  Every example's noise comes from (its seed, its index), so a sample does
not depend on what it was batched with.  Non-finite values stop the stage with `SamplingError`
naming the stage and step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from noise2music import diffusion
from noise2music.model import STAGES, Noise2MusicModel

log = logging.getLogger(__name__)

# The paper's settings (SPEC §2.2): step schedule, guidance w, stochasticity gamma.
DEFAULTS = {
    "generator": dict(steps="generator", guidance=10.0, gamma=0.0),
    "cascader": dict(steps="cascader", guidance=5.0, gamma=1.0),
    "super_resolution": dict(steps="cascader", guidance=1.0, gamma=0.0),
    "spectrogram_generator": dict(steps="generator", guidance=5.0, gamma=0.0),
    "vocoder": dict(steps="vocoder", guidance=1.0, gamma=0.0),
}


class SamplingError(RuntimeError):
    """Sampling cannot go on; the message names the stage, step or input at fault."""


@dataclasses.dataclass(frozen=True)
class StageSettings:
    steps: str = "uniform:100"       # a diffusion.step_sizes spec
    guidance: float = 1.0            # classifier-free guidance w (1 = none)
    gamma: float = 0.0               # ancestral stochasticity (0 = DDIM, 1 = DDPM)
    clip: str | None = "dynamic"     # x0 clipping: 'dynamic', 'static' or None
    cond_noise: float = 0.0          # diffusion time at which the low-fi input is noised (augmentation level)

    @classmethod
    def paper(cls, stage: str, **overrides) -> "StageSettings":
        return cls(**{**DEFAULTS[stage], **{k: v for k, v in overrides.items() if v is not None}})


def tokenize(texts: Sequence[str], length: int, warn: Callable[[str], None] | None = None,
             numbers: Sequence[int] | None = None):
    """WordPiece ids [N, length] ([CLS] ... [SEP], as the corpus tasks make them) and mask.  A text
    longer than `length` tokens is truncated, with one warning naming it (as prompt `numbers[i]`,
    default i + 1)."""
    from data.vocab import BertWordPieceVocabulary, batch_ids

    return batch_ids(BertWordPieceVocabulary(), texts, length, warn, numbers)


class Stage:
    """One trained stage: its model, parameters (EMA by default) and partitioner."""

    def __init__(self, name: str, model: Noise2MusicModel, params, partitioner=None, step: int | None = None,
                 model_dir: str | None = None, which: str = "params"):
        if model.stage != name:
            raise SamplingError(f"{model_dir or 'the model'}: a {model.stage!r} stage, given as the {name!r} stage")
        self.name, self.model, self.params, self.partitioner = name, model, params, partitioner
        self.step, self.model_dir, self.which = step, model_dir, which
        self._fns = {}

    @classmethod
    def from_model_dir(cls, model_dir: str, name: str, step: int | None = None, use_ema: bool = True) -> "Stage":
        from noise2music.train import CONFIGURABLES
        from trainer import model_dir as model_dir_lib

        if name not in STAGES:
            raise SamplingError(f"stage {name!r}: one of {STAGES}")
        run = model_dir_lib.load(model_dir, modules=CONFIGURABLES, expect=Noise2MusicModel, step=step,
                                 use_ema=use_ema)
        return cls(name, run.model, run.params, run.partitioner, run.step, run.model_dir, run.which)

    # -- shapes --------------------------------------------------------------------
    @property
    def rate(self) -> int | None:
        return self.model.rate

    def output_length(self, inputs: np.ndarray | None, seconds: float | None) -> int:
        """Samples (or frames) this stage generates: from its input's length, or `seconds`."""
        m = self.model
        if m.stage in ("cascader", "super_resolution"):
            n = inputs.shape[1] * m.rate / m.low_rate
            if n != int(n):
                raise SamplingError(f"{self.name}: {inputs.shape[1]} input samples at {m.low_rate} Hz are not a whole "
                                    f"number at {m.rate} Hz")
            return int(n)
        if m.stage == "vocoder":
            return inputs.shape[1] * m.mel.hop
        per_second = m.mel.sample_rate / m.mel.hop if m.stage == "spectrogram_generator" else m.rate
        return m.length if seconds is None else int(round(seconds * per_second))

    # -- the jitted step -------------------------------------------------------------
    def _step_fn(self, guided: bool, settings: StageSettings):
        key = (guided, settings.clip, settings.gamma)
        if key in self._fns:
            return self._fns[key]
        m = self.model

        def step(params, x, t, s, i, keys, emb, mask, cond, bottom, w):
            b = x.shape[0]
            tb = jnp.full((b,), t)
            zeros = jnp.zeros((b,), jnp.int32)
            if guided:
                two = lambda a: None if a is None else jnp.concatenate([a, a])
                pred = m.denoise(params, two(x), two(tb), two(emb), two(mask),
                                 jnp.concatenate([zeros, jnp.ones_like(zeros)]), two(cond), two(bottom))
                pred = diffusion.guided(pred[:b], pred[b:], w)
            else:
                pred = m.denoise(params, x, tb, emb, mask, zeros, cond, bottom)
            z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:]))(keys)
            x = diffusion.denoise_step(m.schedule, pred, x, t, s, z, settings.gamma, settings.clip,
                                       m.parameterization)
            return x, jnp.all(jnp.isfinite(x))

        self._fns[key] = jax.jit(step, donate_argnums=(1,))
        return self._fns[key]

    def _put(self, a):
        if a is None or self.partitioner is None:
            return None if a is None else jnp.asarray(a)
        return jax.device_put(a, self.partitioner.batch_sharding(np.ndim(a)))

    def sample(self, *, seeds: Sequence[int], texts: Sequence[str] | None = None, inputs: np.ndarray | None = None,
               settings: StageSettings | None = None, seconds: float | None = None,
               progress: Callable[[int, int], None] | None = None, warn: Callable[[str], None] | None = None,
               ids: Sequence[int] | None = None, tokens: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """One output per seed (with `texts[i]` and `inputs[i]`, the previous stage's output):
        audio [N, samples] at `rate`, or a log-mel [N, frames, mels] for the spectrogram generator.
        `ids`: per-example indices mixed into the seed (default 0..N-1).  `tokens`: (ids, mask)
        already tokenized, instead of `texts`."""
        m, settings = self.model, settings or StageSettings.paper(self.name)
        n = len(seeds)
        ids = list(range(n)) if ids is None else list(ids)
        shards = self.partitioner.num_batch_shards if self.partitioner is not None else 1
        if n % shards:  # fill the last device's rows with copies of the last example; dropped below
            extra = shards - n % shards
            seeds, ids = list(seeds) + [seeds[-1]] * extra, ids + [ids[-1]] * extra
            inputs = None if inputs is None else np.concatenate([inputs, np.repeat(inputs[-1:], extra, 0)])
        length = self.output_length(inputs, seconds)
        padded = m.padded_length(length)
        cond = bottom = None
        if m.stage in ("cascader", "super_resolution"):
            low = jnp.asarray(inputs, jnp.float32)[..., None]
            cond = m.lowfi(low, length)
            if settings.cond_noise > 0:
                a, sg = m.schedule.alpha_sigma(settings.cond_noise)
                noise = jax.vmap(lambda k: jax.random.normal(k, cond.shape[1:]))(self._keys(seeds, ids, 1))
                cond = a * cond + sg * noise
            cond = m.pad(cond)
        elif m.stage == "vocoder":
            bottom = jnp.asarray(inputs, jnp.float32)
        emb = mask = None
        if m.has_text:
            if texts is None and tokens is None:
                raise SamplingError(f"{self.name}: the stage reads text; no prompts given")
            toks, mask = tokens if tokens is not None else tokenize(texts[:n], m.text_length, warn,
                                                                     [k + 1 for k in ids[:n]])
            toks, mask = np.asarray(toks)[:n], np.asarray(mask)[:n]
            rows = len(seeds) - n
            toks, mask = (np.concatenate([a, np.repeat(a[-1:], rows, 0)]) for a in (toks, mask))
            emb = jax.jit(m.encode_text)(self.params, self._put(toks), self._put(mask))
        guided = m.has_text and settings.guidance != 1.0
        keys = self._keys(seeds, ids, 0)
        x = jax.vmap(lambda k: jax.random.normal(k, (padded, m.channels)))(self._keys(seeds, ids, 2))
        times = diffusion.step_times(settings.steps)
        fn = self._step_fn(guided, settings)
        n_steps = len(times) - 1
        check = max(1, n_steps // 10)
        ctx = self.partitioner.activate() if self.partitioner is not None else contextlib.nullcontext()
        with ctx:
            x, keys, cond, bottom = (self._put(a) for a in (x, keys, cond, bottom))
            for i in range(n_steps):
                x, finite = fn(self.params, x, float(times[i]), float(times[i + 1]), i, keys, emb, mask, cond, bottom,
                               float(settings.guidance))
                if (i + 1) % check == 0 or i + 1 == n_steps:
                    if not bool(finite):
                        raise SamplingError(f"{self.name}: non-finite values at step {i + 1} of {n_steps} "
                                            f"(t = {times[i + 1]:.4f}); lower the guidance scale or check the "
                                            f"checkpoint ({self.model_dir}, step {self.step})")
                    if progress:
                        progress(i + 1, n_steps)
        out = np.asarray(jax.device_get(x))[:n, :length]
        return out[..., 0] if m.channels == 1 else out

    @staticmethod
    def _keys(seeds, ids, salt: int):
        return jnp.stack([jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(s)), int(i)), salt)
                          for s, i in zip(seeds, ids)])


def check_chain(stages: Sequence[Stage]) -> None:
    """Each stage's input is the previous one's output: sample rates (and spectrograms) must chain."""
    for prev, nxt in zip(stages, stages[1:]):
        pm, nm = prev.model, nxt.model
        if nm.stage in ("cascader", "super_resolution"):
            if pm.stage == "spectrogram_generator" or pm.rate != nm.low_rate:
                got = "a spectrogram" if pm.stage == "spectrogram_generator" else f"{pm.rate} Hz audio"
                raise SamplingError(f"the cascade's sample rates do not chain: {prev.name} ({prev.model_dir}) makes "
                                    f"{got}, but {nxt.name} ({nxt.model_dir}) reads {nm.low_rate} Hz audio")
        elif nm.stage == "vocoder":
            if pm.stage != "spectrogram_generator" or pm.mel != nm.mel:
                raise SamplingError(f"the cascade does not chain: {nxt.name} ({nxt.model_dir}) reads the spectrogram "
                                    f"{nm.mel}, but {prev.name} makes "
                                    f"{pm.mel if pm.stage == 'spectrogram_generator' else f'{pm.rate} Hz audio'}")
        else:
            raise SamplingError(f"{nxt.name} starts a cascade; it cannot follow {prev.name}")
