"""Noise2Music training on the tiny real corpus: the binary runs a few sharded steps of the tiny
generator through seqio (EMA, finite logged losses, its T5 frozen); the tiny super-resolution
config trains the same under FSDP x tensor sharding as on one device."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers


def test_tiny_generator_trains_through_the_binary(tiny_corpus, tmp_path):
    corpus_dir = tiny_corpus[0]
    cmd = [sys.executable, "-m", "noise2music.train", "--gin_file=noise2music/tiny_generator.gin",
           "--gin_file=mesh/fsdp_tensor.gin", "--gin.Partitioner.mesh_shape=(1, 4, 2)",
           "--gin.TRAIN_STEPS=3", "--gin.CHECKPOINT_PERIOD=3", "--gin.train.log_period=1",
           "--gin.SampleSummaries.steps='uniform:4'", f"--gin.CORPUS_DIR='{corpus_dir}'", f"--model_dir={tmp_path}"]
    p = subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    out = helpers.last_json(p.stdout)
    assert out["status"] == "completed" and out["step"] == 3
    assert "frozen: ^text_encoder/" in p.stderr        # the T5: no Adam moments, no EMA copy
    from trainer.metrics import read_jsonl

    rows = read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["text_dropped"] <= 1.0 for r in rows)
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "3"))
    cfg = open(os.path.join(tmp_path, "config.gin")).read()
    assert "Noise2MusicModel.stage = 'generator'" in cfg and "n2m_weak_text" in cfg
    # TensorBoard got quick samples from the EMA weights (SampleSummaries.period = the checkpoint period).
    assert "media at step 3" in p.stderr
    import glob

    import tensorflow as tf

    tags = {v.tag for f in glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*"))
            for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value}
    assert {"sample", "reference", "sample_mel", "reference_mel", "prompts"} <= tags, tags


# config -> (stage, length of x, records rate): the 24 kHz records with low-fi audio.  (The tiny
# generator, frozen T5 and all, trains sharded through the binary above; tests/unit/test_n2m_model.py
# checks the other stages' losses sharded against one device.)
TINY = {
    "tiny_super_resolution": ("super_resolution", 76800, 24000),
}


def _parse(config, model_dir):
    import gin

    from trainer import flags

    gin.clear_config()
    flags.parse_and_apply([f"--gin_file=noise2music/{config}.gin", f"--model_dir={model_dir}"], "")
    return flags.bound("train.model")


def _real_batch(rows, corpus_dir, n, samples, rate, text_length, seed=0):
    """n crops of the tiny corpus's rendered audio at `rate` (the stage's source) and random tokens."""
    from data.audio import load_audio

    rng = np.random.default_rng(seed)
    audio = []
    for r in rows[:n]:
        x, _ = load_audio(os.path.join(corpus_dir, r["audio"][str(rate)]), rate)
        start = rng.integers(0, max(len(x) - samples, 0) + 1)
        audio.append(np.pad(x[start:start + samples], (0, max(0, samples - len(x[start:])))))
    return {"audio": np.stack(audio).astype(np.float32),
            "text_tokens": rng.integers(1000, 30000, size=(n, text_length)).astype(np.int32),
            "text_mask": np.ones((n, text_length), np.int32)}


@pytest.mark.parametrize("config", list(TINY))
def test_tiny_stage_trains_the_same_sharded_fsdp_x_tensor_as_on_one_device(config, tiny_corpus, tmp_path):
    """A stage's tiny config: its model, two steps on real rendered audio, sharded over a 4 x 2
    FSDP x tensor mesh == on one device (loss, the parameters' update, the EMA), with the config's
    frozen parameters.  SGD, not Adam: Adam's first steps are ~lr * sign(g), which turns float
    rounding in the near-zero gradients (the convs behind zero-initialised ones) into lr-sized
    differences; SGD's update is the gradient itself."""
    import jax
    import optax

    from trainer.partitioning import FSDP_TENSOR_RULES, Partitioner
    from trainer.train import make_train_step
    from trainer.train_state import abstract_state

    corpus_dir, _, rows = tiny_corpus
    stage, length, rate = TINY[config]
    model = _parse(config, tmp_path)
    assert model.stage == stage and model.length == length and model.source_rate == rate
    from trainer import flags

    # The task's crop is the model's input by construction: both are bound to these macros.
    assert (flags.bound("%AUDIO_SAMPLES"), flags.bound("%SOURCE_RATE")) == (model.audio_samples, rate)
    batch = _real_batch(rows, corpus_dir, 8, model.audio_samples, rate, model.text_length)
    frozen = flags.bound("train.frozen", ())

    def two_steps(partitioner):
        opt = optax.sgd(0.05)
        factory = abstract_state(model, partitioner, optimizer=opt, batch_size=8, ema=True, frozen=frozen)
        state = factory.init(0)
        init = jax.device_get(state.params)
        step = jax.jit(make_train_step(model, opt, 0.9, None, frozen=factory.frozen),
                       in_shardings=(factory.shardings, None), out_shardings=(factory.shardings, None),
                       donate_argnums=(0,))
        losses = []
        with partitioner.activate():
            for _ in range(2):
                state, m = step(state, partitioner.make_global_batch(batch, 8))
                losses.append(float(m["loss"]))
        return losses, init, jax.device_get(state)

    l8, init, s8 = two_steps(Partitioner(mesh_shape=(1, 4, 2), logical_axis_rules=FSDP_TENSOR_RULES))
    l1, _, s1 = two_steps(Partitioner(mesh_shape=(1, 1, 1), logical_axis_rules=FSDP_TENSOR_RULES,
                                      devices=jax.devices()[:1]))
    assert all(np.isfinite(l8)) and l8[0] > 0
    np.testing.assert_allclose(l8, l1, rtol=2e-4)

    def rel_err(a, b, ref):   # ||a - b|| / ||b - ref|| over one module's leaves
        d = [np.ravel(x - y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
        u = [np.ravel(y - r) for y, r in zip(jax.tree.leaves(b), jax.tree.leaves(ref))]
        return np.linalg.norm(np.concatenate(d)) / max(np.linalg.norm(np.concatenate(u)), 1e-30)

    # Measured 1.2e-3 at most: the gradients are sums over 8 x 32,000 positions, added in another order.
    assert rel_err(s8.params["unet"], s1.params["unet"], init["unet"]) < 5e-3
    assert rel_err(s8.ema_params["unet"], s1.ema_params["unet"], init["unet"]) < 5e-3
    assert ("text_encoder" in s8.params) == (stage in ("generator", "cascader", "spectrogram_generator"))
