"""`python -m noise2music.sample --prompts=FILE --out=DIR --generator=RUN --cascader=RUN [...]`.

Runs a trained cascade (SPEC.md §2) from a prompt file (one prompt per line; blank lines and
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
its step schedule, guidance scale and gamma default to the paper's (SPEC §2.2) and are flags:

    python -m noise2music.sample --prompts=prompts.txt --out=/tmp/n2m_samples \\
      --generator=runs/n2m_gen --cascader=runs/n2m_cas --seeds=0,1 \\
      --generator_steps=uniform:200 --generator_guidance=3 --cascader_steps=uniform:100

The last line of stdout is one JSON object (files, timings); exit status 2 for bad input, 3 for
non-finite values during sampling (everything written before stays, and settings.json says what
failed).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

log = logging.getLogger("noise2music.sample")

PATHS = {"waveform": ("generator", "cascader"), "spectrogram": ("spectrogram_generator", "vocoder")}
ALL = ("generator", "cascader", "spectrogram_generator", "vocoder", "super_resolution")


def read_prompts(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise ValueError(f"--prompts={path}: no such file")
    with open(path, encoding="utf-8") as f:
        prompts = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"--prompts={path}: no prompts in the file (one per line; '#' lines are comments)")
    return prompts


def audio_stats(x: np.ndarray, rate: int) -> dict:
    """Sanity figures of one output: rms; spectral flatness (geometric over arithmetic mean of the
    power spectrum of 64 ms frames, averaged: white noise ~0.56, rendered music ~0.01-0.1); the
    share of power below 500 Hz; and the frame-rms coefficient of variation (dynamics over time)."""
    n = int(0.064 * rate)
    frames = x[: len(x) // n * n].reshape(-1, n) * np.hanning(n)
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    flat = np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)
    f = np.fft.rfftfreq(n, 1.0 / rate)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    return {"rms": round(float(np.sqrt(np.mean(x ** 2))), 4), "spectral_flatness": round(float(flat.mean()), 4),
            "power_below_500hz": round(float(p[:, f < 500].sum() / p.sum()), 4),
            "rms_variation": round(float(rms.std() / max(rms.mean(), 1e-9)), 4)}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m noise2music.sample", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True, help="text file, one prompt per line")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--path", choices=sorted(PATHS), default="waveform")
    ap.add_argument("--seeds", default="0", help="comma-separated; one sample per prompt and seed")
    ap.add_argument("--seconds", type=float, default=None,
                    help="length to generate (default: the first stage's training length)")
    ap.add_argument("--batch_size", type=int, default=8, help="samples per device batch")
    ap.add_argument("--clip", choices=("dynamic", "static", "none"), default="dynamic", help="x0 clipping")
    ap.add_argument("--cond_noise", type=float, default=0.0,
                    help="diffusion time at which the low-fi input of cascader / super-resolution is noised")
    ap.add_argument("--no_ema", action="store_true", help="use the raw parameters, not the EMA ones")
    for s in ALL:
        ap.add_argument(f"--{s}", default=None, help=f"the {s} stage's training run (its --model_dir)")
        ap.add_argument(f"--{s}_steps", default=None, help="step schedule: a preset (generator, cascader, vocoder), "
                        "'uniform:N', 'back_heavy:NAME' or comma-separated step sizes")
        ap.add_argument(f"--{s}_guidance", type=float, default=None, help="classifier-free guidance scale w")
        ap.add_argument(f"--{s}_gamma", type=float, default=None, help="ancestral stochasticity in [0, 1]")
        ap.add_argument(f"--{s}_checkpoint_step", type=int, default=None, help="default: the newest")
    return ap.parse_args(argv)


class _Progress:
    """One line per stage, updated in place: '[cascader] batch 1/2 step 400/800 (12.3 s)'."""

    def __init__(self, stage: str, batches: int):
        self.stage, self.batches, self.t0, self.batch = stage, batches, time.time(), 0

    def __call__(self, i: int, n: int):
        end = "\n" if i == n and self.batch == self.batches else ""
        print(f"\r[{self.stage}] batch {self.batch}/{self.batches} step {i}/{n} ({time.time() - self.t0:.1f} s)",
              end=end, file=sys.stderr, flush=True)


def run(a) -> dict:
    from data.audio import write_wav
    from noise2music import conditioning, sampling
    from noise2music.spectrogram import MelSpec

    prompts = read_prompts(a.prompts)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    if not seeds:
        raise ValueError("--seeds: give at least one")
    names = list(PATHS[a.path])
    for s in names:
        if not getattr(a, s):
            raise ValueError(f"--path={a.path} needs --{s}=RUN (the {s} stage's --model_dir)")
    unused = [s for s in ALL if getattr(a, s) and s not in names and s != "super_resolution"]
    if unused:
        raise ValueError(f"--{unused[0]} is not part of --path={a.path} (stages {names} [+ super_resolution])")
    if a.super_resolution:
        names.append("super_resolution")
    for s in names:
        steps = getattr(a, f"{s}_steps")
        if steps is not None:
            sampling.diffusion.step_sizes(steps)   # a bad schedule fails before any model is loaded
    os.makedirs(a.out, exist_ok=True)

    stages, settings = [], {}
    for s in names:
        print(f"[sample] loading {s} from {getattr(a, s)}", file=sys.stderr, flush=True)
        st = sampling.Stage.from_model_dir(getattr(a, s), s, step=getattr(a, f"{s}_checkpoint_step"),
                                           use_ema=not a.no_ema)
        stages.append(st)
        settings[s] = sampling.StageSettings.paper(
            s, steps=getattr(a, f"{s}_steps"), guidance=getattr(a, f"{s}_guidance"),
            gamma=getattr(a, f"{s}_gamma"), clip=None if a.clip == "none" else a.clip,
            cond_noise=a.cond_noise if s in ("cascader", "super_resolution") else 0.0)
    sampling.check_chain(stages)

    items = [(i, p, seed) for i, p in enumerate(prompts) for seed in seeds]
    bases = [f"{i + 1:03d}_seed{seed}" for i, _, seed in items]
    report = {"status": "running", "prompts": prompts, "seeds": seeds, "path": a.path,
              "stages": {st.name: {"model_dir": st.model_dir, "checkpoint_step": st.step, "weights": st.which,
                                   "rate": st.rate, "settings": {k: v for k, v in vars(settings[st.name]).items()},
                                   "num_steps": int(len(sampling.diffusion.step_sizes(settings[st.name].steps)))}
                         for st in stages},
              "samples": [{"prompt": p, "prompt_index": i, "seed": seed, "files": []} for i, p, seed in items],
              "seconds": {}, "out": os.path.abspath(a.out)}
    settings_path = os.path.join(a.out, "settings.json")

    def save_report():
        with open(settings_path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(settings_path + ".tmp", settings_path)

    def add(k, path):
        report["samples"][k]["files"].append(os.path.basename(path))

    save_report()
    mel = MelSpec()
    prev = None
    try:
        for st in stages:
            t0 = time.time()
            chunks = [list(range(s, min(s + a.batch_size, len(items)))) for s in range(0, len(items), a.batch_size)]
            prog = _Progress(st.name, len(chunks))
            outs = []
            for c in chunks:
                prog.batch += 1
                outs.append(st.sample(seeds=[items[k][2] for k in c], ids=[items[k][0] for k in c],
                                      texts=[items[k][1] for k in c], inputs=None if prev is None else prev[c],
                                      settings=settings[st.name], seconds=a.seconds, progress=prog,
                                      warn=lambda m: log.warning("%s: %s", st.name, m)))
            prev = np.concatenate(outs)
            report["seconds"][st.name] = round(time.time() - t0, 2)
            for k, base in enumerate(bases):
                if st.name == "spectrogram_generator":
                    np.save(os.path.join(a.out, f"{base}_mel.npy"), prev[k])
                    add(k, mel.save_png(prev[k], os.path.join(a.out, f"{base}_mel.png"), title=items[k][1]))
                    add(k, os.path.join(a.out, f"{base}_mel.npy"))
                elif st.rate == 16000:
                    path = os.path.join(a.out, f"{base}_16k.wav")
                    write_wav(path, prev[k], 16000)
                    add(k, path)
                    report["samples"][k]["stats_16k"] = audio_stats(np.clip(prev[k], -1, 1), 16000)
                    spec = np.asarray(mel(prev[k][None]))[0]
                    add(k, mel.save_png(spec, os.path.join(a.out, f"{base}_16k.png"), title=items[k][1]))
                elif st.rate == 24000:
                    path = os.path.join(a.out, f"{base}_24k.wav")
                    write_wav(path, prev[k], 24000)
                    add(k, path)
                else:
                    path = os.path.join(a.out, f"{base}_{st.name}.wav")
                    write_wav(path, prev[k], st.rate)
                    add(k, path)
            save_report()
        if not a.super_resolution:
            import jax.numpy as jnp

            report["note_24k"] = "no --super_resolution: the 24 kHz files are the 16 kHz output FFT-resampled"
            for k, base in enumerate(bases):
                wav16 = prev[k]
                hi = np.asarray(conditioning.fft_resample(jnp.asarray(wav16)[None, :, None], len(wav16) * 3 // 2))
                path = os.path.join(a.out, f"{base}_24k.wav")
                write_wav(path, hi[0, :, 0], 24000)
                add(k, path)
    except sampling.SamplingError as e:
        report["status"], report["error"] = "failed", str(e)
        save_report()
        raise
    report["status"] = "completed"
    save_report()
    return report


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname).1s %(name)s] %(message)s")
    logging.getLogger("noise2music").setLevel(logging.INFO)
    a = parse_args(argv)
    from noise2music.sampling import SamplingError
    from trainer.checkpoints import CheckpointRestoreError
    from trainer.model_dir import ModelDirError

    try:
        report = run(a)
    except SamplingError as e:
        code = 3 if "non-finite" in str(e) else 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(code)
    except (ValueError, ModelDirError, CheckpointRestoreError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    files = [f for s in report["samples"] for f in s["files"]]
    print(f"\n[sample] {len(report['samples'])} samples ({len(files)} files) in {report['out']}; settings: "
          f"{os.path.join(report['out'], 'settings.json')}", file=sys.stderr)
    stats = [s["stats_16k"] for s in report["samples"]]
    mean = {k: round(float(np.mean([x[k] for x in stats])), 4) for k in stats[0]}
    print(f"[sample] 16 kHz outputs, mean: {mean} (white noise: spectral_flatness ~0.56)", file=sys.stderr)
    summary = {"out": report["out"], "samples": len(report["samples"]), "files": len(files),
               "seconds": report["seconds"], "stages": {k: v["checkpoint_step"] for k, v in report["stages"].items()},
               "mean_16k_stats": mean}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
