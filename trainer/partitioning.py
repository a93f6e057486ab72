"""The Partitioner: device mesh, logical axis rules and the host data layout.

This is the only module that knows the mesh axis names.  Models annotate
parameters and activations with *logical* names (`embed`, `mlp`, `heads`,
`activation_batch`, ...); the rules bound in `configs/mesh/*.gin` map those to
the mesh axes `('data', 'fsdp', 'tensor')`.

Typical use (the train loop does this):

    partitioner = Partitioner(mesh_shape=(1, -1, 1), logical_axis_rules=...)
    with partitioner.activate():          # mesh + rules visible while tracing
        shardings = partitioner.logical_to_sharding(logical_specs)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from common.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

LogicalRules = Sequence[tuple[str, Any]]

# Pure data parallelism: everything replicated, the batch split over all axes.
DATA_PARALLEL_RULES: LogicalRules = (
    ("activation_batch", ("data", "fsdp")),
)

# FSDP + tensor parallelism (MaxText-style defaults; `configs/mesh/fsdp_tensor.gin` is the same).
FSDP_TENSOR_RULES: LogicalRules = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_conv_out", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_out", "tensor"),
    ("vocab", "tensor"),
)


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """Which slice of the global batch this host feeds.

    `shard_id`/`num_shards` are what `seqio.ShardInfo(index, num_shards)`
    expects; hosts holding replicas of the same batch slice (e.g. tensor
    parallelism across hosts) get the same `shard_id` and read the same data.
    """

    global_batch_size: int
    per_host_batch_size: int
    shard_id: int
    num_shards: int

    def seqio_shard_info(self):
        import seqio  # Lazy: seqio imports TensorFlow.

        return seqio.ShardInfo(index=self.shard_id, num_shards=self.num_shards)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    shape = list(mesh_shape)
    if len(shape) != len(MESH_AXES):
        raise ConfigError(
            f"Partitioner.mesh_shape={tuple(mesh_shape)} must have one size per mesh "
            f"axis {MESH_AXES}."
        )
    unknown = [i for i, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise ConfigError(f"Partitioner.mesh_shape={tuple(mesh_shape)}: at most one size may be -1.")
    known = math.prod(s for s in shape if s != -1)
    if unknown:
        if num_devices % known:
            raise ConfigError(
                f"Partitioner.mesh_shape={tuple(mesh_shape)} does not divide the "
                f"{num_devices} available devices."
            )
        shape[unknown[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ConfigError(
            f"Partitioner.mesh_shape={tuple(mesh_shape)} needs {math.prod(shape)} devices, "
            f"but {num_devices} are available."
        )
    return tuple(shape)


@gin.configurable
class Partitioner:
    """Owns the mesh, the logical->mesh rules and the data layout.

    Args:
      mesh_shape: sizes of the `('data', 'fsdp', 'tensor')` axes; one may be -1
        (the rest of the devices).
      logical_axis_rules: `(logical_name, mesh_axis | tuple | None)` pairs; the
        first rule for a name wins; names with no rule are replicated.
      devices: the devices to use (default: all of `jax.devices()`).
    """

    def __init__(
        self,
        mesh_shape: Sequence[int] = (1, -1, 1),
        logical_axis_rules: LogicalRules = FSDP_TENSOR_RULES,
        devices: Sequence[jax.Device] | None = None,
    ):
        devices = list(jax.devices() if devices is None else devices)
        self.mesh_shape = resolve_mesh_shape(mesh_shape, len(devices))
        self.logical_axis_rules = tuple((name, _tupleize(ax)) for name, ax in logical_axis_rules)
        for name, axes in self.logical_axis_rules:
            for ax in (axes if isinstance(axes, tuple) else (axes,)):
                if ax is not None and ax not in MESH_AXES:
                    raise ConfigError(
                        f"Partitioner.logical_axis_rules: rule for {name!r} names mesh axis "
                        f"{ax!r}; the mesh axes are {MESH_AXES}."
                    )
        self.mesh = jax.make_mesh(
            self.mesh_shape,
            MESH_AXES,
            axis_types=(AxisType.Auto,) * len(MESH_AXES),
            devices=devices,
        )

    # -- logical -> mesh ----------------------------------------------------
    def logical_to_mesh_axes(self, logical: Sequence[str | None]) -> PartitionSpec:
        return nn.logical_to_mesh_axes(logical, self.logical_axis_rules)

    def logical_to_sharding(self, logical_specs: Any) -> Any:
        """Maps a tree of logical `PartitionSpec`s to a tree of `NamedSharding`s."""
        return nn.logical_to_mesh_sharding(logical_specs, self.mesh, self.logical_axis_rules)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_mesh_axes(self) -> tuple[str, ...]:
        spec = self.logical_to_mesh_axes(("activation_batch",))
        axes = spec[0] if len(spec) else None
        if axes is None:
            return ()
        return axes if isinstance(axes, tuple) else (axes,)

    def batch_sharding(self, ndim: int) -> NamedSharding:
        """Sharding of a `[batch, ...]` input: leading axis split, rest replicated."""
        axes = self.batch_mesh_axes or None
        return NamedSharding(self.mesh, PartitionSpec(axes, *([None] * (ndim - 1))))

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Mesh and logical rules in scope (for tracing, init and compilation)."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.logical_axis_rules):
            yield

    # -- data layout -------------------------------------------------------
    @property
    def num_batch_shards(self) -> int:
        return math.prod(self.mesh.shape[a] for a in self.batch_mesh_axes)

    def _batch_shard_of_devices(self) -> dict[int, set[int]]:
        """process index -> the batch-shard indices its devices hold."""
        axes = self.batch_mesh_axes
        names = list(self.mesh.axis_names)
        out: dict[int, set[int]] = {}
        for coords in np.ndindex(*self.mesh.devices.shape):
            device = self.mesh.devices[coords]
            shard = 0
            for ax in axes:
                i = names.index(ax)
                shard = shard * self.mesh.devices.shape[i] + coords[i]
            out.setdefault(device.process_index, set()).add(shard)
        return out

    def data_layout(self, global_batch_size: int) -> DataLayout:
        """This host's slice of the global batch (usable as seqio `ShardInfo`)."""
        if global_batch_size % self.num_batch_shards:
            raise ConfigError(
                f"BATCH_SIZE={global_batch_size} is not divisible by the "
                f"{self.num_batch_shards} batch shards of mesh {dict(self.mesh.shape)}."
            )
        per_process = self._batch_shard_of_devices()
        groups = sorted({tuple(sorted(s)) for s in per_process.values()})
        for g in groups:
            if list(g) != list(range(g[0], g[0] + len(g))):
                raise ConfigError(
                    f"Mesh {dict(self.mesh.shape)} gives a host non-contiguous batch shards {g}; "
                    "put the 'data'/'fsdp' axes outermost over hosts."
                )
        mine = tuple(sorted(per_process[jax.process_index()]))
        per_shard = global_batch_size // self.num_batch_shards
        return DataLayout(
            global_batch_size=global_batch_size,
            per_host_batch_size=per_shard * len(mine),
            shard_id=groups.index(mine),
            num_shards=len(groups),
        )

    def make_global_batch(self, local_batch: Mapping[str, np.ndarray], global_batch_size: int) -> dict[str, jax.Array]:
        """Host-local numpy batch -> global `jax.Array`s sharded over the batch axes."""
        out = {}
        for k, v in local_batch.items():
            v = np.asarray(v)
            out[k] = jax.make_array_from_process_local_data(
                self.batch_sharding(v.ndim), v, (global_batch_size, *v.shape[1:])
            )
        return out

    def describe(self) -> str:
        return f"mesh {dict(self.mesh.shape)} over {self.mesh.devices.size} devices"


def logical_to_mesh_axes(logical: Sequence[str | None], rules: LogicalRules) -> PartitionSpec:
    """The mesh `PartitionSpec` of an array with these logical axes under `rules` (no mesh needed:
    `trainer.summary` uses it for meshes larger than this machine)."""
    rules = tuple((name, _tupleize(ax)) for name, ax in rules)
    return nn.logical_to_mesh_axes(tuple(logical), rules) if logical else PartitionSpec()


def _tupleize(axes: Any) -> Any:
    if isinstance(axes, list):
        return tuple(axes)
    return axes
