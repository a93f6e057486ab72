"""`python -m trainer.compile --gin_file=CONFIG [--topology=NAME] [--program=train] [--headroom=0.1]`.

Compiles the run's real train step (or another program the model names, `--program=sample` for
a Noise2Music stage's sampling step) ahead of time for a TPU topology, on this host, with no TPU:
the run's mesh over the topology's devices, the run's global batch.  Prints memory per device
against the chip's HBM and whether it fits, FLOPs per device (XLA's count and the analytic
matmul/conv count of `trainer.flops`), XLA's estimated step time, the projected MFU (analytic
FLOPs over the estimated time and the chip's peak bf16 FLOP/s) and the compile time; the last line
of stdout is the same as one JSON object (`topology`, `fits`, `hbm_bytes_per_device`,
`hbm_capacity_bytes`, `estimated_step_seconds`, `projected_mfu`, ...).

    python -m trainer.compile --gin_file=mulan/ast.gin --topology=v5p:2x2x1
    python -m trainer.compile --gin_file=noise2music/waveform_generator.gin --program=sample

Flags: --gin_file / --gin.NAME=VALUE as for training (`--gin.BATCH_SIZE=...`,
`--gin.Partitioner.mesh_shape=...`); --topology=NAME (`trainer.topology`: v4:4x4x4, v5e:16x16,
v5p:8x8x8, v6e:4x4, ...; default: the config's TOPOLOGY macro) or --accelerator_type=TYPE (a
Cloud TPU type, v5p-128, v5litepod-16: what `launch_tpu.sh compile` passes); --program=NAME (default
`train`); --headroom=FRACTION of HBM kept free (default 0.1); --profile: a roofline profile of
the optimized HLO (`trainer.hlo_profile`: time by op kind and model scope, memory-bound shares,
the top ops), printed and in the JSON under `profile`.  Needs libtpu (`pip install -e
'.[tpu]'`).  Exit status 2: a bad flag, topology or mesh, or a step that does not fit (the largest
buffers named).
"""
from __future__ import annotations

import importlib
import sys

from common import cli
from trainer import aot, topology
from trainer import flags as flags_lib
from trainer.partitioning import Partitioner


class CompileError(ValueError):
    """A setting that makes the program impossible to compile for the topology; names it."""


def program_for(name: str, model, partitioner: Partitioner, batch_size: int) -> aot.Program:
    """The train step as `train()` would compile it, or a program of `model.programs`."""
    from trainer import train
    from trainer.train_state import abstract_state

    if batch_size % partitioner.num_batch_shards:
        raise CompileError(f"BATCH_SIZE={batch_size} is not divisible by the {partitioner.num_batch_shards} "
                           f"batch shards of mesh {dict(partitioner.mesh.shape)}")
    if name == "train":
        optimizer = flags_lib.bound("train.optimizer")
        ema_decay = flags_lib.bound("train.ema_decay", None)
        state = abstract_state(model, partitioner, batch_size=batch_size, optimizer=optimizer,
                               ema=ema_decay is not None, frozen=flags_lib.bound("train.frozen", ()))
        return train.train_program(model, optimizer, state, partitioner, batch_size, ema_decay,
                                   flags_lib.bound("train.lr_schedule", None),
                                   flags_lib.bound("train.microbatches", 1))
    if name not in model.programs:
        raise CompileError(f"--program={name}: {type(model).__name__} has {['train', *model.programs]}")
    module, fn = model.programs[name].split(":")
    return getattr(importlib.import_module(module), fn)(model, partitioner, batch_size)


def main(argv: list[str] | None = None) -> dict:
    cli.setup_logging()
    with cli.exit_on(flags_lib.FlagError, topology.TopologyError, CompileError, ValueError):
        flags = flags_lib.parse_argv(list(sys.argv[1:] if argv is None else argv),
                                     own=("topology", "accelerator_type", "program", "headroom"),
                                     switches=("profile",))
        if flags.help:
            print(__doc__)
            sys.exit(0)
        flags_lib.apply(flags)
        name = flags.own.get("topology")
        if "accelerator_type" in flags.own:
            name = topology.from_accelerator_type(flags.own["accelerator_type"])
        name = name or flags_lib.bound("%TOPOLOGY", None)
        if not name:
            raise CompileError("no topology: pass --topology=NAME (e.g. v5p:4x4x4) or set TOPOLOGY in the config")
        headroom = float(flags.own.get("headroom", 0.1))
        if not 0 <= headroom < 1:
            raise CompileError(f"--headroom={headroom}: a fraction of HBM in [0, 1)")
        chip = topology.chip(name)
        devices = topology.devices(name)
        try:
            partitioner = Partitioner(devices=devices)
        except ValueError as e:
            raise CompileError(f"{e} (topology {name} has {len(devices)} devices)") from e
        model = flags_lib.bound("train.model")
        batch_size = int(flags_lib.bound("train.batch_size"))
        program = program_for(flags.own.get("program", "train"), model, partitioner, batch_size)
        print(f"compiling the {program.name} step for {name} ({len(devices)} x {chip.device_kind}), "
              f"mesh {dict(partitioner.mesh.shape)} ...", file=sys.stderr, flush=True)
    report = {"topology": name, **aot.analyse(program, chip, headroom, profile="profile" in flags.own)}
    print(aot.table(report))
    cli.print_json(report)
    if not report["fits"]:
        print(f"error: the {program.name} step does not fit {name}'s HBM with {headroom:.0%} headroom: "
              f"{aot.why_not(report)}", file=sys.stderr)
        sys.exit(2)
    return report


if __name__ == "__main__":
    main()
