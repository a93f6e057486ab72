"""A training run's directory, loaded for inference: its model rebuilt from its own `config.gin`
and its parameters (EMA where the run kept them) partially restored from an Orbax checkpoint.

    run = load(model_dir, modules=("mulan.model",), expect=MulanModel)      # newest step, EMA
    run.model, run.params, run.partitioner, run.step, run.which

Used by `mulan.inference` and `noise2music.sampling`.  No optimizer state is read.  Parameters
are laid out on a mesh (default: all devices on 'fsdp', the run's own logical axis rules).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import gin
import jax

from trainer import checkpoints as ckpt_lib
from trainer.partitioning import Partitioner

log = logging.getLogger(__name__)


class ModelDirError(ValueError):
    """A model dir that cannot be loaded; the message names the file at fault."""


def latest_step(model_dir: str) -> int | None:
    d = os.path.join(model_dir, "checkpoints")
    if not os.path.isdir(d):
        return None
    steps = [int(n) for n in os.listdir(d) if n.isdigit() and os.path.isdir(os.path.join(d, n, "state"))]
    return max(steps) if steps else None


def _query(name: str, default=None):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def model_from_config(config_path: str, modules: Sequence[str], expect: type,
                      bindings: Sequence[str] = ()) -> tuple[Any, Any, bool]:
    """Parses a run's `config.gin` and builds its `train.model`: (model, logical axis rules or
    None, whether the run kept EMA parameters).  The run's config stays parsed (callers may query
    it) until the next load clears it, so runs of several models load one after another."""
    from trainer import main as trainer_main

    trainer_main.import_configurables(tuple(modules))
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([config_path], list(bindings))
        model = gin.query_parameter("train.model").scoped_configurable_fn()
    except Exception as e:  # gin raises ValueError/KeyError with the binding at fault.
        gin.clear_config()
        raise ModelDirError(f"{config_path}: cannot rebuild the model ({type(e).__name__}: {e}).") from e
    rules, has_ema = _query("Partitioner.logical_axis_rules"), _query("train.ema_decay") is not None
    if not isinstance(model, expect):
        raise ModelDirError(f"{config_path}: train.model is {type(model).__name__}, not a {expect.__name__}.")
    return model, rules, has_ema


@dataclasses.dataclass
class LoadedRun:
    model: Any
    params: Any
    partitioner: Partitioner
    step: int
    model_dir: str
    which: str           # 'EMA params' or 'params'


def load(model_dir: str, *, modules: Sequence[str], expect: type, step: int | None = None, use_ema: bool = True,
         bindings: Sequence[str] = (), mesh_shape: Sequence[int] = (1, -1, 1)) -> LoadedRun:
    model_dir = os.path.abspath(model_dir)
    config = os.path.join(model_dir, "config.gin")
    if not os.path.exists(config):
        raise ModelDirError(f"{config}: missing (is {model_dir} a training run's --model_dir?).")
    step = latest_step(model_dir) if step is None else step
    if step is None:
        raise ModelDirError(f"{model_dir}/checkpoints: no complete checkpoint to load.")
    step_dir = os.path.join(model_dir, "checkpoints", str(step))
    if not os.path.isdir(step_dir):
        raise ModelDirError(f"{step_dir}: no checkpoint at step {step} (have: {latest_step(model_dir)} and earlier).")
    model, rules, has_ema = model_from_config(config, modules, expect, bindings)
    partitioner = Partitioner(mesh_shape=tuple(mesh_shape), **({"logical_axis_rules": rules} if rules else {}))
    with partitioner.activate():
        boxed = jax.eval_shape(lambda r: model.init_params(r, model.dummy_batch(1)), jax.random.PRNGKey(0))
    shardings = partitioner.logical_to_sharding(nn.get_partition_spec(boxed))
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            nn.meta.unbox(boxed), shardings)
    restored, which = None, "params"
    if use_ema and has_ema:
        restored, which = ckpt_lib.restore_params(step_dir, abstract, key="ema_params"), "EMA params"
    if restored is None:
        restored, which = ckpt_lib.restore_params(step_dir, abstract, key="params"), "params"
    log.info("loaded %s step %d (%s)", model_dir, step, which)
    return LoadedRun(model, restored, partitioner, step, model_dir, which)
