"""Noise2Music stages: the diffusion loss of the generator and the cascader, sharded vs one device,
the frozen text encoder, and clear errors for rates that do not chain."""
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from noise2music.model import Noise2MusicModel
from noise2music.t5 import T5Config
from noise2music.unet import UNet1D

T5_TINY = T5Config(vocab_size=3000, d_model=16, d_kv=4, d_ff=32, num_heads=2, num_layers=1)


def _unet(cross=True):
    return UNet1D(base=16, kernel=3, strides=(2, 4), multipliers=(1, 2), blocks=(1, 1), self_attention=(False, True),
                  cross_attention=(False, cross), num_heads=2)


@pytest.mark.parametrize("stage,rate,low", [("generator", 3200, None), ("cascader", 16000, 3200)])
def test_stage_loss_is_the_same_sharded_and_the_text_encoder_stays_frozen(stage, rate, low):
    model = Noise2MusicModel(_unet(), stage=stage, audio_samples=1600, rate=rate, low_rate=low,
                             text_encoder=T5_TINY, text_length=8, text_drop=0.5)
    rng = np.random.default_rng(0)
    t = np.arange(1600) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000, size=(16, 1)) * t)).astype(np.float32)
    batch = {"audio": audio, "text_tokens": rng.integers(1, 3000, size=(16, 8)).astype(np.int32),
             "text_mask": np.ones((16, 8), np.int32)}
    params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(0), batch))
    key = jax.random.PRNGKey(5)
    fn = lambda p, b: jax.value_and_grad(lambda q: model.loss(q, b, key), has_aux=True)(p)
    (l1, m1), g1 = jax.jit(fn)(params, batch)
    assert np.isfinite(float(l1)) and 0 < float(m1["text_dropped"]) < 1
    assert all(float(np.abs(x).max()) == 0.0 for x in jax.tree.leaves(g1["text_encoder"]))  # frozen
    assert any(float(np.abs(x).max()) > 0 for x in jax.tree.leaves(g1["unet"]))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = {k: jax.device_put(v, NamedSharding(mesh, PartitionSpec("data"))) for k, v in batch.items()}
    with jax.set_mesh(mesh):
        (l8, _), g8 = jax.jit(fn)(params, sharded)
    np.testing.assert_allclose(float(l8), float(l1), rtol=1e-4)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), g8["unet"], g1["unet"])


def test_rates_that_do_not_chain_and_lengths_that_do_not_divide_are_named():
    with pytest.raises(ValueError, match="must chain"):
        Noise2MusicModel(_unet(), stage="cascader", audio_samples=1600, rate=16000, low_rate=3000, text_encoder=T5_TINY)
    with pytest.raises(ValueError, match="prod\\(strides\\)"):
        Noise2MusicModel(_unet(), stage="generator", audio_samples=1500, rate=3200, text_encoder=T5_TINY)
    with pytest.raises(ValueError, match="stage="):
        Noise2MusicModel(_unet(), stage="vocoder")
