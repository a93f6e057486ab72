"""Noise2Music stages: the diffusion loss of all five stages, sharded vs one device, the frozen text
encoder, padding masked out of the loss, and clear errors for rates that do not chain."""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from noise2music.model import Noise2MusicModel
from noise2music.t5 import T5Config
from noise2music.unet import UNet1D
from tests import fakes

T5_TINY = T5Config(vocab_size=3000, d_model=16, d_kv=4, d_ff=32, num_heads=2, num_layers=1)


def _unet(cross=True, strides=(2, 4), out_channels=1):
    return UNet1D(base=16, kernel=3, strides=strides, multipliers=(1, 2), blocks=(1, 1), self_attention=(False, True),
                  cross_attention=(False, cross), num_heads=2, out_channels=out_channels)


STAGES = {  # stage -> (model kwargs, clip samples at source rate)
    "generator": (dict(rate=3200, unet=_unet()), 1600),
    "cascader": (dict(rate=16000, low_rate=3200, unet=_unet()), 1600),
    "super_resolution": (dict(source_rate=24000, rate=24000, low_rate=16000, unet=_unet(False), text_encoder=None,
                              cond_t_max=1.0, cond_blur=None), 2400),
    # 10 frames, padded to 16 for prod(strides) = 8: the padding is masked out of the loss.
    "spectrogram_generator": (dict(unet=_unet(out_channels=80), weighting="sigma"), 1600),
    "vocoder": (dict(rate=16000, unet=_unet(False, strides=(8, 20)), text_encoder=None, cond_t_max=1.0,
                     cond_blur="2d", cond_blur_sigma=(0.2, 1.0), cond_blur_size=5), 1600),
}


# Sharded over 8 devices here; the other two stages' sharded steps are compared with one device's
# in tests/integration/test_n2m_train.py.
SHARDED = ("cascader", "spectrogram_generator", "vocoder")


def _batch(n, samples, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    audio = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000, size=(n, 1)) * t)).astype(np.float32)
    return {"audio": audio, "text_tokens": rng.integers(1, 3000, size=(n, 8)).astype(np.int32),
            "text_mask": np.ones((n, 8), np.int32)}


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_loss_is_the_same_sharded_and_the_text_encoder_stays_frozen(stage):
    kw, samples = STAGES[stage]
    kw = {"text_encoder": T5_TINY, **kw}
    model = Noise2MusicModel(stage=stage, audio_samples=samples, text_length=8, text_drop=0.5, **kw)
    batch = _batch(16, samples, model.source_rate)
    # Random weights (the zero-initialised exit conv would zero every gradient behind it).
    params = fakes.random_params(jax.eval_shape(model.init_params, jax.random.PRNGKey(0), batch))
    key = jax.random.PRNGKey(5)
    fn = lambda p, b: jax.value_and_grad(lambda q: model.loss(q, b, key), has_aux=True)(p)
    (l1, m1), g1 = jax.jit(fn)(params, batch)
    assert np.isfinite(float(l1)) and float(l1) > 0
    if model.has_text:
        assert 0 < float(m1["text_dropped"]) < 1
        assert all(float(np.abs(x).max()) == 0.0 for x in jax.tree.leaves(g1["text_encoder"]))  # frozen
    else:
        assert "text_encoder" not in params and float(m1["text_dropped"]) == 0
    assert float(np.abs(g1["unet"]["entry"]["kernel"]).max()) > 0
    if stage == "vocoder":  # the spectrogram enters at the bottom of the U
        assert float(np.abs(g1["unet"]["bottom_in"]["kernel"]).max()) > 0
    if stage not in SHARDED:
        return
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = {k: jax.device_put(v, NamedSharding(mesh, PartitionSpec("data"))) for k, v in batch.items()}
    with jax.set_mesh(mesh):
        (l8, _), g8 = jax.jit(fn)(params, sharded)
    np.testing.assert_allclose(float(l8), float(l1), rtol=1e-4)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), g8["unet"], g1["unet"])


def test_padding_is_masked_out_of_the_loss():
    """1,500 samples at 16 kHz -> 300 at 3.2 kHz, padded to 304 for prod(strides) = 8; a prediction
    that is wrong only on the padding costs nothing."""
    import noise2music.diffusion as d

    model = Noise2MusicModel(_unet(), stage="generator", audio_samples=1500, rate=3200, text_encoder=T5_TINY,
                             text_length=8)
    assert (model.length, model.padded) == (300, 304)
    batch = _batch(4, 1500)
    params = fakes.random_params(jax.eval_shape(model.init_params, jax.random.PRNGKey(0), batch))
    assert np.isfinite(float(jax.jit(model.eval_metrics)(params, batch)["loss"]))
    x = np.zeros((2, 8, 3), np.float32)
    pred = np.zeros_like(x)
    pred[:, 6:] = 100.0
    mask = (np.arange(8) < 6).astype(np.float32)
    np.testing.assert_allclose(np.asarray(d.diffusion_loss(model.schedule, pred, x, x, np.full(2, 0.5), mask=mask)), 0)
    pred[:, 0, 0] = 1.0   # one wrong value of 6 x 3 real ones
    np.testing.assert_allclose(np.asarray(d.diffusion_loss(model.schedule, pred, x, x, np.full(2, 0.5), mask=mask)),
                               1 / 18, rtol=1e-6)


def test_rates_that_do_not_chain_and_lengths_that_do_not_divide_are_named():
    with pytest.raises(ValueError, match="must chain"):
        Noise2MusicModel(_unet(), stage="cascader", audio_samples=1600, rate=16000, low_rate=16000,
                         text_encoder=T5_TINY)
    with pytest.raises(ValueError, match="must chain"):
        Noise2MusicModel(_unet(), stage="cascader", audio_samples=1600, rate=16000, low_rate=3333, text_encoder=T5_TINY)
    with pytest.raises(ValueError, match="spectrogram hop"):
        Noise2MusicModel(_unet(False), stage="vocoder", audio_samples=1600, rate=16000)
    with pytest.raises(ValueError, match="out_channels=1"):
        Noise2MusicModel(_unet(), stage="spectrogram_generator", audio_samples=1600, text_encoder=T5_TINY)
    with pytest.raises(ValueError, match="stage="):
        Noise2MusicModel(_unet(), stage="diffusion_vocoder")
