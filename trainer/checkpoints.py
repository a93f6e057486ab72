"""Orbax checkpointing behind one small interface.

Layout: `MODEL_DIR/checkpoints/<step>/{state,data}`.  `state` is the sharded
train state (Orbax `StandardCheckpointHandler`, restored straight into the
sharded abstract state); `data` holds one file per process with that host's
input-pipeline position, so a resumed run sees exactly the batches it would
have seen.

Orbax writes each step to `<step>.orbax-checkpoint-tmp-*` and renames it when
complete, so a save killed midway leaves a tmp directory that is never
listed as a step; we warn about such leftovers.  A finished-looking step that
still fails to restore is skipped with a warning and the previous one is used.

An Orbax API change should only touch this file.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import gin
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import future as ocp_future

from common import paths
from trainer.input_pipeline import DataIterator

log = logging.getLogger(__name__)

_TMP_MARKER = ".orbax-checkpoint-tmp"
_COMMIT_FILE = "commit_success.txt"    # what marks a finished save where there is no atomic rename


# -- per-process input-pipeline state -----------------------------------------
class DataIteratorHandler(ocp.handlers.AsyncCheckpointHandler):
    """Saves `DataIterator.get_state()` of every process as `process_<i>.state`.

    The state is captured when `save` is called (so the async write cannot see
    a later position); the file is written in Orbax's commit thread.
    """

    def _path(self, directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}.state"

    async def async_save(self, directory: epath.Path, args: "DataIteratorSave"):
        state = args.iterator.get_state()
        path = self._path(directory)

        async def write():
            path.write_bytes(state)

        return [ocp_future.CommitFutureAwaitingContractedSignals(write(), name="data_iterator_save")]

    def save(self, directory: epath.Path, args: "DataIteratorSave"):
        self._path(directory).write_bytes(args.iterator.get_state())

    def restore(self, directory: epath.Path, args: "DataIteratorRestore"):
        path = self._path(directory)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no input-pipeline state for process {jax.process_index()} "
                f"(was this checkpoint written by a run with fewer processes?)"
            )
        args.iterator.set_state(path.read_bytes())
        return args.iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: DataIterator


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: DataIterator


class CheckpointRestoreError(RuntimeError):
    pass


def tree_mismatch(saved: Any, wanted: Any, path: str = "", subset: bool = False) -> str | None:
    """The first difference between a checkpoint's metadata tree and the model's abstract tree,
    described with the parameter's path and both shapes; None when they fit.  `subset`: `wanted`
    may leave out parameters the checkpoint has (the frozen ones' part of `params`)."""
    if isinstance(wanted, dict):
        if not isinstance(saved, dict):
            return f"{path or '/'} is a single array in the checkpoint but a module in the model"
        for k in wanted:
            if k not in saved:
                return f"parameter {path}/{k} is in the model but not in the checkpoint"
        for k in () if subset else saved:
            if k not in wanted:
                return f"parameter {path}/{k} is in the checkpoint but not in the model"
        for k in wanted:
            m = tree_mismatch(saved[k], wanted[k], f"{path}/{k}", subset)
            if m:
                return m
        return None
    shape = getattr(saved, "shape", None)
    if shape is not None and tuple(shape) != tuple(wanted.shape):
        return f"parameter {path} has shape {tuple(shape)} in the checkpoint but {tuple(wanted.shape)} in the model"
    return None


def _restore_subtrees(state_dir: epath.Path, target: dict[str, Any], what: str,
                      subset: Sequence[str] = ()) -> dict[str, Any]:
    """Subtrees of a saved train state (`{'params': abstract, 'ema_params': ...}`), sharded as the
    abstract arrays say: an Orbax partial restore, so nothing else (optimizer state) is read.  The
    keys in `subset` may name part of their subtree (e.g. only the frozen `params`).
    Raises `CheckpointRestoreError` naming the directory and the first parameter that differs."""
    if not state_dir.exists():
        raise CheckpointRestoreError(f"{what}: no saved state at {state_dir} (an incomplete or foreign checkpoint?).")
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(state_dir)
    meta = getattr(meta, "item_metadata", meta)
    meta = getattr(meta, "tree", meta)
    for key, abstract in target.items():
        if not isinstance(meta, dict) or not isinstance(meta.get(key), dict):
            raise CheckpointRestoreError(f"{state_dir}: holds no {key!r}.")
        mismatch = tree_mismatch(meta[key], abstract, subset=key in subset)
        if mismatch:
            raise CheckpointRestoreError(f"{state_dir}: its {key!r} do not fit the model (another config?): {mismatch}")
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            out = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True))
    except Exception as e:  # noqa: BLE001 -- Orbax raises many types for a tree mismatch.
        raise CheckpointRestoreError(
            f"{state_dir}: its {sorted(target)} do not match the model's parameters "
            f"(another config?): {type(e).__name__}: {str(e)[:800]}") from e
    return out


# -- the checkpointer -----------------------------------------------------------
@gin.configurable
@dataclasses.dataclass
class CheckpointConfig:
    """Args:
      period: save every `period` steps (the `CHECKPOINT_PERIOD` macro); 0 = only at the end.
      keep: keep the newest `keep` checkpoints (None = all).
      async_save: write in a background thread while training goes on.
      init_from: a checkpoint step directory whose params (and EMA) initialise
        a *new* run; ignored when `model_dir` already has a checkpoint.
    """

    period: int = 1000
    keep: int | None = 3
    async_save: bool = True
    init_from: str | None = None


class Checkpointer:
    """A run's checkpoints (`MODEL_DIR/checkpoints`).  `read_only=True` (loading a run for
    inference) creates nothing and saves nothing."""

    def __init__(self, model_dir: str, config: CheckpointConfig | None = None, *, read_only: bool = False):
        self.config = config = config or CheckpointConfig()
        self.directory = epath.Path(model_dir) / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep,
            # We decide when to save (period, preemption, end): Orbax must not skip.
            save_interval_steps=1,
            enable_async_checkpointing=config.async_save and not read_only,
            create=not read_only,
            read_only=read_only,
        )
        self._set_aside_incomplete(read_only)
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": DataIteratorHandler()},
            options=options,
        )

    def _set_aside_incomplete(self, read_only: bool) -> None:
        """Interrupted saves: Orbax ignores them; locally they are `<step>.orbax-checkpoint-tmp-*`
        folders (left for a look), in a bucket (no renames there) `<step>/` without Orbax's
        `commit_success.txt`, removed here before a run saves that step again into them."""
        if not self.directory.exists():
            return
        remote = paths.is_remote(self.directory)
        for p in sorted(self.directory.iterdir()):
            if _TMP_MARKER in p.name:
                log.warning("Ignoring incomplete checkpoint %s (a save was interrupted).", p)
            elif remote and p.name.isdigit() and not (p / _COMMIT_FILE).exists():
                log.warning("Incomplete checkpoint %s (a save was interrupted)%s.", p,
                            "" if read_only else "; removing it")
                if not read_only and jax.process_index() == 0:
                    p.rmtree()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def step_dir(self, step: int) -> epath.Path:
        """Where step `step` is (or would be) saved: `checkpoints/<step>`."""
        return self.directory / str(step)

    def restore_subtrees(self, step: int, target: dict[str, Any], subset: Sequence[str] = ()) -> dict[str, Any]:
        """Subtrees (`{'params': abstract, 'ema_params': ...}`) of step `step`, sharded as the
        abstract arrays say; no optimizer state is read.  Keys in `subset` may name part of their
        subtree.  Raises `CheckpointRestoreError` naming the step and the parameter at fault."""
        return _restore_subtrees(self.step_dir(step) / "state", target, f"{self.directory}/{step}", subset)

    def should_save(self, step: int) -> bool:
        return self.config.period > 0 and step % self.config.period == 0

    def save(self, step: int, state: Any, data_iterator: DataIterator) -> None:
        if step in self.manager.all_steps():
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=DataIteratorSave(data_iterator),
            ),
            force=True,
        )

    def restore_latest(self, abstract_state: Any, data_iterator: DataIterator) -> tuple[int, Any] | None:
        """Restores the newest checkpoint that restores cleanly; None if there are none.

        Raises `CheckpointRestoreError` when checkpoints exist but none restores
        (e.g. the model or optimizer config changed): starting over would
        silently discard that run."""
        failures = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=DataIteratorRestore(data_iterator),
                    ),
                )
            except Exception as e:  # noqa: BLE001 -- any failure means "not usable".
                log.warning("Checkpoint %s/%d could not be restored (%s: %s); trying an older one.",
                            self.directory, step, type(e).__name__, e)
                failures.append(f"step {step}: {type(e).__name__}: {str(e)[:500]}")
                continue
            return step, restored["state"]
        if failures:
            raise CheckpointRestoreError(
                f"{self.directory} has checkpoints but none matches this run's train state "
                f"(did the model or optimizer config change? use a new --model_dir, or "
                f"CheckpointConfig.init_from to take only the params):\n" + "\n".join(failures))
        return None

    def restore_params_from(self, path: str, abstract_state: Any) -> dict[str, Any]:
        """`params` (and `ema_params` when the state has them) of the checkpoint at `path`
        (a `<step>` directory of another run), sharded as `abstract_state` says.

        Only these are read (an Orbax partial restore), so the other run may have
        used a different optimizer or none."""
        target = {"params": abstract_state.params}
        if abstract_state.ema_params is not None:
            target["ema_params"] = abstract_state.ema_params
        # This run's EMA may leave out parameters it freezes that the other run's EMA kept.
        return _restore_subtrees(epath.Path(path) / "state", target, f"CheckpointConfig.init_from={path!r}",
                                 subset=("ema_params",))

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
