"""Estimated seconds to sample the paper-size cascades on a TPU slice: each stage's sampling step
compiled ahead of time (`python -m trainer.compile --program=sample`: the paper's guidance, the
text encoded beforehand) for `--batch` clips of 30 s, the batch sharded over the slice's chips,
times the paper's step count, summed over the waveform pipeline (generator -> cascader ->
super-resolution) and the spectrogram one (spectrogram generator -> vocoder -> super-resolution).
XLA's estimates from ahead-of-time compilation, not measurements on a TPU; T5 (once per prompt)
is left out.

    python benchmarks/sampling_cost.py                       # v4:2x2x1 (4 chips), 4 clips: ~20 min
    python benchmarks/sampling_cost.py --topology=v5p:2x2x1 --stages generator cascader

The paper reports about 142 s for four 30 s samples on 4 TPU v4 chips.  A v4 chip is one device
here (its two TensorCores as one megacore device, as on a TPU VM), so v4:2x2x1 is 4 devices.
The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# stage -> (config, AUDIO_SAMPLES for 30 s at the config's SOURCE_RATE)
STAGES = {
    "generator": ("waveform_generator", 480000),
    "cascader": ("waveform_cascader", 480000),
    "super_resolution": ("super_resolution", 720000),
    "spectrogram_generator": ("spectrogram_generator", 480000),
    "vocoder": ("spectrogram_vocoder", 480000),
}
PIPELINES = {"waveform": ("generator", "cascader", "super_resolution"),
             "spectrogram": ("spectrogram_generator", "vocoder", "super_resolution")}
PAPER_SECONDS = 142.0


def compile_step(stage: str, topology: str, batch: int, timeout: int) -> dict:
    config, samples = STAGES[stage]
    cmd = [sys.executable, "-m", "trainer.compile", f"--gin_file=noise2music/{config}.gin", "--program=sample",
           f"--topology={topology}", f"--gin.BATCH_SIZE={batch}", f"--gin.AUDIO_SAMPLES={samples}",
           f"--gin.Partitioner.mesh_shape=(-1, 1, 1)"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{stage}: trainer.compile exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> dict:
    from noise2music import diffusion
    from noise2music.stages import spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default="v4:2x2x1")
    ap.add_argument("--batch", type=int, default=4, help="clips sampled together (sharded over the chips)")
    ap.add_argument("--stages", nargs="*", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--timeout", type=int, default=3600)
    a = ap.parse_args(argv)
    rows = {}
    for i, stage in enumerate(a.stages):
        print(f"[sampling_cost] {i + 1}/{len(a.stages)}: compiling one {stage} step ...", file=sys.stderr, flush=True)
        r = compile_step(stage, a.topology, a.batch, a.timeout)
        steps = len(diffusion.step_sizes(spec(stage).steps))
        est = r["estimated_step_seconds"]
        rows[stage] = {"steps": steps, "guidance": spec(stage).guidance, "step_ms": round(est * 1e3, 2),
                       "seconds": round(steps * est, 1), "hbm_gib_per_device": round(r["hbm_bytes_per_device"] / 2 ** 30, 2),
                       "projected_mfu": round(r["projected_mfu"], 3), "step_time_source": r["step_time_source"]}
        print(f"[sampling_cost] {stage}: {steps} steps x {rows[stage]['step_ms']} ms = {rows[stage]['seconds']} s",
              file=sys.stderr, flush=True)
    pipelines = {p: round(sum(rows[s]["seconds"] for s in stages), 1)
                 for p, stages in PIPELINES.items() if all(s in rows for s in stages)}
    print(f"| stage | steps | guidance | est. step ({a.batch} clips of 30 s, {a.topology}) | seconds | MFU |")
    print("|---|---|---|---|---|---|")
    for s, r in rows.items():
        print(f"| {s} | {r['steps']} | {r['guidance']} | {r['step_ms']} ms | {r['seconds']} | {r['projected_mfu']:.0%} |")
    for p, seconds in pipelines.items():
        print(f"{p} pipeline: {seconds} s for {a.batch} clips of 30 s on {a.topology} (paper: ~{PAPER_SECONDS:.0f} s "
              f"on 4 TPU v4)")
    result = {"topology": a.topology, "batch": a.batch, "stages": rows, "pipelines_seconds": pipelines,
              "paper_seconds": PAPER_SECONDS}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
