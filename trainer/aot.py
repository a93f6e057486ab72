"""Programs compiled ahead of time, and what their compiled form says: memory per device against
the chip's HBM, FLOPs (XLA's and the analytic matmul count), XLA's step-time estimate, the
projected MFU.  What `python -m trainer.compile` prints (docs: README, "Compiling for a TPU pod").

    program = train.train_program(model, optimizer, state, partitioner, batch_size)
    report = analyse(program, topology.chip("v5p:4x4x4"), headroom=0.1)

A `Program` is a jitted function with shardings and its abstract arguments (`ShapeDtypeStruct`s
carrying those shardings): the train step (`trainer.train.train_program`) or one a model family
names in `BaseModel.programs` (Noise2Music: one sampling step).
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from typing import Any

import jax

from trainer import flops as flops_lib
from trainer.partitioning import Partitioner
from trainer.train_state import param_path


@dataclasses.dataclass
class Program:
    """Args:
      name: what it is ('train', 'sample').
      fn: the `jax.jit`-wrapped function, with its in/out shardings.
      args: its abstract arguments.
      partitioner: whose mesh and logical rules are in scope when it is traced.
      batch_size: the global batch one call processes.
      count_fn: what the analytic FLOPs are counted on (default `fn`): the same computation
        without rematerialisation, so recomputed work is not counted as model FLOPs.
      arg_names: what the reports call the arguments.
    """

    name: str
    fn: Any
    args: tuple
    partitioner: Partitioner
    batch_size: int
    count_fn: Callable | None = None
    arg_names: tuple[str, ...] = ("state", "batch")

    def lower(self):
        with self.partitioner.activate():
            return self.fn.lower(*self.args)

    def compile(self):
        """(the compiled program, seconds spent lowering and compiling)."""
        t0 = time.perf_counter()
        compiled = self.lower().compile()
        return compiled, time.perf_counter() - t0

    def matmul_flops(self, executed: bool = False) -> float:
        """Analytic matmul/conv FLOPs of one call, all devices together: the model's (`count_fn`, no
        recomputation), or with `executed=True` what the compiled program runs (`fn`, remat included)."""
        with self.partitioner.activate():
            return flops_lib.matmul_flops(self.fn if executed else (self.count_fn or self.fn), *self.args)


def shard_bytes(x: jax.ShapeDtypeStruct) -> int:
    """Bytes one device holds of abstract array `x` (its sharding's shard shape)."""
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
    return int(math.prod(shape)) * x.dtype.itemsize


def largest_arguments(program: Program, n: int = 5) -> list[tuple[str, int]]:
    """The `n` largest per-device argument buffers, named `state/params/...`, `batch/audio`."""
    sized = [(f"{name}/{param_path(p)}" if p else name, shard_bytes(x))
             for name, arg in zip(program.arg_names, program.args)
             for p, x in jax.tree_util.tree_leaves_with_path(arg) if hasattr(x, "dtype")]
    return sorted(sized, key=lambda kv: -kv[1])[:n]


def _gib(n: float) -> str:
    return f"{n / 1024 ** 3:.2f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.1f} MiB"


def analyse(program: Program, chip: Any, headroom: float = 0.1, profile: bool = False) -> dict:
    """Compiles `program` and reports on it (see the module doc).  `chip`: a `trainer.topology.Chip`;
    the step fits when its bytes per device are at most (1 - headroom) of the chip's HBM.  A program
    XLA itself finds too large for HBM is reported (`fits: False`, XLA's message in `error`).
    `profile`: also a roofline profile of the optimized HLO (`trainer.hlo_profile`)."""
    devices = program.partitioner.mesh.devices.size
    out: dict[str, Any] = {
        "program": program.name, "chip": chip.name, "device_kind": chip.device_kind, "num_devices": int(devices),
        "mesh": {k: int(v) for k, v in program.partitioner.mesh.shape.items()},
        "global_batch": program.batch_size, "hbm_capacity_bytes": int(chip.hbm_bytes), "headroom": headroom,
    }
    analytic = program.matmul_flops()
    out["flops_analytic_per_device"] = analytic / devices
    try:
        compiled, seconds = program.compile()
    except Exception as e:  # noqa: BLE001 -- XLA:TPU raises XlaRuntimeError RESOURCE_EXHAUSTED
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        msg = str(e)
        used = re.search(r"required for HLO temporaries \(([\d.]+)([KMGT])\)|Used ([\d.]+)([KMGT]) of", msg)
        if used:
            value, unit = [g for g in used.groups() if g]
            used = int(float(value) * 1024 ** "KMGT".index(unit) * 1024)
        out.update(fits=False, hbm_bytes_per_device=used,
                   error=msg.split("\n\n")[0][:4000], largest_arguments=largest_arguments(program),
                   estimated_step_seconds=None, projected_mfu=None, compile_seconds=None)
        return out
    mem = compiled.memory_analysis()
    memory = {
        "arguments": int(mem.argument_size_in_bytes), "outputs": int(mem.output_size_in_bytes),
        "aliased": int(mem.alias_size_in_bytes), "temporaries": int(mem.temp_size_in_bytes),
        "generated_code": int(mem.generated_code_size_in_bytes),
    }
    total = memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temporaries"] + memory["generated_code"]
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_xla, moved = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    # XLA's cost analysis counts a while loop's body once, but a scanned stack of layers
    # (layers/scan.py) runs it num_layers times: when XLA counts fewer FLOPs than the model's matmuls
    # alone, its FLOPs, bytes and estimate are scaled up to the analytic count of what the program runs.
    loop_scale = 1.0
    if 0 < flops_xla < analytic / devices:
        loop_scale = max(1.0, program.matmul_flops(executed=True) / devices / flops_xla)
    est, source = float(cost.get("optimal_seconds", -1.0)) * loop_scale, "xla"
    if est <= 0:   # XLA has no estimate for some ops (the FFT of a log-mel front end): a roofline one
        est = loop_scale * max(flops_xla / chip.peak_bf16_flops, moved / chip.hbm_bytes_per_second)
        source = "roofline"
    est = est if est > 0 else None
    fits = total <= (1.0 - headroom) * chip.hbm_bytes
    out.update(
        fits=bool(fits), hbm_bytes_per_device=int(total), memory=memory,
        flops_xla_per_device=float(cost.get("flops", float("nan"))), xla_loop_scale=loop_scale,
        estimated_step_seconds=est, step_time_source=source if est else None,
        projected_mfu=(analytic / devices) / (est * chip.peak_bf16_flops) if est else None,
        peak_bf16_flops_per_chip=chip.peak_bf16_flops, compile_seconds=seconds)
    if not fits:
        out["largest_arguments"] = largest_arguments(program)
    if profile:
        from trainer import hlo_profile

        out["profile"] = hlo_profile.profile(compiled.as_text(), chip)
    return out


def why_not(r: dict) -> str:
    """One line on a report that does not fit: what the bytes are, and the largest arguments."""
    biggest = ", ".join(f"{n} ({_gib(v)})" for n, v in r.get("largest_arguments", [])[:3])
    if "memory" in r:
        m = r["memory"]
        parts = f"arguments {_gib(m['arguments'])}, temporaries {_gib(m['temporaries'])}"
        used = f"{_gib(r['hbm_bytes_per_device'])} per device ({parts})"
        return f"{used} of {_gib(r['hbm_capacity_bytes'])}; largest per-device arguments: {biggest}"
    return f"XLA: {r.get('error', '?').splitlines()[0]}; largest per-device arguments: {biggest}"


def table(r: dict) -> str:
    """A report as the lines `trainer.compile` prints."""
    lines = [f"{r['program']} step on {r['topology']} ({r['num_devices']} x {r['device_kind']}), mesh {r['mesh']}, "
             f"global batch {r['global_batch']}"]
    cap = r["hbm_capacity_bytes"]
    if "memory" in r:
        m = r["memory"]
        lines += [f"  per device: arguments {_gib(m['arguments'])}, outputs {_gib(m['outputs'])} "
                  f"({_gib(m['aliased'])} donated), temporaries {_gib(m['temporaries'])}, "
                  f"code {_gib(m['generated_code'])}"]
    used = r.get("hbm_bytes_per_device")
    lines.append(f"  HBM per device: {_gib(used) if used is not None else '?'} of {_gib(cap)} "
                 f"({'fits' if r['fits'] else 'DOES NOT FIT'}, headroom {r['headroom']:.0%})")
    if r.get("flops_xla_per_device") is not None:
        scaled = (f" (loop bodies counted once: its costs x {r['xla_loop_scale']:.1f} below)"
                  if r.get("xla_loop_scale", 1.0) > 1.0 else "")
        lines.append(f"  FLOPs per device: XLA {r['flops_xla_per_device']:.3e}{scaled}, analytic matmul/conv "
                     f"{r['flops_analytic_per_device']:.3e}")
    if r.get("estimated_step_seconds") is not None:
        how = ("XLA's estimated" if r["step_time_source"] == "xla"
               else "roofline (XLA's FLOPs at peak, or its bytes at HBM bandwidth)")
        lines.append(f"  step time, {how}: {r['estimated_step_seconds'] * 1e3:.2f} ms; projected MFU "
                     f"{r['projected_mfu']:.1%} of {r['peak_bf16_flops_per_chip'] / 1e12:.0f} TFLOP/s bf16 per chip")
    if r.get("profile"):
        from trainer import hlo_profile

        lines.append(hlo_profile.table(r["profile"]))
    if r.get("compile_seconds") is not None:
        lines.append(f"  compiled in {r['compile_seconds']:.1f} s")
    if r.get("error"):
        lines.append(f"  XLA: {r['error']}")
    for name, n in r.get("largest_arguments", []):
        lines.append(f"  largest argument: {name} {_gib(n)} per device")
    return "\n".join(lines)
