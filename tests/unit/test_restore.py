"""Runs loaded for inference (`trainer.restore`): through the run's Checkpointer, EMA or raw
parameters, the steps named; and `config.gin` files of the layout before the restructure
(tests/golden/old_layout, written by the main job then) still build their models."""
import os

import jax
import numpy as np
import pytest

from tests import fakes

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden", "old_layout")


def _toy_run(tmp_path, step=3):
    import gin

    from trainer import flags
    from trainer.toy import ToyModel

    flags.apply(flags.parse_argv(["--gin_file=toy/tiny_cpu.gin", "--model_dir=/unused"]))
    config = gin.config_str()
    gin.clear_config()
    abstract = jax.eval_shape(ToyModel().init_params, jax.random.PRNGKey(0), ToyModel().dummy_batch(2))
    params, ema = fakes.random_params(abstract, 1), fakes.random_params(abstract, 2)
    return fakes.fake_run(tmp_path / "run", config, params, step=step, ema_params=ema), params, ema


def test_a_run_loads_through_its_checkpointer(tmp_path):
    from trainer import restore
    from trainer.toy import ToyModel

    d, params, ema = _toy_run(tmp_path)
    run = restore.load(d, expect=ToyModel)
    assert (run.step, run.which) == (3, "EMA params") and run.checkpoint.endswith("checkpoints/3")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params), ema)
    raw = restore.load(d, expect=ToyModel, use_ema=False)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(raw.params), params)
    with pytest.raises(restore.ModelDirError, match=r"no checkpoint at step 7 \(have: \[3\]\)"):
        restore.load(d, expect=ToyModel, step=7)
    from noise2music.model import Noise2MusicModel

    with pytest.raises(restore.ModelDirError, match="train.model is ToyModel, not a Noise2MusicModel"):
        restore.load(d, expect=Noise2MusicModel)
    with pytest.raises(restore.ModelDirError, match="config.gin: missing"):
        restore.load(str(tmp_path), expect=ToyModel)


def test_old_layout_configs_build_their_models():
    """The main job's config.gin files from before the restructure: moved modules, the renamed
    feature converter and the removed data settings are rewritten, and the models are the same."""
    from mulan.model import MulanModel
    from noise2music.model import Noise2MusicModel
    from trainer import restore

    text, notes = restore.upgrade_config(open(os.path.join(GOLDEN, "mulan_tiny_config.gin")).read())
    assert "import layers.audio_frontend as mulan2" in text and "@AudioTextFeatureConverter" in text
    assert "corpus_dir.path =" not in text and "text_mixture.weights =" not in text
    assert "module mulan.frontend -> layers.audio_frontend" in notes
    model, rules, ema, _ = restore.model_from_config(os.path.join(GOLDEN, "mulan_tiny_config.gin"), MulanModel)
    assert isinstance(model, MulanModel) and model.audio_samples == 160000 and model.text_length == 32
    assert rules and not ema
    model, _, ema, frozen = restore.model_from_config(os.path.join(GOLDEN, "n2m_generator_config.gin"),
                                                       Noise2MusicModel)
    assert model.stage == "generator" and model.parameterization == "v" and model.length == 32000 and ema
    assert not frozen                          # written before train.frozen: its EMA has every parameter
    assert model.net.text.vocab_size == 30522 and model.vocabulary is None   # the tasks' WordPiece then
    unchanged, none = restore.upgrade_config(open(os.path.join(GOLDEN, "mulan_tiny_config.gin")).read())
    again, notes = restore.upgrade_config(unchanged)
    assert again == unchanged and not notes                                   # today's layout: untouched


def _flip_a_byte(step_dir):
    data = sorted(p for p in (step_dir / "state" / "d").iterdir())
    raw = bytearray(data[0].read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data[0].write_bytes(bytes(raw))
    return data[0]


def test_a_damaged_newest_step_is_passed_over_for_the_newest_intact_one(tmp_path, caplog):
    """Every step carries its config and an integrity record (sizes and SHA-256 of its files): one
    flipped byte in the newest step's array data is caught on load, named, and the step before it is
    loaded instead; asking for the damaged step by number is an error naming the file."""
    from etils import epath

    from trainer import restore
    from trainer.checkpoints import Checkpointer
    from trainer.toy import ToyModel

    d, params, ema = _toy_run(tmp_path, step=3)
    _toy_run(tmp_path, step=5)
    ckpt = Checkpointer(d, read_only=True)
    assert ckpt.check(5) is None and ckpt.config_path(5).read_text() == (epath.Path(d) / "config.gin").read_text()
    damaged = _flip_a_byte(ckpt.step_dir(5))
    assert "does not match its SHA-256" in ckpt.check(5) and damaged.name in ckpt.check(5)
    with caplog.at_level("WARNING"):
        run = restore.load(d, expect=ToyModel)
    assert run.step == 3 and "fails its integrity check" in caplog.text and damaged.name in caplog.text
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params), ema)
    with pytest.raises(restore.ModelDirError, match="fails its integrity check"):
        restore.load(d, expect=ToyModel, step=5)
    damaged.unlink()
    assert "is missing" in ckpt.check(5)
    ckpt.close()


def test_a_runs_config_may_import_only_the_project_unless_trusted(tmp_path):
    """Parsing a gin config imports its modules (running their code): a run's config that imports
    anything outside the project, or includes another file, is refused with the line named, unless
    the user passes --trust_config (`cli.trust_configs`)."""
    from etils import epath

    from common import cli
    from trainer import restore
    from trainer.checkpoints import write_integrity
    from trainer.toy import ToyModel

    d, _, _ = _toy_run(tmp_path)
    step_dir = epath.Path(d) / "checkpoints" / "3"
    config = step_dir / "config" / "config.gin"
    config.write_text("import json\n" + config.read_text())
    write_integrity(step_dir)       # As its writer would have sealed it.
    with pytest.raises(restore.ModelDirError, match=r"config.gin:1: imports 'json', which is not part of this project"):
        restore.load(d, expect=ToyModel)
    try:
        cli.trust_configs()
        assert restore.load(d, expect=ToyModel).step == 3
    finally:
        cli.trust_configs(False)
    config.write_text("include 'elsewhere.gin'\n" + config.read_text().split("\n", 1)[1])
    write_integrity(step_dir)
    with pytest.raises(restore.ModelDirError, match="includes another gin file"):
        restore.load(d, expect=ToyModel)
