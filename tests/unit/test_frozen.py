"""Frozen parameters (trainer/frozen.py): no optimizer moments, no EMA copy, no update, sharded over
the 4 x 2 mesh; the state shrinks by exactly their moments and EMA; a pattern that matches nothing
is an error naming `train.frozen`."""
import jax
import numpy as np
import pytest

from trainer import optimizers
from trainer.errors import ConfigError
from trainer.frozen import Frozen
from trainer.partitioning import FSDP_TENSOR_RULES, Partitioner
from trainer.toy import ToyData, ToyModel
from trainer.train import make_train_step
from trainer.train_state import abstract_state

FROZEN = ["^block_0/", "^embed_in/"]


def _bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_frozen_parameters_get_no_moments_no_ema_and_no_update():
    p8 = Partitioner(mesh_shape=(1, 4, 2), logical_axis_rules=FSDP_TENSOR_RULES)
    model, opt = ToyModel(), optimizers.adam(1e-2)
    full = abstract_state(model, None, batch_size=16, optimizer=opt, ema=True).abstract
    factory = abstract_state(model, p8, batch_size=16, optimizer=opt, ema=True, frozen=FROZEN)
    frozen_bytes = _bytes(Frozen(FROZEN).split(full.params)[1])
    assert frozen_bytes > 0
    # Adam keeps two moments per trainable parameter; the EMA one copy.
    assert _bytes(full.opt_state) - _bytes(factory.abstract.opt_state) == 2 * frozen_bytes
    assert _bytes(full.ema_params) - _bytes(factory.abstract.ema_params) == frozen_bytes
    assert set(factory.abstract.ema_params) == set(full.params) - {"block_0", "embed_in"}

    state = factory.init(7)
    before = jax.device_get(state.params)
    step = jax.jit(make_train_step(model, opt, 0.9, None, 1, p8, factory.frozen),
                   in_shardings=(factory.shardings, None), out_shardings=(factory.shardings, None),
                   donate_argnums=(0,))
    batch = p8.make_global_batch(next(ToyData().make_iterator(p8.data_layout(16), seed=3)), 16)
    with p8.activate():
        state, metrics = step(state, batch)
        state, metrics = step(state, batch)
    after = jax.device_get(state.params)
    assert float(metrics["grad_norm"]) > 0
    jax.tree.map(np.testing.assert_array_equal, after["block_0"], before["block_0"])
    jax.tree.map(np.testing.assert_array_equal, after["embed_in"], before["embed_in"])
    assert not np.allclose(after["block_1"]["mlp_in"]["kernel"], before["block_1"]["mlp_in"]["kernel"])
    # Inference reads the EMA of what trains and the frozen parameters as they are.
    used = jax.device_get(state.inference_params())
    assert set(used) == set(after)
    jax.tree.map(np.testing.assert_array_equal, used["block_0"], before["block_0"])
    jax.tree.map(np.testing.assert_array_equal, used["head"], jax.device_get(state.ema_params["head"]))
    assert not np.allclose(used["head"]["kernel"], after["head"]["kernel"])   # the EMA lags the params


def test_a_pattern_that_matches_nothing_or_is_no_regex_names_the_binding():
    with pytest.raises(ConfigError, match=r"train.frozen: 'text_encoder/' matches no parameter .*'block_0'"):
        abstract_state(ToyModel(), None, batch_size=4, frozen=["^block_0/", "text_encoder/"])
    with pytest.raises(ConfigError, match=r"train.frozen: '\(unclosed' is not a regular expression"):
        Frozen(["(unclosed"])
