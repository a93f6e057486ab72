"""Generating a prompt file's samples into a folder: what `python -m noise2music.sample` runs.

    report = generate(prompts, out, stages, settings, seeds=[0, 1], batch_size=8)

Every (prompt, seed) item goes through the cascade's stages in batches of `batch_size`; each
stage's outputs are written as they finish (`NNN_seedS_<stage>.wav`, the 16 kHz WAV with its
log-mel PNG, the 24 kHz WAV; on the spectrogram path the generated log-mel as .npy and .png), and
`settings.json` records the prompts, stages, settings, timings and files (status 'running' until
the end, 'failed' with the error if sampling stops).  They are written into `OUT.partial`, which
becomes `OUT` only when the run completes: a failed or interrupted run leaves an earlier `OUT` as
it was (and its own partial output, with its error, in `OUT.partial`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time

import numpy as np

from noise2music import cascade
from noise2music.sampler import Settings, num_steps
from noise2music.stages import FINAL, MEL

log = logging.getLogger("noise2music.sample")


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


class _Progress:
    """One line per stage, updated in place: '[cascader] batch 1/2 step 400/800 (12.3 s)'."""

    def __init__(self, stage: str, batches: int):
        self.stage, self.batches, self.t0, self.batch = stage, batches, time.time(), 0

    def __call__(self, i: int, n: int):
        end = "\n" if i == n and self.batch == self.batches else ""
        print(f"\r[{self.stage}] batch {self.batch}/{self.batches} step {i}/{n} ({time.time() - self.t0:.1f} s)",
              end=end, file=sys.stderr, flush=True)


def generate(prompts: list[str], out: str, stages: list[cascade.Stage], settings: dict[str, Settings], *,
             seeds: list[int], batch_size: int = 8, seconds: float | None = None, path: str = "waveform") -> dict:
    """Samples every (prompt, seed) through `stages` (which `cascade.check_chain` accepts) into
    `out`; returns the report that `out/settings.json` holds."""
    from data.audio import write_wav
    from noise2music import conditioning
    from layers.audio_frontend import MelSpec

    cascade.check_chain(stages)
    final, out = _staging(out)
    items = [(i, p, seed) for i, p in enumerate(prompts) for seed in seeds]
    bases = [f"{i + 1:03d}_seed{seed}" for i, _, seed in items]
    report = {"status": "running", "prompts": prompts, "seeds": seeds, "path": path,
              "stages": {st.name: {"model_dir": st.model_dir, "checkpoint_step": st.step, "weights": st.which,
                                   "rate": st.rate, "settings": {k: v for k, v in vars(settings[st.name]).items()},
                                   "num_steps": num_steps(settings[st.name])}
                         for st in stages},
              "samples": [{"prompt": p, "prompt_index": i, "seed": seed, "files": []} for i, p, seed in items],
              "seconds": {}, "out": final}
    settings_path = os.path.join(out, "settings.json")

    def save_report():
        with open(settings_path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(settings_path + ".tmp", settings_path)

    def add(k, file):
        report["samples"][k]["files"].append(os.path.basename(file))

    save_report()
    mel = MelSpec()
    prev = None
    try:
        for st in stages:
            t0 = time.time()
            chunks = [list(range(s, min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]
            prog = _Progress(st.name, len(chunks))
            outs = []
            for c in chunks:
                prog.batch += 1
                outs.append(st.sample(seeds=[items[k][2] for k in c], ids=[items[k][0] for k in c],
                                      texts=[items[k][1] for k in c], inputs=None if prev is None else prev[c],
                                      settings=settings[st.name], seconds=seconds, progress=prog,
                                      warn=lambda m: log.warning("%s: %s", st.name, m)))
            prev = np.concatenate(outs)
            report["seconds"][st.name] = round(time.time() - t0, 2)
            for k, base in enumerate(bases):
                if st.spec.output == MEL:
                    np.save(os.path.join(out, f"{base}_mel.npy"), prev[k])
                    add(k, mel.save_png(prev[k], os.path.join(out, f"{base}_mel.png"), title=items[k][1]))
                    add(k, os.path.join(out, f"{base}_mel.npy"))
                elif st.rate == 16000:
                    file = os.path.join(out, f"{base}_16k.wav")
                    write_wav(file, prev[k], 16000)
                    add(k, file)
                    report["samples"][k]["stats_16k"] = audio_stats(np.clip(prev[k], -1, 1), 16000)
                    spec = np.asarray(mel(prev[k][None]))[0]
                    add(k, mel.save_png(spec, os.path.join(out, f"{base}_16k.png"), title=items[k][1]))
                elif st.rate == 24000:
                    file = os.path.join(out, f"{base}_24k.wav")
                    write_wav(file, prev[k], 24000)
                    add(k, file)
                else:
                    file = os.path.join(out, f"{base}_{st.name}.wav")
                    write_wav(file, prev[k], st.rate)
                    add(k, file)
            save_report()
        if stages[-1].name != FINAL:
            import jax.numpy as jnp

            report["note_24k"] = "no --super_resolution: the 24 kHz files are the 16 kHz output FFT-resampled"
            for k, base in enumerate(bases):
                wav16 = prev[k]
                hi = np.asarray(conditioning.fft_resample(jnp.asarray(wav16)[None, :, None], len(wav16) * 3 // 2))
                file = os.path.join(out, f"{base}_24k.wav")
                write_wav(file, hi[0, :, 0], 24000)
                add(k, file)
    except BaseException as e:
        report["status"], report["error"] = "failed", f"{type(e).__name__}: {e}"
        save_report()
        raise
    report["status"] = "completed"
    save_report()
    _publish(out, final)
    return report


def check_out(out: str) -> str:
    """OUT, absolute, if it is new, empty, or an earlier sampling's output (it holds
    `settings.json`): only such a folder may be replaced."""
    final = os.path.abspath(out)
    if os.path.exists(final) and not (os.path.isdir(final) and (
            not os.listdir(final) or os.path.exists(os.path.join(final, "settings.json")))):
        raise ValueError(f"--out={out}: exists and is not an earlier sampling's output (no settings.json); "
                         f"give a new or empty folder")
    return final


def _staging(out: str) -> tuple[str, str]:
    """(the output folder, the folder to write into): `OUT.partial`, renamed to OUT when every
    sample is written, so a failed or interrupted run never replaces what OUT held."""
    final = check_out(out)
    staging = final + ".partial"
    if os.path.isdir(staging):
        shutil.rmtree(staging)           # An earlier failed or interrupted run's.
    os.makedirs(staging)
    return final, staging


def _publish(staging: str, final: str) -> None:
    """The finished `staging` folder becomes `final`; an earlier output there is removed after."""
    old = None
    if os.path.exists(final):
        old = f"{final}.replaced-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old:
        shutil.rmtree(old)


