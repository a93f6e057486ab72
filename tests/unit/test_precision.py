"""Mixed precision (layers/precision.py): bfloat16 compute gives the float32 loss within a stated
tolerance, really runs its matmuls in bfloat16, keeps the loss float32, and `param_dtype` stores
parameters and Adam moments in its dtype."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layers.audio_frontend import LogMel, SpecAugment
from mulan.audio_towers import ast_tower
from mulan.model import MulanModel
from mulan.text_tower import bert_tower
from noise2music.model import Noise2MusicModel
from noise2music.t5 import T5Config
from noise2music.unet import UNet1D
from tests import fakes
from trainer import flops, optimizers
from trainer.train_state import abstract_state

# At random parameters (scale 0.3) |loss_bf16 - loss_f32| / |loss_f32| measured 1e-5 (MuLan, whose
# loss sits at chance there) and 1e-3 (Noise2Music), and MuLan's bf16 embeddings have cosine
# >= 0.99997 with the f32 ones: bfloat16 keeps 8 mantissa bits (0.4% per rounding).
RTOL = 1e-2
MIN_COSINE = 0.999


def _mulan(**kw):
    return MulanModel(ast_tower(dim=32, depth=2, num_heads=2, stride=(16, 16)),
                      bert_tower(hidden=32, num_layers=2, num_heads=2, mlp_dim=64), LogMel(num_mels=64),
                      SpecAugment(), audio_samples=16_000, text_length=8, **kw)


def _n2m(**kw):
    unet = UNet1D(base=16, kernel=3, strides=(2, 4), multipliers=(1, 2), blocks=(1, 1),
                  self_attention=(False, True), cross_attention=(False, True), num_heads=2)
    return Noise2MusicModel(unet, stage="generator", rate=3200, audio_samples=1600, text_length=8,
                            text_encoder=T5Config(vocab_size=3000, d_model=16, d_kv=4, d_ff=32, num_heads=2,
                                                  num_layers=1), **kw)


def _batch(n, samples):
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 16000
    return {"audio": (0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000, (n, 1)) * t)).astype(np.float32),
            "text_tokens": rng.integers(1000, 2000, (n, 8)).astype(np.int32), "text_mask": np.ones((n, 8), np.int32)}


@pytest.mark.parametrize("family", ["mulan", "noise2music"])
def test_bfloat16_loss_is_within_tolerance_of_float32_and_runs_in_bfloat16(family):
    make, samples = (_mulan, 16_000) if family == "mulan" else (_n2m, 1600)
    f32, bf16 = make(), make(dtype="bfloat16")
    batch = _batch(8, samples)
    params = fakes.random_params(jax.eval_shape(f32.init_params, jax.random.PRNGKey(0), batch), scale=0.3)
    key = jax.random.PRNGKey(3)
    loss32, _ = jax.jit(f32.loss)(params, batch, key)
    loss16, _ = jax.jit(bf16.loss)(params, batch, key)
    assert loss16.dtype == jnp.float32
    assert abs(float(loss16) - float(loss32)) <= RTOL * abs(float(loss32)), (float(loss16), float(loss32))
    if family == "mulan":
        for e32, e16 in zip(jax.jit(f32.forward)(params, batch)[:2], jax.jit(bf16.forward)(params, batch)[:2]):
            assert e16.dtype == jnp.float32 and float(jnp.min(jnp.sum(e32 * e16, -1))) >= MIN_COSINE
    by_dtype = flops.matmul_flops_by_dtype(bf16.loss, params, batch, key)
    # Every matmul of the towers / U-Net and T5 reads bfloat16; what stays float32 is the log-mel
    # front end's DFT (MuLan) and the U-Net's time embedding.
    tower_share = 0.35 if family == "mulan" else 0.99
    assert by_dtype.get("bfloat16", 0.0) >= tower_share * sum(by_dtype.values()), by_dtype
    assert set(flops.matmul_flops_by_dtype(f32.loss, params, batch, key)) == {"float32"}


def test_param_dtype_stores_parameters_and_adam_moments_in_it():
    model = _n2m(dtype="bfloat16", param_dtype="bfloat16")
    state = abstract_state(model, None, batch_size=2, optimizer=optimizers.adam(1e-3), ema=True).abstract
    for tree in (state.params, state.ema_params, state.opt_state):
        dtypes = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.bfloat16)}, dtypes
    default = abstract_state(_n2m(), None, batch_size=2).abstract.params
    assert {x.dtype for x in jax.tree.leaves(default)} == {jnp.dtype(jnp.float32)}


def test_unknown_dtype_names_the_binding():
    with pytest.raises(ValueError, match=r"MulanModel.dtype='float16'.*bfloat16"):
        _mulan(dtype="float16")
    with pytest.raises(ValueError, match=r"Noise2MusicModel.param_dtype='half'"):
        _n2m(param_dtype="half")


@pytest.mark.parametrize("config", ["mulan/tiny_cpu.gin", "mulan/peer_ast.gin", "noise2music/tiny_generator.gin",
                                    "noise2music/tiny_cascader.gin", "noise2music/tiny_spectrogram_generator.gin",
                                    "noise2music/tiny_vocoder.gin", "noise2music/tiny_super_resolution.gin",
                                    "noise2music/peer_unet.gin"])
def test_cpu_configs_keep_the_cpu_defaults_over_the_paper_configs_they_include(config):
    """The tiny and peer configs are overlays on the paper ones: they must not inherit the TPU settings
    (bfloat16 compute, scanned and rematerialised layers)."""
    import gin

    from trainer import flags

    flags.parse_and_apply([f"--gin_file={config}", "--model_dir=/tmp/unused"], "")
    try:
        assert gin.query_parameter("%COMPUTE_DTYPE") == "float32"
        assert gin.query_parameter("%SCAN_LAYERS") is False
        for binding in ("ast_tower.remat", "bert_tower.remat", "UNet1D.remat"):
            try:
                assert gin.query_parameter(binding) == "none", binding
            except ValueError:   # not bound: the factory's default, 'none'
                pass
    finally:
        gin.clear_config()
