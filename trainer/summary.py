"""`python -m trainer.summary --gin_file=CONFIG [--mesh=PRESET] [--num_devices=N]`.

Prints the model's parameter count per top-level submodule and in total,
each parameter's shape, logical axes and mesh `PartitionSpec` under a mesh
preset, and the train state's bytes (parameters, optimizer state, EMA; frozen
parameters, `train.frozen`, have neither moments nor EMA), from `jax.eval_shape`
alone: nothing is allocated, so paper-size models can be inspected on a laptop.
The last line of stdout is one JSON object (`total_params`, `per_module`,
`state_bytes`, `frozen_params`, `mesh`, `not_divisible`, ...).

    python -m trainer.summary --gin_file=toy/tiny_cpu.gin --mesh=fsdp_tensor --num_devices=256

Flags: --gin_file / --gin.NAME=VALUE as for training; --mesh=NAME parses
configs/mesh/NAME.gin after the model's files; --num_devices=N resolves a -1
in the mesh shape (default: this machine's device count).
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import jax

from common import cli
from trainer import aot
from trainer import flags as flags_lib
from trainer.partitioning import FSDP_TENSOR_RULES, MESH_AXES, logical_to_mesh_axes, resolve_mesh_shape
from trainer.train_state import abstract_state, param_count, param_path


def _bytes(tree) -> int:
    return sum(aot.shard_bytes(x) for x in jax.tree.leaves(tree))   # unsharded here: whole arrays


def summarize(model, rules, mesh_shape: tuple[int, ...], batch_size: int, optimizer=None, ema: bool = False,
              frozen: Sequence[str] = ()) -> dict:
    state = abstract_state(model, None, batch_size=batch_size, optimizer=optimizer, ema=ema, frozen=frozen)
    mesh_sizes = dict(zip(MESH_AXES, mesh_shape))
    rows, per_module, not_divisible = [], {}, []
    flat_logical = dict(jax.tree_util.tree_leaves_with_path(
        state.logical.params, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.abstract.params):
        name = param_path(path)
        axes = tuple(flat_logical.get(path, ()) or ())
        spec = logical_to_mesh_axes(axes, rules)
        for dim, mesh_axes in zip(leaf.shape, spec):
            if mesh_axes is None:
                continue
            n = math.prod(mesh_sizes[a] for a in (mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)))
            if dim % n:
                not_divisible.append(f"{name}: dim {dim} over {mesh_axes} ({n})")
        rows.append((name, tuple(leaf.shape), axes, spec, leaf.size))
        top = name.split("/")[0]
        per_module[top] = per_module.get(top, 0) + int(leaf.size)
    a = state.abstract
    state_bytes = {"params": _bytes(a.params), "optimizer": _bytes(a.opt_state), "ema": _bytes(a.ema_params)}
    state_bytes["total"] = sum(state_bytes.values())
    return {"rows": rows, "per_module": per_module, "total_params": int(sum(per_module.values())),
            "not_divisible": not_divisible, "state_bytes": state_bytes,
            "frozen_params": param_count(state.frozen.split(a.params)[1])}


def main(argv: list[str] | None = None) -> dict:
    cli.setup_logging()
    with cli.exit_on(flags_lib.FlagError, ValueError):
        flags = flags_lib.parse_argv(list(sys.argv[1:] if argv is None else argv), own=("mesh", "num_devices"))
        if flags.help:
            print(__doc__)
            sys.exit(0)
        if "mesh" in flags.own:
            flags.gin_files.append(f"mesh/{flags.own['mesh']}.gin")
        num_devices = int(flags.own.get("num_devices", 0))
        flags_lib.apply(flags)
        model = flags_lib.bound("train.model")
        batch_size = flags_lib.bound("train.batch_size")
        rules = flags_lib.bound("Partitioner.logical_axis_rules", FSDP_TENSOR_RULES)
        shape = flags_lib.bound("Partitioner.mesh_shape", (1, -1, 1))
        mesh_shape = resolve_mesh_shape(shape, num_devices or jax.device_count())
        optimizer = flags_lib.bound("train.optimizer", None)
        ema = flags_lib.bound("train.ema_decay", None) is not None
        frozen = flags_lib.bound("train.frozen", ())
        out = summarize(model, rules, mesh_shape, batch_size, optimizer, ema, frozen)
    width = max((len(r[0]) for r in out["rows"]), default=10)
    print(f"{'parameter':<{width}}  {'shape':<22} {'logical axes':<34} mesh spec")
    for name, shp, axes, spec, _ in out["rows"]:
        print(f"{name:<{width}}  {str(shp):<22} {str(axes):<34} {spec}")
    print("\nparameters per top-level module:")
    for k, v in out["per_module"].items():
        print(f"  {k:<{width}} {v:>15,}")
    print(f"  {'total':<{width}} {out['total_params']:>15,}")
    sb, gib = out["state_bytes"], 2.0**30
    print(f"train state: params {sb['params'] / gib:.2f} GiB + optimizer {sb['optimizer'] / gib:.2f} GiB + "
          f"EMA {sb['ema'] / gib:.2f} GiB = {sb['total'] / gib:.2f} GiB"
          + (f" ({out['frozen_params']:,} frozen parameters: {', '.join(frozen)})" if out["frozen_params"] else ""))
    print(f"mesh {dict(zip(MESH_AXES, mesh_shape))}")
    for msg in out["not_divisible"]:
        print(f"warning: not divisible, will be padded by XLA: {msg}")
    result = {"total_params": out["total_params"], "per_module": out["per_module"],
              "state_bytes": out["state_bytes"], "frozen_params": out["frozen_params"],
              "mesh": dict(zip(MESH_AXES, mesh_shape)), "not_divisible": out["not_divisible"],
              "num_arrays": len(out["rows"])}
    return cli.print_json(result)


if __name__ == "__main__":
    main()
