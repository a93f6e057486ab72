"""MuLan's loss, temperature and model: global-batch semantics, formulas, paper-size configs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mulan import loss as loss_lib
from mulan.audio_towers import ast_tower, resnet_tower
from layers.audio_frontend import LogMel, SpecAugment
from mulan.model import MulanModel, raw_from_temperature, temperature_from_raw
from mulan.text_tower import bert_tower
from tests import fakes


def _naive_mulan(a, t, tau):
    s = np.exp(a @ t.T / tau)
    b = len(a)
    return np.mean([-np.log(s[i, i] / sum(s[i, j] + s[j, i] for j in range(b) if j != i)) for i in range(b)])


def _naive_infonce(a, t, tau):
    z = a @ t.T / tau
    lse = lambda x, ax: np.log(np.exp(x).sum(ax))
    d = np.diagonal(z)
    return 0.5 * (np.mean(lse(z, 1) - d) + np.mean(lse(z, 0) - d))


def test_losses_match_their_formulas():
    rng = np.random.default_rng(0)
    a, t = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, 6, 8)))
    for kind, ref in (("mulan", _naive_mulan), ("infonce", _naive_infonce)):
        got = loss_lib.contrastive_loss(loss_lib.similarity_logits(a, t, 0.2), kind)
        np.testing.assert_allclose(float(got), ref(a, t, 0.2), rtol=1e-5)
    with pytest.raises(ValueError, match="loss_type='clip'"):
        loss_lib.contrastive_loss(jnp.zeros((2, 2)), "clip")


def test_temperature_stays_in_unit_interval():
    for tau in (1e-3, 0.07, 0.5, 1.0):
        assert abs(float(temperature_from_raw(raw_from_temperature(tau))) - tau) < 1e-5
    taus = np.asarray(temperature_from_raw(jnp.array([-1e4, -30.0, 0.0, 30.0, 1e4])))
    assert np.all(taus >= 1e-3) and np.all(taus <= 1.0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="MulanModel.init_temperature"):
            MulanModel(resnet_tower(), bert_tower(), init_temperature=bad)


def _tiny_model(loss_type="mulan"):
    return MulanModel(ast_tower(dim=32, depth=1, num_heads=2, stride=(16, 16), patch_dropout=0.25),
                      bert_tower(hidden=32, num_layers=1, num_heads=2, mlp_dim=64), LogMel(num_mels=64),
                      SpecAugment(), audio_samples=16_000, text_length=8, loss_type=loss_type)


@pytest.mark.parametrize("loss_type", ["mulan", "infonce"])
def test_loss_on_global_batch_is_the_same_on_one_device_or_sharded_over_8(loss_type):
    model = _tiny_model(loss_type)
    rng = np.random.default_rng(1)
    batch = {"audio": rng.normal(size=(16, 16_000)).astype(np.float32) * 0.1,
             "text_tokens": rng.integers(1000, 2000, size=(16, 8)).astype(np.int32),
             "text_mask": np.ones((16, 8), np.int32)}
    params = fakes.random_params(jax.eval_shape(model.init_params, jax.random.PRNGKey(0), batch))
    params["temperature_raw"] = np.float32(raw_from_temperature(0.1))     # the model's initial tau
    key = jax.random.PRNGKey(3)
    fn = lambda p, b: jax.value_and_grad(lambda q: model.loss(q, b, key), has_aux=True)(p)
    (l1, m1), g1 = jax.jit(fn)(params, batch)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = {k: jax.device_put(v, NamedSharding(mesh, PartitionSpec("data"))) for k, v in batch.items()}
    with jax.set_mesh(mesh):
        (l8, m8), g8 = jax.jit(fn)(params, sharded)
    assert len(sharded["audio"].sharding.device_set) == 8
    np.testing.assert_allclose(float(l8), float(l1), rtol=1e-5)
    for k in m1:
        np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=1e-4, atol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), g8, g1)
    assert float(m1["temperature"]) == pytest.approx(0.1, rel=1e-5)
    assert float(l1) == pytest.approx(float(m1["chance_loss"]), rel=0.2)  # untrained: near chance


def test_embeddings_are_normalised_and_eval_is_deterministic():
    model = _tiny_model()
    audio = np.random.default_rng(2).normal(size=(4, 16_000)).astype(np.float32)
    tokens, mask = np.full((4, 8), 1037, np.int32), np.ones((4, 8), np.int32)
    params = fakes.random_params(jax.eval_shape(model.init_params, jax.random.PRNGKey(0), model.dummy_batch(4)))
    a1, a2 = model.embed_audio(params, audio), model.embed_audio(params, audio)
    np.testing.assert_array_equal(a1, a2)  # no SpecAugment / patch dropout outside training
    np.testing.assert_allclose(np.linalg.norm(a1, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(model.embed_text(params, tokens, mask), axis=-1), 1.0, rtol=1e-5)
