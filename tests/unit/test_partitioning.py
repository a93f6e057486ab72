"""Mesh construction, logical->mesh shardings (golden file) and data layout."""
import json
import os

import jax
import numpy as np
import pytest

from trainer import optimizers
from trainer.partitioning import FSDP_TENSOR_RULES, DataLayout, Partitioner
from trainer.toy import ToyModel
from trainer.train_state import abstract_state

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "toy_fsdp_tensor_1x4x2.json")


def _spec_str(spec) -> list:
    return [list(a) if isinstance(a, tuple) else a for a in spec]


def test_params_land_on_mesh_as_golden_says():
    p = Partitioner(mesh_shape=(1, 4, 2), logical_axis_rules=FSDP_TENSOR_RULES)
    factory = abstract_state(ToyModel(), p, optimizer=optimizers.adam(1e-3), batch_size=8, ema=True)
    state = factory.init(0)
    got = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        name = "/".join(k.key for k in path)
        assert leaf.sharding.mesh.shape == p.mesh.shape
        # The per-device shard really is the global shape split as the spec says.
        expect = [d // (np.prod([p.mesh.shape[a] for a in (ax if isinstance(ax, tuple) else (ax,))]) if ax else 1)
                  for d, ax in zip(leaf.shape, tuple(leaf.sharding.spec) + (None,) * leaf.ndim)]
        assert list(leaf.addressable_shards[0].data.shape) == expect, name
        got[name] = {"shape": list(leaf.shape), "spec": _spec_str(leaf.sharding.spec)}
    if os.environ.get("UPDATE_GOLDENS"):
        with open(GOLDEN, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
    with open(GOLDEN) as f:
        assert got == json.load(f)
    # Optimizer moments and EMA follow their params.
    mu = state.opt_state[1][0].mu
    for a, b in zip(jax.tree.leaves(mu), jax.tree.leaves(state.params)):
        assert a.sharding == b.sharding
    for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params)):
        assert a.sharding == b.sharding
    assert state.step.sharding.is_fully_replicated


def test_mesh_shape_resolution_and_errors():
    assert Partitioner(mesh_shape=(2, -1, 2)).mesh_shape == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one size may be -1"):
        Partitioner(mesh_shape=(-1, -1, 2))
    with pytest.raises(ValueError, match="needs 16 devices"):
        Partitioner(mesh_shape=(2, 4, 2))
    with pytest.raises(ValueError, match="does not divide"):
        Partitioner(mesh_shape=(1, -1, 3))
    with pytest.raises(ValueError, match="mesh axis 'model'"):
        Partitioner(mesh_shape=(1, -1, 1), logical_axis_rules=[("embed", "model")])


def test_data_layout_single_process():
    p = Partitioner(mesh_shape=(2, 2, 2))
    lay = p.data_layout(16)
    assert lay == DataLayout(global_batch_size=16, per_host_batch_size=16, shard_id=0, num_shards=1)
    assert p.num_batch_shards == 4
    with pytest.raises(ValueError, match="BATCH_SIZE=6"):
        p.data_layout(6)
    batch = p.make_global_batch({"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}, 16)
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(48).reshape(16, 3))
