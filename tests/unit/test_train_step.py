"""One train step sharded FSDP x tensor over 8 devices == the same step on one device; the step
with the gradient accumulated over microbatches == the one-shot step."""
import jax
import numpy as np
import pytest

from trainer import optimizers
from trainer.partitioning import FSDP_TENSOR_RULES, Partitioner
from trainer.toy import ToyData, ToyModel
from trainer.train import ConfigError, make_train_step, train_program
from trainer.train_state import abstract_state


def _one_step(partitioner: Partitioner, microbatches: int = 1):
    model, opt = ToyModel(), optimizers.adam(1e-2)
    factory = abstract_state(model, partitioner, optimizer=opt, batch_size=16, ema=True)
    state = factory.init(7)
    host = ToyData().make_iterator(partitioner.data_layout(16), seed=3)
    step = jax.jit(make_train_step(model, opt, 0.9, None, microbatches, partitioner),
                   in_shardings=(factory.shardings, None), out_shardings=(factory.shardings, None),
                   donate_argnums=(0,))
    with partitioner.activate():
        before = jax.device_get(state.params)
        state, metrics = step(state, partitioner.make_global_batch(next(host), 16))
    return before, jax.device_get(state), jax.device_get(metrics)


def _p8() -> Partitioner:
    return Partitioner(mesh_shape=(1, 4, 2), logical_axis_rules=FSDP_TENSOR_RULES)


@pytest.fixture(scope="module")
def sharded_step():
    """(params before, state after, metrics) of one step over the 4 x 2 mesh (compiled once)."""
    return _one_step(_p8())


def test_sharded_step_matches_single_device(sharded_step):
    p1 = Partitioner(mesh_shape=(1, 1, 1), logical_axis_rules=FSDP_TENSOR_RULES, devices=jax.devices()[:1])
    init8, s8, m8 = sharded_step
    init1, s1, m1 = _one_step(p1)
    # Same initial params regardless of layout (partitionable threefry).
    jax.tree.map(np.testing.assert_array_equal, init8, init1)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s8.params, s1.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s8.ema_params, s1.ema_params)
    assert int(s8.step) == int(s1.step) == 1
    # EMA with the warm-up decay min(0.9, (1 + 0) / (10 + 0)) = 0.1 at the first step.
    jax.tree.map(lambda e, i, p: np.testing.assert_allclose(e, 0.1 * i + 0.9 * p, rtol=1e-5, atol=1e-7),
                 s8.ema_params, init8, s8.params)
    # The step moved the params.
    assert not np.allclose(s8.params["head"]["kernel"], init8["head"]["kernel"])


def test_microbatched_step_equals_the_one_shot_step(sharded_step):
    """Gradient accumulation over 2 parts of the batch (each part spread over the 4 x 2 mesh) gives
    the one-shot step's loss, gradient and update, to float32 rounding (rtol 1e-5 / 1e-4)."""
    p8 = _p8()
    _, one, m1 = sharded_step
    _, acc, m2 = _one_step(p8, microbatches=2)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), acc.params, one.params)
    # 16 examples over 4 batch shards: 4 per device, so 3 microbatches do not divide it.
    model, opt = ToyModel(), optimizers.adam(1e-2)
    factory = abstract_state(model, p8, optimizer=opt, batch_size=16)
    with pytest.raises(ConfigError, match=r"train.microbatches=3 does not divide the per-device batch 4"):
        train_program(model, opt, factory, p8, 16, microbatches=3)
