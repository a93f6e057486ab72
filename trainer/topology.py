"""TPU topologies for ahead-of-time compilation on a host without TPUs (libtpu, the `[tpu]` extra).

    devices = topology.devices("v5p:4x4x4")      # 64 compile-only devices of a v5p-128 slice
    chip = topology.chip("v5p:4x4x4")            # HBM per chip, peak bf16 FLOP/s

A name is `<chip>:<chips per axis>` (libtpu's topology names): `v4:4x4x4`, `v5e:16x16`,
`v5p:8x8x8`, `v6e:4x4`.  One device per chip (v4 and v5p as megacore: both TensorCores of a chip
are one device, as on a TPU VM).  A Cloud accelerator type (`v5p-128`, `v5litepod-16`, `v4-32`,
`v6e-8`) converts with `from_accelerator_type`.

The chips' figures are the published per-chip numbers (cloud.google.com/tpu/docs/<chip>):
HBM capacity and bandwidth, and the dense bfloat16 peak.  XLA reserves a little of the HBM for itself (v5e: it
reports 15.75 GiB available of 16), hence `trainer.compile --headroom`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re

GIB = 1024 ** 3


class TopologyError(ValueError):
    """A topology that cannot be described here; the message names it and what to do."""


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str                 # our short name: the part before ':'
    device_kind: str          # what jax reports as `device.device_kind`
    hbm_bytes: int            # per chip
    peak_bf16_flops: float    # per chip, dense
    hbm_bytes_per_second: float   # per chip
    dims: int                 # axes of the topology (2 for the 2-D tori, 3 for v4 / v5p)
    megacore: bool            # both TensorCores as one device
    accelerator_prefix: str   # Cloud accelerator types: <prefix>-<n>
    cores_per_chip: int       # what n in <prefix>-<n> counts per chip


CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip("v4", "TPU v4", 32 * GIB, 275e12, 1228e9, 3, True, "v4", 2),
    Chip("v5e", "TPU v5 lite", 16 * GIB, 197e12, 819e9, 2, False, "v5litepod", 1),
    Chip("v5p", "TPU v5", 95 * GIB, 459e12, 2765e9, 3, True, "v5p", 2),
    Chip("v6e", "TPU v6 lite", 32 * GIB, 918e12, 1640e9, 2, False, "v6e", 1),
)}

# XLA:CPU's float32 matmul ceiling on the 2-core development machines (README, "Tests"): what
# `train()`'s MFU divides by on CPU unless `train.cpu_peak_flops` says otherwise.
CPU_PEAK_FLOPS = 190e9

EXAMPLES = ("v4:2x2x1", "v4:4x4x4", "v5e:2x2", "v5e:16x16", "v5p:2x2x1", "v5p:8x8x8", "v6e:4x4")


def parse(name: str) -> tuple[Chip, tuple[int, ...]]:
    """(chip, chips per axis) of a topology name; `TopologyError` naming it otherwise."""
    m = re.fullmatch(r"(\w+):(\d+(?:x\d+)*)", name or "")
    chip = CHIPS.get(m.group(1)) if m else None
    if chip is None:
        raise TopologyError(f"topology {name!r}: not a known TPU topology; the chips are {sorted(CHIPS)}, "
                            f"named <chip>:<chips per axis>, e.g. {', '.join(EXAMPLES)}")
    shape = tuple(int(v) for v in m.group(2).split("x"))
    if len(shape) != chip.dims or min(shape) < 1:
        raise TopologyError(f"topology {name!r}: a {chip.name} topology has {chip.dims} axes "
                            f"(e.g. {next(e for e in EXAMPLES if e.startswith(chip.name + ':'))})")
    return chip, shape


def chip(name: str) -> Chip:
    return parse(name)[0]


def num_chips(name: str) -> int:
    return math.prod(parse(name)[1])


def from_accelerator_type(accelerator_type: str) -> str:
    """A Cloud TPU accelerator type (`v5p-128`: 128 TensorCores) as a topology name (`v5p:4x4x4`),
    the chips arranged as `gcloud` creates them by default (a cube or the squarest torus)."""
    m = re.fullmatch(r"([a-z0-9]+)-(\d+)", accelerator_type or "")
    chip_ = next((c for c in CHIPS.values() if m and c.accelerator_prefix == m.group(1)), None)
    if chip_ is None:
        raise TopologyError(f"accelerator type {accelerator_type!r}: not one of "
                            f"{sorted(c.accelerator_prefix + '-N' for c in CHIPS.values())}")
    cores = int(m.group(2))
    if cores % chip_.cores_per_chip:
        raise TopologyError(f"accelerator type {accelerator_type!r}: {cores} is not a whole number of chips")
    n = cores // chip_.cores_per_chip
    shape = _arrange(n, chip_.dims)
    if shape is None:
        raise TopologyError(f"accelerator type {accelerator_type!r}: {n} chips do not form a {chip_.dims}-D slice")
    return f"{chip_.name}:{'x'.join(map(str, shape))}"


def _arrange(n: int, dims: int) -> tuple[int, ...] | None:
    """n chips as powers-of-two axes, as even as possible, the largest last (4x4x8, 8x16)."""
    if n < 1 or n & (n - 1):
        return None
    k = n.bit_length() - 1
    exps = [k // dims + (1 if i >= dims - k % dims else 0) for i in range(dims)]
    if dims == 3 and n < 8:   # the small 3-D slices: 2x2x1, 2x2x2 (and 1x1x1, 2x1x1)
        exps = sorted(exps, reverse=True)
    return tuple(2 ** e for e in exps)


def check_devices(name: str, devices, setting: str) -> None:
    """`devices` (a run's, `jax.devices()`) must be topology `name`'s: its chip kind and chip count;
    `TopologyError` naming `setting` otherwise (a recipe used on another slice)."""
    chip_ = chip(name)
    want = num_chips(name)
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devices})
    if kinds != [chip_.device_kind] or len(devices) != want:
        raise TopologyError(f"{setting}={name!r}: the settings were chosen for {want} x {chip_.device_kind}, but this "
                            f"run has {len(devices)} x {', '.join(kinds)} (use the recipe for this slice, or unset "
                            f"{setting})")


def devices(name: str) -> list:
    """The compile-only devices of topology `name` (nothing is allocated; no TPU needed)."""
    chip_, _ = parse(name)
    from jax.experimental import topologies

    try:
        import libtpu  # noqa: F401  -- only to say what is missing
    except ImportError as e:
        raise TopologyError(f"topology {name!r}: compiling for a TPU needs libtpu: pip install -e '.[tpu]' "
                            "(jax[tpu]; it installs on a CPU host too)") from e
    # libtpu takes a host-wide lock (/tmp/libtpu_lockfile) for as long as the process lives, which
    # would stop a second compiling process (a test worker, another trainer.compile) until then;
    # compile-only devices claim no chip, so that lock is not needed.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    kwargs = {"chip_config_name": "megacore"} if chip_.megacore else {}
    try:
        devs = topologies.get_topology_desc(name, "tpu", **kwargs).devices
    except Exception as e:  # noqa: BLE001 -- libtpu raises JaxRuntimeError for a bad name or shape.
        raise TopologyError(f"topology {name!r}: libtpu cannot describe it: {str(e).splitlines()[0][:300]}") from e
    if len(devs) != num_chips(name):
        raise TopologyError(f"topology {name!r}: libtpu gave {len(devs)} devices for {num_chips(name)} chips")
    return list(devs)


def peak_flops_per_device(device, cpu_peak_flops: float = CPU_PEAK_FLOPS) -> float | None:
    """A device's peak FLOP/s: a TPU chip's dense bf16 peak; on CPU the host's `cpu_peak_flops` over
    its devices (fake devices share the cores); None where unknown (GPUs)."""
    if device.platform == "cpu":
        import jax

        return cpu_peak_flops / jax.local_device_count()
    known = {c.device_kind: c for c in CHIPS.values()}
    return known[device.device_kind].peak_bf16_flops if device.device_kind in known else None
