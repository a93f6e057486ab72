"""What `music_eval.evaluate` scores: the generated and the reference sets, as items (id, audio, text).

    items = read_generated("runs/n2m_tiny/samples")      # a noise2music.sample folder, a manifest, or
                                                         # a folder with manifest.jsonl (any model's audio)
    ref = read_reference("runs/n2m_tiny/eval_set")       # a manifest, or a music_eval.eval_set folder
    waves = load_segments(items, 16000, seconds=10.0)    # the middle segment of each clip

Manifests are JSON lines `{"audio", "text"[, "id"]}` (`data.manifest`: relative audio paths are
relative to the manifest).  Bad input is an `EvalInputError` naming the file, line or flag.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from data import manifest as manifest_lib

RESERVED = ("ground truth", "white noise")  # the baselines' rows


class EvalInputError(ValueError):
    """Bad input; the message names the file or flag."""


@dataclasses.dataclass
class Item:
    id: str
    audio: str
    text: str


def _read_manifest(path: str, flag: str) -> list[Item]:
    items = []
    try:
        for n, r in manifest_lib.read_rows(path):
            if "audio" not in r:
                raise ValueError(f"{path} line {n}: no 'audio'")
            audio, text = r["audio"], r.get("text")
            if not (isinstance(audio, str) or (isinstance(audio, dict) and audio and all(isinstance(v, str) for v in audio.values()))):
                raise ValueError(f"{path} line {n}: field 'audio' must be a path or {{rate: path}}, not "
                                 f"{json.dumps(audio)[:80]}")
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{path} line {n}: field 'text' must be a string, not {json.dumps(text)[:80]}")
            items.append(Item(str(r.get("id", r.get("clip_id", n))), manifest_lib.audio_path(r["audio"], path),
                              str(r.get("text") or "")))
    except ValueError as e:
        raise EvalInputError(f"{flag}={e}: need a JSON object with 'audio' (and 'text')") from None
    if not items:
        raise EvalInputError(f"{flag}={path}: no items")
    return items


def read_generated(path: str, suffix: str = "_16k.wav", flag: str = "--generated") -> list[Item]:
    """A sampler output folder (settings.json) or a manifest."""
    if os.path.isdir(path):
        settings = os.path.join(path, "settings.json")
        if not os.path.exists(settings) and os.path.exists(os.path.join(path, "manifest.jsonl")):
            return _read_manifest(os.path.join(path, "manifest.jsonl"), flag)
        if not os.path.exists(settings):
            raise EvalInputError(f"{flag}={path}: a folder without settings.json (a noise2music.sample output) or "
                                 f"manifest.jsonl; give a JSON-lines manifest of {{\"audio\", \"text\"}} instead")
        with open(settings) as f:
            s = json.load(f)
        items = []
        for k, smp in enumerate(s.get("samples", [])):
            files = [x for x in smp.get("files", []) if x.endswith(suffix)]
            if not files:
                continue
            items.append(Item(f"{smp.get('prompt_index', k) + 1:03d}_seed{smp.get('seed', 0)}",
                              os.path.join(path, files[0]), smp["prompt"]))
        if not items:
            raise EvalInputError(f"{flag}={path}: settings.json lists no *{suffix} files (status: {s.get('status')})")
        return items
    if not os.path.exists(path):
        raise EvalInputError(f"{flag}={path}: no such file or folder")
    return _read_manifest(path, flag)


def read_reference(path: str) -> list[Item]:
    """The reference set: at least 2 clips (FAD fits a Gaussian to them)."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "reference.jsonl")):
            raise EvalInputError(f"--reference={path}: a folder without reference.jsonl (make one with "
                                 f"`python -m music_eval.write_eval_set`)")
        path = os.path.join(path, "reference.jsonl")
    elif not os.path.exists(path):
        raise EvalInputError(f"--reference={path}: no such file or folder")
    items = _read_manifest(path, "--reference")
    if len(items) < 2:
        raise EvalInputError(f"--reference={path}: {len(items)} clip; FAD needs at least 2 reference clips "
                             f"(it fits a Gaussian to their embeddings)")
    return items


def load_segments(items: list[Item], rate: int, seconds: float) -> list[np.ndarray]:
    from data.audio import AudioError, load_audio, middle

    out = []
    for it in items:
        try:
            x, _ = load_audio(it.audio, rate, allow_silent=True)
        except AudioError as e:
            raise EvalInputError(f"audio of item {it.id!r}: {e}") from None
        out.append(middle(x, int(round(seconds * rate))))
    return out


def white_noise(like: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for x in like:
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 0.1
        out.append(np.clip(rng.standard_normal(len(x)) * rms, -1, 1).astype(np.float32))
    return out


