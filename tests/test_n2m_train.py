"""The Noise2Music training binary on the tiny real corpus: a few sharded steps of the tiny
generator through seqio, with EMA and finite, logged losses; and the cascader's config."""
import os
import subprocess
import sys

import numpy as np

from tests import helpers


def test_tiny_generator_trains_through_the_binary(tiny_corpus, tmp_path):
    corpus_dir = tiny_corpus[0]
    cmd = [sys.executable, "-m", "noise2music.train", "--gin_file=noise2music/tiny_generator.gin",
           "--gin_file=mesh/fsdp_tensor.gin", "--gin.Partitioner.mesh_shape=(1, 4, 2)",
           "--gin.TRAIN_STEPS=3", "--gin.CHECKPOINT_PERIOD=3", "--gin.train.log_period=1",
           f"--gin.CORPUS_DIR='{corpus_dir}'", f"--model_dir={tmp_path}"]
    p = subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    out = helpers.last_json(p.stdout)
    assert out["status"] == "completed" and out["step"] == 3
    from trainer.metrics import read_jsonl

    rows = read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["text_dropped"] <= 1.0 for r in rows)
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "3"))
    cfg = open(os.path.join(tmp_path, "config.gin")).read()
    assert "Noise2MusicModel.stage = 'generator'" in cfg and "n2m_weak_text" in cfg


def test_tiny_configs_build_their_stage(tmp_path):
    """Both tiny configs parse and build their model; the cascader's crop matches its length."""
    import gin
    import jax

    from trainer import flags, main as trainer_main
    from noise2music.train import CONFIGURABLES

    trainer_main.import_configurables(CONFIGURABLES)
    for config, stage, length in (("noise2music/tiny_generator.gin", "generator", 32000),
                                  ("noise2music/tiny_cascader.gin", "cascader", 51200)):
        gin.clear_config()
        flags.parse_and_apply([f"--gin_file={config}", f"--model_dir={tmp_path}"], "")
        model = gin.query_parameter("train.model").scoped_configurable_fn()
        assert model.stage == stage and model.length == length
        assert gin.query_parameter("n2m_crop.seconds") * 16000 == model.audio_samples
        params = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), model.dummy_batch(2)))
        assert "text_encoder" in params and "unet" in params
