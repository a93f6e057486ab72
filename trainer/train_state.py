"""The train state, born sharded.

`jax.eval_shape(init)` gives the abstract state with logical partitioning
boxes; the boxes become logical `PartitionSpec`s, the Partitioner turns those
into `NamedSharding`s, and `jax.jit(init, out_shardings=...)` creates every
array directly in its shard.  No host ever holds the whole state.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from trainer import frozen as frozen_lib
from trainer.base_model import BaseModel
from trainer.partitioning import Partitioner


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar; rng: uint32[2] raw key; ema_params: None when off."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None     # the trainable parameters only (trainer/frozen.py)

    def inference_params(self) -> Any:
        """What evaluation and samples use: the EMA over the frozen parameters, else the params."""
        return self.params if self.ema_params is None else frozen_lib.merge(self.params, self.ema_params)


@dataclasses.dataclass
class StateFactory:
    """The train state of one model / optimizer / partitioner, as shapes.

    Attributes:
      abstract: the state's `jax.ShapeDtypeStruct` tree, each with its sharding (none without a
        partitioner).
      logical: the logical `PartitionSpec` of every array (from the parameters' boxes).
      shardings: the state's `NamedSharding` tree (None without a partitioner).
      frozen: the parameters that get no optimizer state, EMA copy or update.
    """

    abstract: TrainState
    logical: TrainState
    shardings: TrainState | None
    _init: Callable[[jax.Array], TrainState] | None
    frozen: frozen_lib.Frozen = dataclasses.field(default_factory=frozen_lib.Frozen)

    def init(self, seed: int) -> TrainState:
        """The initial state, each array created directly in its shard."""
        if self._init is None:
            raise ValueError("abstract_state(partitioner=None) describes shapes only; give a partitioner to init")
        return self._init(jax.random.PRNGKey(seed))


def _boxed_init_fn(model: BaseModel, optimizer: optax.GradientTransformation | None,
                   batch_size: int, ema: bool, frozen: frozen_lib.Frozen) -> Callable[[jax.Array], TrainState]:
    def init(rng: jax.Array) -> TrainState:
        param_rng, state_rng = jax.random.split(rng)
        params = model.init_params(param_rng, model.dummy_batch(batch_size))
        frozen.check(params)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            # optax maps over the boxes, so moments inherit the params' axes.
            opt_state=frozen.optimizer(optimizer).init(params) if optimizer is not None else None,
            rng=state_rng,
            ema_params=frozen.trainable(params) if ema else None,
        )

    return init


def abstract_state(
    model: BaseModel,
    partitioner: Partitioner | None,
    *,
    batch_size: int,
    optimizer: optax.GradientTransformation | None = None,
    ema: bool = False,
    frozen: frozen_lib.Frozen | Sequence[str] = (),
) -> StateFactory:
    """The one place the train state's shapes and shardings come from (training, restoring a run
    for inference, `trainer.summary`, the tests): `jax.eval_shape` of the boxed init gives the
    logical specs, the partitioner maps them to shardings, and `init` is `jax.jit(init,
    out_shardings=...)`.  Without an optimizer `opt_state` is None (inference needs no moments);
    without a partitioner only shapes and logical specs are computed (any mesh size).  `frozen`
    (patterns or a `trainer.frozen.Frozen`): those parameters get no optimizer state and no EMA
    copy; a pattern matching nothing raises `ConfigError`."""
    frozen = frozen if isinstance(frozen, frozen_lib.Frozen) else frozen_lib.Frozen(frozen)
    boxed_init = _boxed_init_fn(model, optimizer, batch_size, ema, frozen)
    ctx = partitioner.activate() if partitioner is not None else contextlib.nullcontext()
    with ctx:
        boxed_abstract = jax.eval_shape(boxed_init, jax.ShapeDtypeStruct((2,), jnp.uint32))  # a raw key
    logical = nn.get_partition_spec(boxed_abstract)
    unboxed = nn.meta.unbox(boxed_abstract)
    if partitioner is None:
        return StateFactory(abstract=unboxed, logical=logical, shardings=None, _init=None, frozen=frozen)
    shardings = partitioner.logical_to_sharding(logical)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, shardings
    )

    def init(rng: jax.Array) -> TrainState:
        return nn.meta.unbox(boxed_init(rng))

    jitted = jax.jit(init, out_shardings=shardings)

    def init_sharded(rng: jax.Array) -> TrainState:
        with partitioner.activate():
            return jitted(rng)

    return StateFactory(abstract=abstract, logical=logical, shardings=shardings, _init=init_sharded, frozen=frozen)


def param_path(path) -> str:
    """A parameter's key path as 'module/.../name' (what gin regexes and summaries name)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def param_count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
