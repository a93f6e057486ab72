"""Fakes for fast tests (the role of seqio's `test_utils`): parameters without an init program, a
corpus of synthetic records, and a trained run on disk without a training binary.

    params = random_params(jax.eval_shape(lambda: net.init(key, x)))      # numpy, no compile
    corpus_dir = fake_corpus(tmp_path, clips=6)                           # records + manifest + corpus.json
    run_dir = fake_run(tmp_path, config_gin, model, step=3)               # config.gin + an Orbax checkpoint
"""
from __future__ import annotations

import json
import os

import numpy as np


def random_params(abstract, seed: int = 0, scale: float = 0.05):
    """Normal(0, scale) numpy arrays shaped like `abstract` (boxes unboxed): for tests of behaviour,
    not of initialisation, without compiling an init program (XLA:CPU compiles threefry slowly)."""
    import flax.linen as nn
    import jax

    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(a.dtype),
                        nn.meta.unbox(abstract))


def _tone(seconds: float, rate: int, hz: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def fake_corpus(root, clips: int = 6, seconds: float = 3.0, rates=(16000,), test_every: int = 3) -> str:
    """A built corpus of `clips` synthetic tones with weak texts and tags: `records[_<rate>]/`,
    `manifest.jsonl`, `audio/` (16 kHz WAVs), `spiece.model` and `corpus.json`, as `data.corpus.build`
    writes them."""
    from data import audio, records, vocab

    root = str(root)
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    rows = []
    for i in range(clips):
        split = "test" if i % test_every == test_every - 1 else "train"
        texts = {"short": [f"tone {i}", "synth"], "long": [f"A steady synth tone number {i}."], "playlist": [],
                 "label": ["synth"]}
        row = {"clip_id": f"clip{i}", "work_id": f"work{i}", "split": split, "duration_s": seconds, "texts": texts,
               "text_ok": {k: [1] * len(v) for k, v in texts.items()},
               "tags": {"instrument": ["synth"], "tempo": ["slow" if i % 2 else "fast"]},
               "audio": {str(r): f"audio/clip{i}_{r}.wav" for r in rates}}
        for r in rates:
            audio.write_wav(os.path.join(root, row["audio"][str(r)]), _tone(seconds, r, 220.0 * (1 + i), i), r)
        rows.append(row)
    with open(os.path.join(root, "manifest.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for r in rates:
        records.write_corpus_records(root, rows, sample_rate=r, per_shard=2, progress=False)
    vocab.train_sentencepiece(root, os.path.join(root, vocab.SPIECE))
    with open(os.path.join(root, "corpus.json"), "w") as f:
        json.dump({"preset": "fake", "seed": 0, "clips": clips, "sample_rates": list(rates)}, f)
    return root


def fake_run(root, config_gin: str, params, step: int = 1, ema_params=None) -> str:
    """A training run's folder with `config_gin` as its config.gin and `params` (and EMA params)
    saved by the trainer's own `Checkpointer` at `step` (no optimizer state)."""
    import jax
    import jax.numpy as jnp

    from trainer.checkpoints import CheckpointConfig, Checkpointer
    from trainer.input_pipeline import IndexedIterator
    from trainer.partitioning import DataLayout
    from trainer.train_state import TrainState

    from common import paths

    run_dir = paths.resolve(root)    # local or gs://
    root = str(run_dir)
    paths.makedirs(run_dir)
    (run_dir / "config.gin").write_text(config_gin)
    state = TrainState(step=jnp.asarray(step, jnp.int32), params=jax.tree.map(jnp.asarray, params), opt_state=None,
                       rng=jax.random.PRNGKey(0),
                       ema_params=None if ema_params is None else jax.tree.map(jnp.asarray, ema_params))
    ckpt = Checkpointer(root, CheckpointConfig(async_save=False), run_config=config_gin)
    ckpt.save(step, state, IndexedIterator(lambda idx: {}, DataLayout(1, 1, 0, 1)))
    ckpt.close()
    return root


def fake_trained_run(root, gin_file: str, *bindings: str, step: int = 2, seed: int = 0) -> str:
    """A run of `gin_file` (+ `--gin.` bindings) as if trained for `step` steps: the config.gin the
    trainer would write, and random parameters and EMA parameters of its model (for tests of
    what reads runs: sampling, embedding; not of training).  Like the trainer's, the EMA leaves out
    the config's frozen parameters (`train.frozen`)."""
    import gin

    from trainer import flags
    from trainer.train_state import abstract_state

    gin.clear_config()
    flags.apply(flags.parse_argv([f"--gin_file={gin_file}", *bindings, f"--model_dir={root}"]))
    model, config, frozen = flags.bound("train.model"), gin.config_str(), flags.bound("train.frozen", ())
    gin.clear_config()
    state = abstract_state(model, None, batch_size=1, ema=True, frozen=frozen)
    return fake_run(root, config, random_params(state.abstract.params, seed), step=step,
                    ema_params=random_params(state.abstract.ema_params, seed + 1))
