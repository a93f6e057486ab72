"""`python -m trainer.summary --gin_file=CONFIG [--mesh=PRESET] [--num_devices=N]`.

Prints the model's parameter count per top-level submodule and in total, and
each parameter's shape, logical axes and mesh `PartitionSpec` under a mesh
preset, from `jax.eval_shape` alone: nothing is allocated, so paper-size
models can be inspected on a laptop.  The last line of stdout is one JSON
object (`total_params`, `per_module`, `mesh`, `not_divisible`, ...).

    python -m trainer.summary --gin_file=toy/tiny_cpu.gin --mesh=fsdp_tensor --num_devices=256

Flags: --gin_file / --gin.NAME=VALUE as for training; --mesh=NAME parses
configs/mesh/NAME.gin after the model's files; --num_devices=N resolves a -1
in the mesh shape (default: this machine's device count).
"""
from __future__ import annotations

import json
import math
import sys

import flax.linen as nn
import gin
import jax

from trainer import flags as flags_lib
from trainer.partitioning import FSDP_TENSOR_RULES, MESH_AXES, _resolve_mesh_shape


def _evaluate(value):
    if isinstance(value, gin.config.ConfigurableReference):
        return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
    return value


def _bound_or_default(name: str, default):
    """A gin binding's value, or the Partitioner's own default when no config binds it."""
    try:
        return _evaluate(gin.query_parameter(name))
    except ValueError:
        return default


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def summarize(model, rules, mesh_shape: tuple[int, ...], batch_size: int) -> dict:
    boxed = jax.eval_shape(lambda r: model.init_params(r, model.dummy_batch(batch_size)),
                           jax.random.PRNGKey(0))
    logical = nn.get_partition_spec(boxed)
    shapes = nn.meta.unbox(boxed)
    mesh_sizes = dict(zip(MESH_AXES, mesh_shape))
    rows, per_module, not_divisible = [], {}, []
    flat_logical = dict(jax.tree_util.tree_leaves_with_path(
        logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        name = _path_str(path)
        axes = tuple(flat_logical.get(path, ()) or ())
        spec = nn.logical_to_mesh_axes(axes, rules) if axes else jax.sharding.PartitionSpec()
        for dim, mesh_axes in zip(leaf.shape, spec):
            if mesh_axes is None:
                continue
            n = math.prod(mesh_sizes[a] for a in (mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)))
            if dim % n:
                not_divisible.append(f"{name}: dim {dim} over {mesh_axes} ({n})")
        rows.append((name, tuple(leaf.shape), axes, spec, leaf.size))
        top = name.split("/")[0]
        per_module[top] = per_module.get(top, 0) + int(leaf.size)
    return {"rows": rows, "per_module": per_module, "total_params": int(sum(per_module.values())),
            "not_divisible": not_divisible}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    mesh, num_devices, rest = None, None, []
    for a in argv:
        if a.startswith("--mesh="):
            mesh = a.split("=", 1)[1]
        elif a.startswith("--num_devices="):
            num_devices = int(a.split("=", 1)[1])
        else:
            rest.append(a)
    from trainer import main as main_lib

    main_lib.setup_logging()
    main_lib.import_configurables()
    try:
        flags = flags_lib.parse_argv(rest)
        if flags.help:
            print(__doc__)
            sys.exit(0)
        if mesh:
            flags.gin_files.append(f"mesh/{mesh}.gin")
        flags_lib.apply(flags)
        model = _evaluate(gin.query_parameter("train.model"))
        batch_size = _evaluate(gin.query_parameter("train.batch_size"))
        rules = _bound_or_default("Partitioner.logical_axis_rules", FSDP_TENSOR_RULES)
        shape = _bound_or_default("Partitioner.mesh_shape", (1, -1, 1))
        mesh_shape = _resolve_mesh_shape(shape, num_devices or jax.device_count())
    except (flags_lib.FlagError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    rules = tuple((n, tuple(a) if isinstance(a, list) else a) for n, a in rules)
    out = summarize(model, rules, mesh_shape, batch_size)
    width = max((len(r[0]) for r in out["rows"]), default=10)
    print(f"{'parameter':<{width}}  {'shape':<22} {'logical axes':<34} mesh spec")
    for name, shp, axes, spec, _ in out["rows"]:
        print(f"{name:<{width}}  {str(shp):<22} {str(axes):<34} {spec}")
    print("\nparameters per top-level module:")
    for k, v in out["per_module"].items():
        print(f"  {k:<{width}} {v:>15,}")
    print(f"  {'total':<{width}} {out['total_params']:>15,}")
    print(f"mesh {dict(zip(MESH_AXES, mesh_shape))}")
    for msg in out["not_divisible"]:
        print(f"warning: not divisible, will be padded by XLA: {msg}")
    result = {"total_params": out["total_params"], "per_module": out["per_module"],
              "mesh": dict(zip(MESH_AXES, mesh_shape)), "not_divisible": out["not_divisible"],
              "num_arrays": len(out["rows"])}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
