"""The train state, born sharded.

`jax.eval_shape(init)` gives the abstract state with logical partitioning
boxes; the boxes become logical `PartitionSpec`s, the Partitioner turns those
into `NamedSharding`s, and `jax.jit(init, out_shardings=...)` creates every
array directly in its shard.  No host ever holds the whole state.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from trainer.base_model import BaseModel
from trainer.partitioning import Partitioner


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar; rng: uint32[2] raw key; ema_params: None when off."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None


@dataclasses.dataclass
class StateFactory:
    """The sharded train state of one model/optimizer/partitioner triple.

    Attributes:
      abstract: the state's `jax.ShapeDtypeStruct` tree, each with its sharding.
      shardings: the state's `NamedSharding` tree.
    """

    abstract: TrainState
    shardings: TrainState
    _init: Callable[[jax.Array], TrainState]

    def init(self, seed: int) -> TrainState:
        return self._init(jax.random.PRNGKey(seed))


def _boxed_init_fn(model: BaseModel, optimizer: optax.GradientTransformation,
                   batch_size: int, ema: bool) -> Callable[[jax.Array], TrainState]:
    def init(rng: jax.Array) -> TrainState:
        param_rng, state_rng = jax.random.split(rng)
        params = model.init_params(param_rng, model.dummy_batch(batch_size))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            # optax maps over the boxes, so moments inherit the params' axes.
            opt_state=optimizer.init(params),
            rng=state_rng,
            ema_params=params if ema else None,
        )

    return init


def make_state_factory(
    model: BaseModel,
    optimizer: optax.GradientTransformation,
    partitioner: Partitioner,
    *,
    batch_size: int,
    ema: bool = False,
) -> StateFactory:
    boxed_init = _boxed_init_fn(model, optimizer, batch_size, ema)
    with partitioner.activate():
        boxed_abstract = jax.eval_shape(boxed_init, jax.random.PRNGKey(0))
    logical_specs = nn.get_partition_spec(boxed_abstract)
    shardings = partitioner.logical_to_sharding(logical_specs)
    unboxed = nn.meta.unbox(boxed_abstract)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, shardings
    )

    def init(rng: jax.Array) -> TrainState:
        return nn.meta.unbox(boxed_init(rng))

    jitted = jax.jit(init, out_shardings=shardings)

    def init_sharded(rng: jax.Array) -> TrainState:
        with partitioner.activate():
            return jitted(rng)

    return StateFactory(abstract=abstract, shardings=shardings, _init=init_sharded)


def param_count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
