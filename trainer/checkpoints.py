"""Orbax checkpointing behind one small interface.

Layout: `MODEL_DIR/checkpoints/<step>/{state,data,config,integrity.json}`.  `state` is the sharded
train state (Orbax `StandardCheckpointHandler`, restored straight into the sharded abstract state);
`data` holds one file per process with that host's input-pipeline position, so a resumed run sees
exactly the batches it would have seen; `config/config.gin` is the gin config of the launch that
wrote the step (what inference rebuilds the model from).

**Interrupted saves.**  Orbax writes each step to `<step>.orbax-checkpoint-tmp*` and renames it when
complete (in a bucket, where nothing renames, `<step>/` is complete once it holds Orbax's
`commit_success.txt`), so a save killed midway is never listed as a step.  Local leftovers are set
aside (below) when a run opens the directory; in a bucket they are removed.

**Verified steps** (`CheckpointConfig.verify`: local run directories by default).  Just before
Orbax makes a step visible (its post-finalization callback, on process 0 once every host has
written), `integrity.json` records the size and SHA-256 of every file of the step's items.
Restoring (training and inference) checks them first: a step with a missing, shortened or changed file is set aside
with a warning naming the file, and the newest intact step is used; the run then saves that step
again.  A step whose files are intact but which does not restore into this run's state (another
model or optimizer) is an error, not a fall-back: starting from an older step would hide it.
Steps written before verification existed (no `integrity.json`) restore unverified, and one that
fails to restore is set aside when an older one restores.

**Set aside** means moved (never deleted) to `MODEL_DIR/checkpoints_aside/<name>-<UTC time>/`, with
a `REASON.txt` saying why.

An Orbax API change should only touch this file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import gin
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import future as ocp_future

from common import paths
from common.errors import require
from trainer.input_pipeline import DataIterator

log = logging.getLogger(__name__)

_TMP_MARKER = ".orbax-checkpoint-tmp"
_COMMIT_FILE = "commit_success.txt"    # what marks a finished save where there is no atomic rename
INTEGRITY_FILE = "integrity.json"
ASIDE_DIR = "checkpoints_aside"
_CHUNK = 8 << 20


# -- per-process input-pipeline state -----------------------------------------
class DataIteratorHandler(ocp.handlers.AsyncCheckpointHandler):
    """Saves `DataIterator.get_state()` of every process as `process_<i>.state`; restores from all.

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
        """Gives the iterator every saving process's state (`DataIterator.restore`): a pipeline whose
        order does not depend on the number of hosts resumes on another number."""
        states = {int(p.name[len("process_"):-len(".state")]): p.read_bytes()
                  for p in directory.glob("process_*.state")}
        try:
            args.iterator.restore(states, jax.process_index())
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{directory}: {e}") from e
        return args.iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: DataIterator


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: DataIterator


class RunConfigHandler(ocp.handlers.CheckpointHandler):
    """The gin config of the launch that wrote the step, as `config.gin` (process 0 writes it)."""

    def save(self, directory: epath.Path, args: "RunConfigSave"):
        if jax.process_index() == 0:
            (directory / "config.gin").write_text(args.text)

    def restore(self, directory: epath.Path, args: "RunConfigRestore" = None):
        return (directory / "config.gin").read_text()   # (`Checkpointer.config_path` reads it directly)


@ocp.args.register_with_handler(RunConfigHandler, for_save=True)
@dataclasses.dataclass
class RunConfigSave(ocp.args.CheckpointArgs):
    text: str


@ocp.args.register_with_handler(RunConfigHandler, for_restore=True)   # Orbax wants both directions.
@dataclasses.dataclass
class RunConfigRestore(ocp.args.CheckpointArgs):
    pass


class CheckpointRestoreError(RuntimeError):
    pass


class CheckpointSaveError(RuntimeError):
    """A save that failed (a full disk, a lost bucket); the message names the folder."""


# -- integrity ------------------------------------------------------------------
def _payload(step_dir: epath.Path) -> list[epath.Path]:
    """The files of a step's items (its subdirectories), without Orbax's own step-level
    bookkeeping files, which it may rewrite after the step is sealed."""
    def walk(d: epath.Path):
        for p in d.iterdir():
            if p.is_dir():
                yield from walk(p)
            else:
                yield p

    return sorted(f for d in step_dir.iterdir() if d.is_dir() for f in walk(d))


def _digest(path: epath.Path) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def write_integrity(step_dir: epath.Path) -> None:
    """Records the size and SHA-256 of every payload file of `step_dir` in its `integrity.json`."""
    files = {str(f.relative_to(step_dir)): list(_digest(f)) for f in _payload(step_dir)}
    (step_dir / INTEGRITY_FILE).write_text(json.dumps({"algorithm": "sha256", "files": files}))


def check_integrity(step_dir: epath.Path) -> str | None:
    """What is wrong with `step_dir` against its `integrity.json` (the first file missing, of
    another size or with another hash), or None when it is intact.  A step without the file
    (written before verification) passes."""
    record = step_dir / INTEGRITY_FILE
    if not record.exists():
        return None
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{record} is unreadable ({type(e).__name__}: {e})"
    for rel, (size, sha) in files.items():
        path = step_dir / rel
        if not path.exists():
            return f"{path} is missing"
        n, h = _digest(path)
        if n != size:
            return f"{path} has {n} bytes, {size} when it was saved"
        if h != sha:
            return f"{path} does not match its SHA-256 from the save (its bytes changed on disk)"
    return None


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
      verify: write each step's `integrity.json` and check it before restoring the step.  None:
        for local run directories only; in a bucket both would read every file of the step back
        (GCS itself checks each object's CRC32C on transfer).
    """

    period: int = 1000
    keep: int | None = 3
    async_save: bool = True
    init_from: str | None = None
    verify: bool | None = None

    def __post_init__(self):
        require(self.period >= 0, "CheckpointConfig.period (CHECKPOINT_PERIOD)", self.period, "at least 0")
        require(self.keep is None or self.keep >= 1, "CheckpointConfig.keep", self.keep, "at least 1 or None")


class Checkpointer:
    """A run's checkpoints (`MODEL_DIR/checkpoints`).  `read_only=True` (loading a run for
    inference) creates, moves and saves nothing.  `run_config`: the gin config saved with each step."""

    def __init__(self, model_dir: str, config: CheckpointConfig | None = None, *, read_only: bool = False,
                 run_config: str | None = None):
        self.config = config = config or CheckpointConfig()
        self.run_dir = epath.Path(model_dir)
        self.directory = self.run_dir / "checkpoints"
        self.read_only, self.run_config = read_only, run_config
        self.verify = config.verify if config.verify is not None else not paths.is_remote(self.directory)
        self._saving: int | None = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep,
            # We decide when to save (period, preemption, end): Orbax must not skip.
            save_interval_steps=1,
            # Always Orbax's async checkpointer (its post-finalization callback seals each step);
            # `async_save=False` waits for each save to finish.
            enable_async_checkpointing=not read_only,
            async_options=None if read_only else ocp.AsyncOptions(post_finalization_callback=self._seal),
            create=not read_only,
            read_only=read_only,
        )
        self._set_aside_incomplete()
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": DataIteratorHandler(),
                           "config": RunConfigHandler()},
            options=options,
        )

    # -- interrupted and damaged steps ------------------------------------------
    def set_aside(self, path: epath.Path, reason: str) -> epath.Path | None:
        """Moves `path` (a step's folder) to `checkpoints_aside/` with a `REASON.txt`; process 0 of
        a writing run only.  Returns where it went."""
        if self.read_only or jax.process_index() != 0 or not path.exists():
            return None
        dest = self.run_dir / ASIDE_DIR / f"{path.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        paths.makedirs(dest.parent)
        path.rename(dest)
        (dest / "REASON.txt").write_text(reason + "\n")
        return dest

    def _set_aside_incomplete(self) -> None:
        """Interrupted saves: locally `<step>.orbax-checkpoint-tmp*` folders, set aside; in a bucket
        `<step>/` without Orbax's `commit_success.txt`, removed before a run saves that step again."""
        if not self.directory.exists():
            return
        remote = paths.is_remote(self.directory)
        for p in sorted(self.directory.iterdir()):
            if _TMP_MARKER in p.name:
                dest = self.set_aside(p, "an interrupted save (Orbax's temporary folder, never completed)")
                log.warning("Incomplete checkpoint %s (a save was interrupted)%s.", p,
                            f"; set aside to {dest}" if dest else "; ignored")
            elif remote and p.name.isdigit() and not (p / _COMMIT_FILE).exists():
                log.warning("Incomplete checkpoint %s (a save was interrupted)%s.", p,
                            "" if self.read_only else "; removing it")
                if not self.read_only and jax.process_index() == 0:
                    p.rmtree()

    def _seal(self) -> None:
        """Orbax's post-finalization callback (process 0, every host's files written, before the
        step becomes visible): the step's `integrity.json`, where steps are verified (hashing a
        step in a bucket would read all of it back)."""
        if not self.verify:
            return
        step = self._saving
        final = self.step_dir(step)
        tmp = [p for p in self.directory.iterdir() if p.name.startswith(f"{step}{_TMP_MARKER}")]
        write_integrity(tmp[0] if len(tmp) == 1 else final)

    def sealed(self, step: int) -> bool:
        """Whether step `step` is verified here and has its integrity record: then a failure to
        restore it is the config's, not the files'."""
        return self.verify and (self.step_dir(step) / INTEGRITY_FILE).exists()

    def check(self, step: int) -> str | None:
        """What fails step `step`'s integrity check, or None (intact, unverified, or `verify` off)."""
        return check_integrity(self.step_dir(step)) if self.verify else None

    # -- steps --------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def step_dir(self, step: int) -> epath.Path:
        """Where step `step` is (or would be) saved: `checkpoints/<step>`."""
        return self.directory / str(step)

    def config_path(self, step: int) -> epath.Path | None:
        """The gin config saved with step `step`, None for steps saved before configs were."""
        path = self.step_dir(step) / "config" / "config.gin"
        return path if path.exists() else None

    def restore_subtrees(self, step: int, target: dict[str, Any], subset: Sequence[str] = ()) -> dict[str, Any]:
        """Subtrees (`{'params': abstract, 'ema_params': ...}`) of step `step`, sharded as the
        abstract arrays say; no optimizer state is read.  Keys in `subset` may name part of their
        subtree.  Raises `CheckpointRestoreError` naming the step and the parameter at fault."""
        return _restore_subtrees(self.step_dir(step) / "state", target, f"{self.directory}/{step}", subset)

    def should_save(self, step: int) -> bool:
        return self.config.period > 0 and step % self.config.period == 0

    def save(self, step: int, state: Any, data_iterator: DataIterator) -> None:
        """Saves step `step` (in the background unless `async_save=False`).  A failed save (this
        one, or the previous one still in flight) raises `CheckpointSaveError` naming the folder
        and, for a full disk, the space left; the steps saved before stay intact."""
        if step in self.manager.all_steps():
            return
        self.wait_until_finished()   # One save in flight: `_seal` knows which step is its.
        self._saving = step
        items = {"state": ocp.args.StandardSave(state), "data": DataIteratorSave(data_iterator)}
        if self.run_config is not None:
            items["config"] = RunConfigSave(self.run_config)
        with self._save_errors():
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        if not self.config.async_save:
            self.wait_until_finished()

    @contextlib.contextmanager
    def _save_errors(self):
        try:
            yield
        except CheckpointSaveError:
            raise
        except Exception as e:  # noqa: BLE001 -- Orbax and TensorStore raise many types.
            step, latest = self._saving, self.latest_step()
            text = " ".join(str(e).split())
            if paths.disk_full(e):
                raise CheckpointSaveError(
                    f"{self.step_dir(step)}: no space left on device while saving step {step}"
                    f"{paths.free_space(self.directory)}. The newest complete checkpoint is step {latest}; "
                    f"free some space and launch again to resume from it.") from None
            raise CheckpointSaveError(f"{self.step_dir(step)}: saving step {step} failed ({type(e).__name__}: "
                                      f"{text[:400]}); the newest complete checkpoint is step {latest}.") from e

    def restore_latest(self, abstract_state: Any, data_iterator: DataIterator) -> tuple[int, Any] | None:
        """Restores the newest intact checkpoint; None if there are none.

        A step that fails its integrity check, or an unverified one that fails to restore, is set
        aside once an older one restores.  Raises `CheckpointRestoreError` when an intact step does
        not fit this run's train state (e.g. the model or optimizer config changed: starting over
        or going back would silently discard that run), or when no step restores."""
        failures: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            damage = self.check(step)
            if damage:
                log.warning("Checkpoint %s fails its integrity check: %s; trying an older one.",
                            self.step_dir(step), damage)
                failures.append((step, f"integrity check failed: {damage}"))
                continue
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=DataIteratorRestore(data_iterator),
                    ),
                )
            except Exception as e:  # noqa: BLE001 -- any failure means "not usable".
                why = f"{type(e).__name__}: {str(e)[:500]}"
                if self.sealed(step):
                    raise CheckpointRestoreError(
                        f"{self.step_dir(step)} is intact but does not match this run's train state "
                        f"(did the model or optimizer config change? use a new --model_dir, or "
                        f"CheckpointConfig.init_from to take only the params): {why}") from e
                log.warning("Checkpoint %s could not be restored (%s); trying an older one.",
                            self.step_dir(step), why)
                failures.append((step, f"could not be restored: {why}"))
                continue
            self._set_aside_failed(failures)
            return step, restored["state"]
        if failures:
            raise CheckpointRestoreError(
                f"{self.directory} has checkpoints but none matches this run's train state "
                f"(did the model or optimizer config change? use a new --model_dir, or "
                f"CheckpointConfig.init_from to take only the params):\n"
                + "\n".join(f"step {s}: {why}" for s, why in failures))
        return None

    def _set_aside_failed(self, failures: list[tuple[int, str]]) -> None:
        """Sets aside the steps that failed when an older one restored, so the run saves them again."""
        if not failures:
            return
        for step, why in failures:
            dest = self.set_aside(self.step_dir(step), f"step {step} {why}")
            if dest:
                log.warning("Set aside checkpoint %s to %s; this run will save step %d again.",
                            self.step_dir(step), dest, step)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoints: set aside failed steps")
        self.manager.reload()

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
        with self._save_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight, then closes; a failed save raises `CheckpointSaveError`
        after everything is closed (no background thread is left writing)."""
        try:
            self.wait_until_finished()
        finally:
            try:
                self.manager.close()
            except Exception as e:  # noqa: BLE001 -- already reported by the wait above.
                log.debug("closing the checkpoint manager: %s", e)
