"""A training run loaded for inference: its model rebuilt from the config saved with the step it
loads and its parameters (EMA where the run kept them) restored through the run's `Checkpointer`.

    run = restore.load(model_dir, expect=MulanModel)          # newest step, EMA weights
    run.model, run.params, run.partitioner, run.step, run.which, run.checkpoint

Used by `mulan.inference` and `noise2music.cascade`.  The config names the modules that register
its configurables (gin `import` lines), so nothing has to be imported first.  No
optimizer state is read.  Parameters are laid out on a mesh (default: all devices on 'fsdp', the
run's own logical axis rules).  The run may be local or in a bucket (`gs://`, common/paths.py);
with frozen parameters (`train.frozen`) the EMA is merged over them.

Runs written before a module moved or a setting went still load: `upgrade_config` rewrites their
`config.gin` in today's names (`configs.MOVED_MODULES`, `RENAMED_CONFIGURABLES`,
`REMOVED_BINDINGS`), with a warning naming what it changed.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

import gin

import configs
from common import cli, paths
from trainer import flags as flags_lib
from trainer import frozen as frozen_lib
from trainer.checkpoints import Checkpointer, CheckpointRestoreError
from trainer.partitioning import Partitioner
from trainer.train_state import abstract_state

log = logging.getLogger(__name__)

# What a run's config may import without --trust_config: the project's own packages.
TRUSTED_PACKAGES = frozenset((*cli.PACKAGES, "configs"))


class ModelDirError(ValueError):
    """A model dir that cannot be loaded; the message names the file at fault."""


def upgrade_config(text: str) -> tuple[str, list[str]]:
    """A `config.gin` as gin wrote it for an older layout, in today's names (see `configs`); and
    what changed.  A config of today's layout comes back unchanged."""
    notes, lines, out, dropping = [], text.splitlines(), [], False
    for line in lines:
        if dropping and line[:1].isspace():       # the continuation of a dropped binding
            continue
        dropping = False
        m = re.match(r"import ([\w.]+)(\s+as\s+\w+)?\s*$", line)
        if m and m.group(1) in configs.MOVED_MODULES:
            new = configs.MOVED_MODULES[m.group(1)]
            notes.append(f"module {m.group(1)} -> {new or '(gone)'}")
            if new:
                out.append(f"import {new}{m.group(2) or ''}")
            continue
        m = re.match(r"(?:[\w.]+/)*(?:[\w]+\.)*?(\w+)\.(\w+)\s*=", line)
        if m and (m.group(1) in configs.REMOVED_BINDINGS or f"{m.group(1)}.{m.group(2)}" in configs.REMOVED_BINDINGS):
            notes.append(f"binding {m.group(1)}.{m.group(2)} (no longer exists; dropped)")
            dropping = True
            continue
        for old, new in configs.RENAMED_CONFIGURABLES.items():
            renamed = re.sub(rf"(?<![\w.]){re.escape(old)}\b", new, line)
            if renamed != line:
                notes.append(f"{old} -> {new}")
                line = renamed
        out.append(line)
    return "\n".join(out) + "\n", sorted(set(notes))


def check_imports(text: str, path) -> None:
    """ModelDirError, naming the line, if the config imports a module outside the project's own
    packages or includes another file, unless configs are trusted (`--trust_config`): parsing
    the config imports those modules, and importing runs their code (README, "What a gin file
    can do")."""
    if cli.configs_trusted():
        return
    for ln, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*(?:import\s+([\w.]+)|from\s+([\w.]+)\s+import\b)", line)
        module = m and (m.group(1) or m.group(2))
        if module and module.split(".")[0] not in TRUSTED_PACKAGES:
            raise ModelDirError(f"{path}:{ln}: imports {module!r}, which is not part of this project: loading "
                                f"the run would run that module's code. Pass --trust_config if you trust "
                                f"whoever wrote {path}.")
        if re.match(r"\s*include\s", line):
            raise ModelDirError(f"{path}:{ln}: includes another gin file ({line.strip()[:200]}); a run's config "
                                f"is self-contained. Pass --trust_config if you trust whoever wrote {path}.")


def model_from_config(config_path: str, expect: type,
                      bindings: Sequence[str] = ()) -> tuple[Any, Any, bool, frozen_lib.Frozen]:
    """Parses a run's `config.gin` and builds its `train.model`: (model, logical axis rules or
    None, whether the run kept EMA parameters, its frozen parameters).  The run's config stays parsed (callers may query
    it) until the next load clears it, so runs of several models load one after another."""
    text, notes = upgrade_config(paths.resolve(config_path).read_text())
    check_imports(text, config_path)
    if notes:
        log.warning("%s was written by an older layout; read with: %s", config_path, "; ".join(notes))
    gin.clear_config()
    try:
        gin.parse_config(text)
        for b in bindings:
            gin.parse_config(b)
        model = flags_lib.bound("train.model")
    except Exception as e:  # gin raises ValueError/KeyError/ImportError with the binding at fault.
        gin.clear_config()
        raise ModelDirError(f"{config_path}: cannot rebuild the model ({type(e).__name__}: {e}).") from e
    rules = flags_lib.bound("Partitioner.logical_axis_rules", None)
    has_ema = flags_lib.bound("train.ema_decay", None) is not None
    frozen = frozen_lib.Frozen(flags_lib.bound("train.frozen", ()))
    if not isinstance(model, expect):
        raise ModelDirError(f"{config_path}: train.model is {type(model).__name__}, not a {expect.__name__}.")
    return model, rules, has_ema, frozen


@dataclasses.dataclass
class LoadedRun:
    model: Any
    params: Any
    partitioner: Partitioner
    step: int
    model_dir: str
    which: str           # 'EMA params' or 'params'
    checkpoint: str      # the step's directory


def load(model_dir: str, *, expect: type, step: int | None = None, use_ema: bool = True,
         bindings: Sequence[str] = (), mesh_shape: Sequence[int] = (1, -1, 1),
         devices: Sequence[Any] | None = None) -> LoadedRun:
    """The run's newest intact step (or `step`), its model rebuilt from the config saved with that
    step (`checkpoints/<step>/config/config.gin`; the run's `config.gin` for steps saved before
    configs were).  A newest step that fails its integrity check (`trainer.checkpoints`), or an
    unverified one that does not restore, is passed over with a warning for the next older one;
    a named `step` that fails is an error.  The parameters are laid out on a mesh of `devices`
    (default all; an inference process of a multi-host job passes its local ones)."""
    run_dir = paths.resolve(model_dir)        # local or gs:// (common/paths.py)
    model_dir, run_config = str(run_dir), run_dir / "config.gin"
    if not (run_dir / "checkpoints").is_dir():
        if not run_config.exists():
            raise ModelDirError(f"{run_config}: missing (is {model_dir} a training run's --model_dir?).")
        raise ModelDirError(f"{model_dir}/checkpoints: no complete checkpoint to load.")
    ckpt = Checkpointer(model_dir, read_only=True)
    steps = ckpt.all_steps()
    if not steps:
        raise ModelDirError(f"{ckpt.directory}: no complete checkpoint to load.")
    if step is not None and step not in steps:
        raise ModelDirError(f"{ckpt.step_dir(step)}: no checkpoint at step {step} (have: {steps}).")
    failures = []
    try:
        for s in [step] if step is not None else reversed(steps):
            damage = ckpt.check(s)
            if damage:
                failures.append(f"{ckpt.step_dir(s)} fails its integrity check: {damage}")
            else:
                try:
                    return _load_step(ckpt, s, expect, use_ema, bindings, mesh_shape, run_config, devices)
                except CheckpointRestoreError as e:
                    if ckpt.sealed(s):
                        raise                               # Intact: the config is at fault.
                    failures.append(str(e))
            if step is None:
                log.warning("%s; trying an older step.", failures[-1])
    finally:
        ckpt.close()
    raise ModelDirError(f"{model_dir}: no step could be loaded:\n" + "\n".join(failures))


def _load_step(ckpt: Checkpointer, step: int, expect: type, use_ema: bool, bindings: Sequence[str],
               mesh_shape: Sequence[int], run_config: Any, devices: Sequence[Any] | None = None) -> LoadedRun:
    config = ckpt.config_path(step) or run_config
    if not config.exists():
        raise ModelDirError(f"{config}: missing (is {ckpt.run_dir} a training run's --model_dir?).")
    model, rules, has_ema, frozen = model_from_config(config, expect, bindings)
    partitioner = Partitioner(mesh_shape=tuple(mesh_shape), devices=devices,
                              **({"logical_axis_rules": rules} if rules else {}))
    abstract = abstract_state(model, partitioner, batch_size=1, frozen=frozen).abstract.params
    if use_ema and has_ema:
        # The EMA holds the trainable parameters; the frozen ones come from `params`.
        trainable, frozen_part = frozen.split(abstract) if frozen else (abstract, {})
        target = {"ema_params": trainable, **({"params": frozen_part} if frozen_part else {})}
        which = "EMA params"
    else:
        target, which = {"params": abstract}, "params"
    restored = ckpt.restore_subtrees(step, target, subset=("params",) if "ema_params" in target else ())
    params = frozen_lib.merge(*restored.values())
    log.info("loaded %s step %d (%s; config %s)", ckpt.run_dir, step, which, config)
    return LoadedRun(model, params, partitioner, step, str(ckpt.run_dir), which, str(ckpt.step_dir(step)))
