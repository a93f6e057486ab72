"""`python -m noise2music.sample --prompts=FILE --out=DIR --generator=RUN --cascader=RUN [...]`.

Runs a trained cascade (docs/PAPERS.md §2) from a prompt file (one prompt per line; blank lines and
lines starting with '#' are skipped) and writes, per prompt and seed, into --out:

    001_seed0_16k.wav / _24k.wav   the 16 kHz output and the 24 kHz one (super-resolution, or the
                                   16 kHz output FFT-resampled when no --super_resolution is given)
    001_seed0_16k.png              its log-mel spectrogram
    001_seed0_generator.wav        every earlier stage's output as it finishes (3.2 kHz audio, or
    001_seed0_mel.png / .npy       the generated spectrogram on the spectrogram path)
    settings.json                  prompts, stages (run, step, EMA or not), step schedules, guidance,
                                   gamma, seeds, timings and files; status 'running' until the end

Paths: --path=waveform (generator -> cascader [-> super_resolution]) or --path=spectrogram
(spectrogram_generator -> vocoder [-> super_resolution]).  Each stage's checkpoint is its
training run's --model_dir (EMA weights of the newest step unless --no_ema / --STAGE_checkpoint_step);
its step schedule, guidance scale and gamma default to the paper's (docs/PAPERS.md §2.2) and are flags:

    python -m noise2music.sample --prompts=prompts.txt --out=/tmp/n2m_samples \\
      --generator=runs/n2m_gen --cascader=runs/n2m_cas --seeds=0,1 \\
      --generator_steps=uniform:200 --generator_guidance=3 --cascader_steps=uniform:100

Everything is written into `DIR.partial`, which becomes --out only when the run completes, so a
failed or interrupted run never replaces an earlier output in --out (its partial output and
error stay in `DIR.partial/settings.json`); --out must be new, empty, or an earlier sampling's.
The last line of stdout is one JSON object (files, timings); exit status 2 for bad input (out-of-
range settings such as a gamma outside [0, 1], a negative guidance or length: named before any
model loads), 3 for non-finite values during sampling.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from common import cli
from common.errors import require
from noise2music.stages import FINAL, LOWFI, PATHS, STAGES


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m noise2music.sample", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True, help="text file, one prompt per line")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--path", choices=sorted(PATHS), default="waveform")
    cli.add_trust_flag(ap)
    ap.add_argument("--seeds", default="0", help="comma-separated; one sample per prompt and seed")
    ap.add_argument("--seconds", type=float, default=None,
                    help="length to generate (default: the first stage's training length)")
    ap.add_argument("--batch_size", type=int, default=8, help="samples per device batch")
    ap.add_argument("--clip", choices=("dynamic", "static", "none"), default="dynamic", help="x0 clipping")
    ap.add_argument("--cond_noise", type=float, default=0.0,
                    help="diffusion time at which the low-fi input of cascader / super-resolution is noised")
    ap.add_argument("--no_ema", action="store_true", help="use the raw parameters, not the EMA ones")
    for s in STAGES:
        ap.add_argument(f"--{s}", default=None, help=f"the {s} stage's training run (its --model_dir)")
        ap.add_argument(f"--{s}_steps", default=None, help="step schedule: a preset (generator, cascader, vocoder), "
                        "'uniform:N', 'back_heavy:SCHEDULE' or comma-separated step sizes")
        ap.add_argument(f"--{s}_guidance", type=float, default=None, help="classifier-free guidance scale w")
        ap.add_argument(f"--{s}_gamma", type=float, default=None, help="ancestral stochasticity in [0, 1]")
        ap.add_argument(f"--{s}_checkpoint_step", type=int, default=None, help="default: the newest")
    return ap.parse_args(argv)


def _check_ranges(a) -> None:
    """Settings out of their range, named before any model is loaded."""
    require(a.seconds is None or a.seconds > 0, "--seconds", a.seconds, "positive")
    require(a.batch_size >= 1, "--batch_size", a.batch_size, "at least 1")
    require(0.0 <= a.cond_noise <= 1.0, "--cond_noise", a.cond_noise, "a diffusion time in [0, 1]")
    for s in STAGES:
        gamma, guidance = getattr(a, f"{s}_gamma"), getattr(a, f"{s}_guidance")
        require(gamma is None or 0.0 <= gamma <= 1.0, f"--{s}_gamma", gamma, "in [0, 1]")
        require(guidance is None or guidance >= 0.0, f"--{s}_guidance", guidance,
                "at least 0 (0: no guidance; the paper's scales are about 1-15)")


def _stages(a):
    """The stages the flags name, loaded, and their settings: the paper's, with the flags'."""
    from noise2music import cascade, diffusion

    names = list(PATHS[a.path])
    for s in names:
        if not getattr(a, s):
            raise ValueError(f"--path={a.path} needs --{s}=RUN (the {s} stage's --model_dir)")
    unused = [s for s in STAGES if getattr(a, s) and s not in names and s != FINAL]
    if unused:
        raise ValueError(f"--{unused[0]} is not part of --path={a.path} (stages {names} [+ {FINAL}])")
    if getattr(a, FINAL):
        names.append(FINAL)
    for s in names:
        if getattr(a, f"{s}_steps") is not None:
            diffusion.step_sizes(getattr(a, f"{s}_steps"))   # a bad schedule fails before any model is loaded
    stages, settings = [], {}
    for s in names:
        print(f"[sample] loading {s} from {getattr(a, s)}", file=sys.stderr, flush=True)
        st = cascade.Stage.from_run(getattr(a, s), s, step=getattr(a, f"{s}_checkpoint_step"), use_ema=not a.no_ema)
        stages.append(st)
        settings[s] = cascade.paper_settings(
            s, steps=getattr(a, f"{s}_steps"), guidance=getattr(a, f"{s}_guidance"),
            gamma=getattr(a, f"{s}_gamma"), clip=None if a.clip == "none" else a.clip,
            cond_noise=a.cond_noise if STAGES[s].conditioning == LOWFI else 0.0)
    return stages, settings


def main(argv=None) -> dict:
    cli.setup_logging()
    a = parse_args(argv)
    from noise2music import generation
    from noise2music.sampler import SamplingError
    from trainer.checkpoints import CheckpointRestoreError
    from trainer.restore import ModelDirError

    # Exit status 3: non-finite values while sampling; 2: bad input (CascadeError is a ValueError).
    with cli.exit_on(SamplingError, code=3), cli.exit_on(ValueError, ModelDirError, CheckpointRestoreError,
                                                         FileNotFoundError):
        prompts = generation.read_prompts(a.prompts)
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        if not seeds:
            raise ValueError("--seeds: give at least one")
        _check_ranges(a)
        generation.check_out(a.out)
        stages, settings = _stages(a)
        report = generation.generate(prompts, a.out, stages, settings, seeds=seeds, batch_size=a.batch_size,
                                     seconds=a.seconds, path=a.path)
    files = [f for s in report["samples"] for f in s["files"]]
    print(f"\n[sample] {len(report['samples'])} samples ({len(files)} files) in {report['out']}; settings: "
          f"{os.path.join(report['out'], 'settings.json')}", file=sys.stderr)
    stats = [s["stats_16k"] for s in report["samples"]]
    mean = {k: round(float(np.mean([x[k] for x in stats])), 4) for k in stats[0]}
    print(f"[sample] 16 kHz outputs, mean: {mean} (white noise: spectral_flatness ~0.56)", file=sys.stderr)
    return cli.print_json({"out": report["out"], "samples": len(report["samples"]), "files": len(files),
                           "seconds": report["seconds"],
                           "stages": {k: v["checkpoint_step"] for k, v in report["stages"].items()},
                           "mean_16k_stats": mean})


if __name__ == "__main__":
    main()
