"""The train loop: one keyword-only, gin-configurable `train()`.

Used by `python -m trainer.main` (the toy model), `python -m mulan.train` and
`python -m noise2music.train`.  Sections:

  1. set-up: every setting checked (data layout, microbatches, the state factory with its
     frozen parameters, a writable model dir, local or gs://) before anything is written; then
     the run directory's lock (`trainer.run_dir`: one writer at a time)
  2. restore: newest intact checkpoint in model_dir (`trainer.checkpoints`), else `init_from`,
     else init
  3. compile: pure step, `jax.jit(in_shardings, out_shardings, donate_argnums)`,
     compiled ahead of time (`train_program`; the compile time is logged); only then does the
     launch touch the run's files: its config recorded (`config.gin`, `launches/`) and
     `metrics.jsonl` cut back to the restored step
  4. loop: RNG folded by step, metrics fetched every `log_period` steps (every
     step's scalars are written), NaN guard before every save, periodic eval,
     media hooks (`trainer.hooks`), checkpoint every `CHECKPOINT_PERIOD`,
     save-and-exit on preemption.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import paths
from trainer import metrics as metrics_lib
from trainer import multihost, topology
from trainer import run_dir as run_dir_lib
from trainer.aot import Program
from trainer.base_model import BaseModel
from trainer.checkpoints import CheckpointConfig, Checkpointer, CheckpointRestoreError, CheckpointSaveError
from trainer.errors import ConfigError, require
from trainer.frozen import Frozen
from trainer.hooks import MediaHook, write_media
from trainer.input_pipeline import DataSource
from trainer.partitioning import Partitioner
from trainer.train_state import StateFactory, TrainState, abstract_state, param_count

log = logging.getLogger(__name__)


__all__ = ["train", "make_train_step", "train_program", "ConfigError", "NonFiniteLossError",
           "CheckpointRestoreError", "CheckpointSaveError"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a step's loss is NaN/inf; the last good checkpoint is kept."""


def _microbatch_grads(model: BaseModel, params, batch, rng, microbatches: int, partitioner: Partitioner | None):
    """The loss, metrics and gradients of the global batch as the mean over `microbatches` equal
    parts, one after another (`lax.scan`): the activations of one part live at a time.  Part j is
    rows j, j + k, j + 2k, ... (k = microbatches), so every part is spread over all the batch
    shards as the whole batch is."""
    def split(x):
        x = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
        if partitioner is not None:
            spec = jax.sharding.PartitionSpec(None, partitioner.batch_mesh_axes or None)
            x = jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(partitioner.mesh, spec))
        return x

    grad_fn = jax.value_and_grad(lambda p, b, r: model.loss(p, b, r), has_aux=True)

    def body(acc, xs):
        part, j = xs
        (loss, aux), grads = grad_fn(params, part, jax.random.fold_in(rng, j))
        return jax.tree.map(jnp.add, acc, ((loss, aux), grads)), None

    parts = jax.tree.map(split, batch)
    zeros = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], parts), rng)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), zeros)
    total, _ = jax.lax.scan(body, zeros, (parts, jnp.arange(microbatches)))
    return jax.tree.map(lambda x: x / microbatches, total)


def make_train_step(model: BaseModel, optimizer: optax.GradientTransformation,
                    ema_decay: float | None, lr_schedule: optax.Schedule | None,
                    microbatches: int = 1, partitioner: Partitioner | None = None, frozen: Frozen = Frozen()):
    """The pure step: (state, batch) -> (state, scalar metrics).  With `microbatches` > 1 the
    gradient is accumulated over that many parts of the batch (`_microbatch_grads`); `frozen`
    parameters (the state's, `StateFactory.frozen`) are not updated and have no EMA."""
    optimizer = frozen.optimizer(optimizer)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if microbatches > 1:
            (loss, aux), grads = _microbatch_grads(model, state.params, batch, rng, microbatches, partitioner)
        else:
            (loss, aux), grads = jax.value_and_grad(
                lambda p: model.loss(p, batch, rng), has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None:
            # The decay warms up as (1 + step) / (10 + step) (TensorFlow's num_updates rule), so a
            # short run's EMA is not mostly its initialisation.
            step = state.step.astype(jnp.float32)
            decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
            ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, frozen.trainable(params))
        out = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params)}
        if lr_schedule is not None:
            out["learning_rate"] = lr_schedule(state.step)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             ema_params=ema), out

    return train_step


def check_microbatches(model: BaseModel, partitioner: Partitioner, batch_size: int, microbatches: int) -> None:
    """ConfigError for `microbatches` that do not divide the per-device batch, or a model whose
    loss is not a mean over examples (MuLan's contrastive loss: its negatives are the batch)."""
    if microbatches < 1 or (microbatches > 1 and (batch_size // partitioner.num_batch_shards) % microbatches):
        raise ConfigError(f"train.microbatches={microbatches} does not divide the per-device batch "
                          f"{batch_size // partitioner.num_batch_shards} (BATCH_SIZE={batch_size} over "
                          f"{partitioner.num_batch_shards} batch shards)")
    if microbatches > 1 and not model.loss_is_example_mean:
        raise ConfigError(f"train.microbatches={microbatches}: {type(model).__name__}'s loss is not a mean over "
                          "examples (its batch is part of the loss), so microbatches would change it")


def train_program(model: BaseModel, optimizer: optax.GradientTransformation, state: StateFactory,
                  partitioner: Partitioner, batch_size: int, ema_decay: float | None = None,
                  lr_schedule: optax.Schedule | None = None, microbatches: int = 1) -> Program:
    """The step for `state` (from `abstract_state`) and a global batch of `batch_size`, jitted with
    its shardings (the state donated), with its abstract arguments: ready to compile ahead of time.
    Raises `ConfigError` for `microbatches` that do not fit (`check_microbatches`)."""
    check_microbatches(model, partitioner, batch_size, microbatches)
    batch_abstract = {
        k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=partitioner.batch_sharding(len(s.shape)))
        for k, s in model.batch_spec(batch_size).items()
    }
    step_fn = jax.jit(
        make_train_step(model, optimizer, ema_decay, lr_schedule, microbatches, partitioner, state.frozen),
        in_shardings=(state.shardings, {k: v.sharding for k, v in batch_abstract.items()}),
        out_shardings=(state.shardings, partitioner.replicated),
        donate_argnums=(0,),
    )
    return Program("train", step_fn, (state.abstract, batch_abstract), partitioner, batch_size,
                   count_fn=make_train_step(model.without_remat(), optimizer, ema_decay, lr_schedule,
                                            microbatches, partitioner, state.frozen))


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@gin.configurable
def train(
    *,
    model: BaseModel,
    train_data: DataSource,
    optimizer: optax.GradientTransformation,
    train_steps: int,
    batch_size: int,
    model_dir: str | None,
    partitioner: Partitioner | None = None,
    checkpoint: CheckpointConfig | None = None,
    eval_data: DataSource | None = None,
    eval_period: int = 0,
    eval_steps: int = 4,
    log_period: int = 10,
    random_seed: int = 0,
    ema_decay: float | None = None,
    lr_schedule: optax.Schedule | None = None,
    hooks: Sequence[MediaHook] = (),
    cpu_peak_flops: float = topology.CPU_PEAK_FLOPS,
    microbatches: int = 1,
    frozen: Sequence[str] = (),
    topology_name: str | None = None,
) -> dict[str, Any]:
    """Trains `model` for `train_steps` steps of global batch `batch_size`.

    Resumes from the newest complete checkpoint in `model_dir/checkpoints`.  Each of `hooks`
    (e.g. Noise2Music's samples: audio and spectrogram images) writes to TensorBoard every
    `hook.period` steps and at the last step.  `perf/mfu` is logged with every `log_period`-th
    step: the step's analytic matmul FLOPs per device (`trainer.flops`) over its time and the
    device's peak (a TPU chip's bf16 peak, `trainer.topology`; on CPU `cpu_peak_flops`, the host's
    matmul ceiling, shared by its devices).
    `microbatches` > 1 accumulates the gradient over that many parts of the global batch (the
    activations of one part in memory at a time; the same update up to float rounding, for a
    loss that is a mean over examples).  `frozen`: regexes on parameter paths (`trainer.frozen`)
    whose parameters get no optimizer state, no EMA copy and no update.  `topology_name` (a
    recipe's, configs/recipes/): the TPU slice the settings were chosen for; any other devices are
    refused before anything is written (`trainer.topology.check_devices`).
    Returns a summary (final step, last loss, timings, where things are).
    """
    # == 1. set-up ==========================================================
    # Every setting is checked before anything is written: a bad one leaves the run dir as it was.
    if not model_dir:
        raise ConfigError("train.model_dir is not set: pass --model_dir=DIR (a local path or gs://...).")
    require(train_steps >= 0, "train.train_steps (TRAIN_STEPS)", train_steps, "at least 0")
    require(batch_size >= 1, "train.batch_size (BATCH_SIZE)", batch_size, "at least 1")
    require(log_period >= 1, "train.log_period", log_period, "at least 1")
    require(eval_period >= 0 and eval_steps >= 1, "train.eval_period, train.eval_steps", (eval_period, eval_steps),
            "at least 0 and at least 1")
    require(microbatches >= 1, "train.microbatches", microbatches, "at least 1")
    require(ema_decay is None or 0 <= ema_decay < 1, "train.ema_decay", ema_decay, "in [0, 1) or None")
    run_dir = paths.resolve(model_dir)        # local (made absolute, for Orbax) or gs://
    model_dir = str(run_dir)
    if topology_name:
        topology.check_devices(topology_name, jax.devices(), "train.topology_name")
    partitioner = partitioner or Partitioner()
    checkpoint = checkpoint or CheckpointConfig()
    primary = multihost.is_primary()
    log.info("model_dir %s; %s; global batch %d", model_dir, partitioner.describe(), batch_size)
    layout = partitioner.data_layout(batch_size)
    check_microbatches(model, partitioner, batch_size, microbatches)
    factory = abstract_state(model, partitioner, batch_size=batch_size, optimizer=optimizer,
                             ema=ema_decay is not None, frozen=Frozen(frozen))
    n_frozen = param_count(factory.frozen.split(factory.abstract.params)[1]) if factory.frozen else 0
    log.info("parameters: %s%s", f"{param_count(factory.abstract.params):,}",
             f" ({n_frozen:,} frozen: {', '.join(frozen)})" if n_frozen else "")
    if primary:
        paths.check_writable(run_dir, "train.model_dir (--model_dir)")
    train_iter = train_data.make_iterator(layout, seed=random_seed)
    # One writer per run directory (process 0 of a multi-host run): a second launch on this
    # model_dir is refused before it reads or writes anything (trainer/run_dir.py).
    lock = run_dir_lib.RunLock(run_dir) if primary else contextlib.nullcontext()
    with lock:
        # == 2. restore ==========================================================
        ckpt = Checkpointer(model_dir, checkpoint, run_config=gin.config_str())
        jsonl = run_dir / "metrics.jsonl"
        restored = ckpt.restore_latest(factory.abstract, train_iter)
        if restored is not None:
            start_step, state = restored
            log.info("resumed from %s at step %d", ckpt.directory / str(start_step), start_step)
        else:
            start_step, state = 0, factory.init(random_seed)
            params = model.load_pretrained(state.params, factory.shardings.params)
            if params is not state.params:
                ema = jax.tree.map(lambda x: x.copy(), factory.frozen.trainable(params)) \
                    if state.ema_params is not None else None
                state = state.replace(params=params, ema_params=ema)  # A copy: both are donated.
            if checkpoint.init_from:
                src = ckpt.restore_params_from(checkpoint.init_from, factory.abstract)
                state = state.replace(params=src["params"], ema_params=src.get("ema_params"))
                log.info("initialised params from %s", checkpoint.init_from)

        # == 3. compile ==========================================================
        program = train_program(model, optimizer, factory, partitioner, batch_size, ema_decay, lr_schedule,
                                microbatches)
        compiled, compile_seconds = program.compile()
        log.info("train step compiled ahead of time in %.1fs", compile_seconds)
        if primary:   # Every check has passed: only now does this launch change the run's files.
            metrics_lib.truncate_jsonl(jsonl, start_step)
            launch = run_dir_lib.record_launch(run_dir, gin.config_str(), start_step)
            log.info("config of this launch: %s", launch)
        peak = topology.peak_flops_per_device(jax.local_devices()[0], cpu_peak_flops)
        step_flops = program.matmul_flops() / jax.device_count()   # per device
        eval_fn = None
        if eval_data is not None and eval_period:
            eval_fn = jax.jit(lambda p, b: model.eval_metrics(p, b), out_shardings=partitioner.replicated)

        # == 4. loop =============================================================
        writer = metrics_lib.create_writer(model_dir, "train")
        eval_writer = metrics_lib.create_writer(model_dir, "eval") if eval_fn else None
        preemption = multihost.PreemptionWatcher()
        pending: list[tuple[int, Any]] = []
        last: dict[str, float] = {}
        timer = {"t": time.perf_counter(), "step": start_step, "t_start": time.perf_counter()}
        status = "completed"

        def flush(step: int) -> None:
            nonlocal last
            if not pending:
                return
            host = jax.device_get([m for _, m in pending])
            now = time.perf_counter()
            rate = (step - timer["step"]) / max(now - timer["t"], 1e-9)
            timer.update(t=now, step=step)
            host[-1] = {**host[-1], "perf/steps_per_second": rate,
                        **({"perf/mfu": step_flops * rate / peak} if peak else {})}
            for (s, _), m in zip(pending, host):
                if not np.isfinite(m["loss"]):
                    raise NonFiniteLossError(
                        f"loss is {m['loss']} at step {s}; nothing after the last checkpoint "
                        f"({ckpt.latest_step()}) was saved. Lower the learning rate or check the data.")
                writer.write_scalars(s, m)
            last = {k: float(v) for k, v in host[-1].items()}
            pending.clear()
            eta = (train_steps - step) / rate if rate > 0 else math.inf
            extras = " | ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "loss" and not k.startswith("perf/"))
            if "perf/mfu" in last:
                extras += f" | MFU {last['perf/mfu']:.1%}"
            log.info("step %d/%d | loss %.5g | %.2f steps/s | %.1f examples/s | ETA %s | %s",
                     step, train_steps, last["loss"], rate, rate * batch_size, _fmt_eta(eta), extras)

        def evaluate(step: int) -> None:
            it = eval_data.make_iterator(layout, seed=random_seed)
            params = state.inference_params()
            sums: dict[str, float] = {}
            with partitioner.activate():
                for _ in range(eval_steps):
                    m = jax.device_get(eval_fn(params, partitioner.make_global_batch(next(it), batch_size)))
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v) / eval_steps
            eval_writer.write_scalars(step, sums)
            log.info("eval at step %d: %s", step, " | ".join(f"{k} {v:.4g}" for k, v in sums.items()))

        def media(step: int, batch, hook: MediaHook) -> None:
            t = time.perf_counter()
            params = state.inference_params()
            names = write_media(writer, step, hook(model, params, batch, partitioner))
            if names:
                log.info("media at step %d (%s) in %.1fs", step, ", ".join(names), time.perf_counter() - t)

        step = start_step
        try:
            while step < train_steps:
                batch = partitioner.make_global_batch(next(train_iter), batch_size)
                state, m = compiled(state, batch)
                step += 1
                pending.append((step, m))
                if step % log_period == 0 or step == train_steps:
                    flush(step)
                if preemption.reached(step):
                    flush(step)
                    ckpt.save(step, state, train_iter)
                    log.warning("preempted: checkpoint saved at step %d; exiting.", step)
                    status = "preempted"
                    break
                if ckpt.should_save(step) and step < train_steps:
                    flush(step)  # Never save a state whose loss went non-finite.
                    writer.flush()
                    ckpt.save(step, state, train_iter)
                if eval_fn and step % eval_period == 0:
                    evaluate(step)
                for hook in hooks:
                    if hook.due(step, train_steps):
                        media(step, batch, hook)
            flush(step)
            if status == "completed":
                ckpt.save(step, state, train_iter)
        finally:
            preemption.close()
            ckpt.close()
            writer.flush()
            if eval_writer:
                eval_writer.flush()
        elapsed = time.perf_counter() - timer["t_start"]
        done = step - start_step
        return {
            "status": status,
            "step": step,
            "start_step": start_step,
            "loss": last.get("loss"),
            "metrics": last,
            "compile_seconds": round(compile_seconds, 3),
            "steps_per_second": round(done / elapsed, 3) if done else None,
            "flops_per_step_per_device": step_flops,
            "mfu": round(step_flops * done / elapsed / peak, 5) if done and peak else None,
            "examples_per_second": round(done * batch_size / elapsed, 2) if done else None,
            "num_params": param_count(factory.abstract.params),
            "model_dir": model_dir,
            "checkpoint_dir": str(ckpt.directory),
            "metrics_file": str(jsonl),
        }
