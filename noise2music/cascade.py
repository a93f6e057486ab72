"""Trained stages, and the cascade that chains them (docs/PAPERS.md §2).

    stage = Stage.from_run("runs/n2m_gen")                          # EMA weights of the newest step
    out = stage.sample(texts=["a calm solo piano piece"], seeds=[0], settings=Settings(
        steps="generator", guidance=10.0))                           # [N, samples at 3.2 kHz]
    hi = cascader.sample(texts=..., seeds=..., inputs=out, settings=...)   # [N, samples at 16 kHz]

A `Stage` is a training run's model and parameters.  `sample` builds what the stage's
`StageSpec` says it reads (the text encoded once, the low-fi audio resampled and stacked, or the
spectrogram at the bottom of the U), splits the batch over the devices (a batch that does not
divide is filled with copies of its last example, dropped afterwards) and runs
`noise2music.sampler`.  Every example's noise comes from (its seed, its index), so a sample does
not depend on what it was batched with.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from noise2music import sampler
from noise2music.model import Noise2MusicModel
from noise2music.sampler import Settings
from noise2music.stages import LOWFI, MEL, MEL_BOTTOM, spec
from trainer.batching import pad_rows, round_up


class CascadeError(ValueError):
    """Stages or inputs that do not fit together; the message names the run or input at fault."""


def paper_settings(stage: str, **overrides) -> Settings:
    """The paper's step schedule, guidance and gamma for `stage`, with any non-None overrides."""
    sp = spec(stage)
    return Settings(**{"steps": sp.steps, "guidance": sp.guidance, "gamma": sp.gamma,
                       **{k: v for k, v in overrides.items() if v is not None}})


def vocabulary(model: Noise2MusicModel):
    """The vocabulary the stage's task tokenized with (None in its config: the installed MiniLM's)."""
    from data.vocab import BertWordPieceVocabulary

    return model.vocabulary or BertWordPieceVocabulary()


def tokenize(model: Noise2MusicModel, texts: Sequence[str], warn: Callable[[str], None] | None = None,
             numbers: Sequence[int] | None = None):
    """Token ids [N, text_length] (as the corpus tasks make them: pieces and EOS with T5's SentencePiece) and mask.  A text
    longer than `text_length` tokens is truncated, with one warning naming it (as prompt
    `numbers[i]`, default i + 1)."""
    from data.vocab import batch_ids

    return batch_ids(vocabulary(model), texts, model.text_length, warn, numbers)


class Stage:
    """One trained stage: its model, parameters (EMA by default) and partitioner."""

    def __init__(self, name: str, model: Noise2MusicModel, params, partitioner=None, step: int | None = None,
                 model_dir: str | None = None, which: str = "params"):
        if model.stage != name:
            raise CascadeError(f"{model_dir or 'the model'}: a {model.stage!r} stage, given as the {name!r} stage")
        self.name, self.model, self.params, self.partitioner = name, model, params, partitioner
        self.step, self.model_dir, self.which = step, model_dir, which
        self._steps = {}

    @classmethod
    def from_run(cls, model_dir: str, name: str | None = None, step: int | None = None,
                 use_ema: bool = True) -> "Stage":
        """A training run's stage; `name` (when given) is the stage it must be."""
        from trainer import restore

        run = restore.load(model_dir, expect=Noise2MusicModel, step=step, use_ema=use_ema)
        return cls(name or run.model.stage, run.model, run.params, run.partitioner, run.step, run.model_dir,
                   run.which)

    @property
    def spec(self):
        return self.model.spec

    @property
    def rate(self) -> int | None:
        return self.model.rate

    def output_length(self, inputs: np.ndarray | None, seconds: float | None) -> int:
        """Samples (or frames) this stage generates: from its input's length, or `seconds`."""
        m = self.model
        if self.spec.conditioning == LOWFI:
            n = inputs.shape[1] * m.rate / m.low_rate
            if n != int(n):
                raise CascadeError(f"{self.name}: {inputs.shape[1]} input samples at {m.low_rate} Hz are not a whole "
                                    f"number at {m.rate} Hz")
            return int(n)
        if self.spec.conditioning == MEL_BOTTOM:
            return inputs.shape[1] * m.mel.hop
        per_second = m.mel.sample_rate / m.mel.hop if self.spec.output == MEL else m.rate
        return m.length if seconds is None else int(round(seconds * per_second))

    def _step(self, guided: bool, settings: Settings):
        key = (guided, settings.clip, settings.gamma)
        if key not in self._steps:   # kept: a stage sampled batch after batch compiles once
            self._steps[key] = sampler.make_step(self.model, guided, settings)
        return self._steps[key]

    def _put(self, a):
        if a is None or self.partitioner is None:
            return None if a is None else jnp.asarray(a)
        return jax.device_put(a, self.partitioner.batch_sharding(np.ndim(a)))

    def sample(self, *, seeds: Sequence[int], texts: Sequence[str] | None = None, inputs: np.ndarray | None = None,
               settings: Settings | None = None, seconds: float | None = None,
               progress: Callable[[int, int], None] | None = None, warn: Callable[[str], None] | None = None,
               ids: Sequence[int] | None = None, tokens: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """One output per seed (with `texts[i]` and `inputs[i]`, the previous stage's output):
        audio [N, samples] at `rate`, or a log-mel [N, frames, mels] for a MEL stage.  `ids`:
        per-example indices mixed into the seed (default 0..N-1).  `tokens`: (ids, mask) already
        tokenized, instead of `texts`."""
        m, settings = self.model, settings or paper_settings(self.name)
        n = len(seeds)
        ids = list(range(n)) if ids is None else list(ids)
        rows = round_up(n, self.partitioner.num_batch_shards if self.partitioner is not None else 1)
        seeds, ids = (list(pad_rows(np.asarray(v), rows, "edge")) for v in (seeds, ids))
        inputs = None if inputs is None else pad_rows(inputs, rows, "edge")
        length = self.output_length(inputs, seconds)
        padded = m.padded_length(length)
        cond = bottom = None
        if self.spec.conditioning == LOWFI:
            cond = m.lowfi(jnp.asarray(inputs, jnp.float32)[..., None], length)
            if settings.cond_noise > 0:
                a, sg = m.schedule.alpha_sigma(settings.cond_noise)
                noise = jax.vmap(lambda k: jax.random.normal(k, cond.shape[1:]))(sampler.example_keys(seeds, ids, 1))
                cond = a * cond + sg * noise
            cond = m.pad(cond)
        elif self.spec.conditioning == MEL_BOTTOM:
            bottom = jnp.asarray(inputs, jnp.float32)
        emb = mask = None
        if m.has_text:
            if texts is None and tokens is None:
                raise CascadeError(f"{self.name}: the stage reads text; no prompts given")
            toks, mask = tokens if tokens is not None else tokenize(m, texts[:n], warn, [k + 1 for k in ids[:n]])
            toks, mask = (pad_rows(np.asarray(a)[:n], rows, "edge") for a in (toks, mask))
            emb = jax.jit(m.encode_text)(self.params, self._put(toks), self._put(mask))
        guided = m.has_text and settings.guidance != 1.0
        keys = sampler.example_keys(seeds, ids, 0)
        x = jax.vmap(lambda k: jax.random.normal(k, (padded, m.channels)))(sampler.example_keys(seeds, ids, 2))
        step = self._step(guided, settings)
        ctx = self.partitioner.activate() if self.partitioner is not None else contextlib.nullcontext()
        with ctx:
            x, keys, cond, bottom = (self._put(a) for a in (x, keys, cond, bottom))
            x = sampler.sample(step, self.params, x, settings, keys=keys, emb=emb, mask=mask, cond=cond,
                               bottom=bottom, progress=progress, name=self.name,
                               hint=f"; lower the guidance scale or check the checkpoint ({self.model_dir}, step "
                                    f"{self.step})")
        out = np.asarray(jax.device_get(x))[:n, :length]
        return out[..., 0] if m.channels == 1 else out


def check_chain(stages: Sequence[Stage]) -> None:
    """Each stage's input is the previous one's output: sample rates (and spectrograms) must chain."""
    def makes(st: Stage) -> str:
        return "a spectrogram" if st.spec.output == MEL else f"{st.rate} Hz audio"

    if stages and not stages[0].spec.starts_cascade:
        raise CascadeError(f"{stages[0].name} ({stages[0].model_dir}) cannot start a cascade: it reads an earlier "
                            f"stage's output")
    for prev, nxt in zip(stages, stages[1:]):
        pm, nm = prev.model, nxt.model
        if nxt.spec.conditioning == LOWFI:
            if prev.spec.output == MEL or pm.rate != nm.low_rate:
                raise CascadeError(f"the cascade's sample rates do not chain: {prev.name} ({prev.model_dir}) makes "
                                    f"{makes(prev)}, but {nxt.name} ({nxt.model_dir}) reads {nm.low_rate} Hz audio")
        elif nxt.spec.conditioning == MEL_BOTTOM:
            if prev.spec.output != MEL or pm.mel != nm.mel:
                raise CascadeError(f"the cascade does not chain: {nxt.name} ({nxt.model_dir}) reads the spectrogram "
                                    f"{nm.mel}, but {prev.name} makes "
                                    f"{pm.mel if prev.spec.output == MEL else makes(prev)}")
        else:
            raise CascadeError(f"{nxt.name} starts a cascade; it cannot follow {prev.name}")


def sample_step_program(model: Noise2MusicModel, partitioner, batch_size: int):
    """One sampling step of `model`'s stage at the paper's settings, for `batch_size` clips of the
    stage's length, sharded as `Stage.sample` shards them: what `python -m trainer.compile
    --program=sample` compiles (`Noise2MusicModel.programs`).  The text is encoded before the
    first step, so it is an input here (T5 runs once per prompt, not once per step)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from trainer.aot import Program
    from trainer.train_state import abstract_state

    m, settings = model, paper_settings(model.stage)
    b, length = batch_size, model.length
    padded = m.padded_length(length)
    batch = lambda *shape, dtype=jnp.float32: jax.ShapeDtypeStruct(
        shape, dtype, sharding=partitioner.batch_sharding(len(shape)))
    scalar = lambda dtype=jnp.float32: jax.ShapeDtypeStruct((), dtype, sharding=NamedSharding(partitioner.mesh, PartitionSpec()))
    params = abstract_state(m, partitioner, batch_size=1).abstract.params
    with partitioner.activate():
        cond = bottom = emb = mask = None
        if m.spec.conditioning == LOWFI:
            low = batch(b, length * m.low_rate // m.rate, 1)
            cond = jax.eval_shape(lambda a: m.pad(m.lowfi(a, length)), low)
            cond = batch(*cond.shape)
        elif m.spec.conditioning == MEL_BOTTOM:
            bottom = batch(b, length // m.mel.hop, m.mel.num_mels)
        if m.has_text:
            mask = batch(b, m.text_length, dtype=jnp.int32)
            emb = jax.eval_shape(m.encode_text, params, mask, mask)
            emb = batch(*emb.shape, dtype=emb.dtype)
    guided = m.has_text and settings.guidance != 1.0
    args = (params, batch(b, padded, m.channels), scalar(), scalar(), scalar(jnp.int32), batch(b, 2, dtype=jnp.uint32),
            emb, mask, cond, bottom, scalar())
    return Program("sample", sampler.make_step(m, guided, settings), args, partitioner, b,
                   count_fn=sampler.make_step(m.without_remat(), guided, settings),
                   arg_names=("params", "x", "t", "s", "i", "keys", "emb", "mask", "cond", "bottom", "w"))
