"""Audio files in and out, with errors that name the file and the problem.

Decoding uses libsndfile (the `soundfile` wheel bundles it: WAV, FLAC, OGG/Vorbis, Opus and MP3).
Everything is returned as float32 mono in [-1, 1] at the rate asked for; resampling is polyphase
(`scipy.signal.resample_poly`), exact for integer-ratio rates such as 44.1k -> 16k.

This module is importable without TensorFlow; the in-graph resampler used by the seqio tasks is in
`data/preprocessors.py`.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
# Rates below this are not music audio (and are usually a header error).
MIN_SAMPLE_RATE = 2000
MAX_SAMPLE_RATE = 384000
# A clip whose peak is below this (about -90 dBFS) is called silent.
SILENCE_PEAK = 3e-5


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (Kaiser-windowed FIR, scipy's default)."""
    if sr_in == sr_out:
        return np.asarray(x, np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(int(sr_out), int(sr_in))
    y = resample_poly(np.asarray(x, np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return y.astype(np.float32)


def load_audio(
    path: str,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = None,
    allow_silent: bool = False,
) -> tuple[np.ndarray, int]:
    """Reads an audio file as float32 mono; resampled to `sample_rate` when one is given.

    Raises `AudioError` for a missing, empty, truncated or undecodable file, an implausible sample
    rate, a zero-length clip, or (unless `allow_silent`) a silent one. Stereo/multichannel audio is
    averaged to mono.
    """
    import soundfile as sf

    path = str(path)
    if not os.path.exists(path):
        raise AudioError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile's messages are good; keep them.
        raise AudioError(path, f"cannot decode: {_clean(e)}") from None
    sr = int(info.samplerate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(path, f"implausible sample rate {sr} Hz (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE})")
    frames = -1 if max_seconds is None else int(math.ceil(max_seconds * sr))
    try:
        x, sr = sf.read(path, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(path, f"cannot decode (truncated or corrupt?): {_clean(e)}") from None
    if info.frames > 0 and frames < 0 and x.shape[0] < 0.9 * info.frames:
        raise AudioError(path, f"truncated: header says {info.frames} frames, decoded {x.shape[0]}")
    x = x.mean(axis=1)
    if x.size == 0:
        raise AudioError(path, "zero-length audio")
    if not np.all(np.isfinite(x)):
        raise AudioError(path, "decoded samples contain NaN or Inf")
    if not allow_silent and float(np.max(np.abs(x))) < SILENCE_PEAK:
        raise AudioError(path, "silent (peak below -90 dBFS)")
    if sample_rate is not None and sr != sample_rate:
        x, sr = resample(x, sr, sample_rate), sample_rate
    return np.clip(x, -1.0, 1.0).astype(np.float32), int(sr)


def middle(x: np.ndarray, n: int) -> np.ndarray:
    """The middle n samples of x (all of x when it is not longer)."""
    if len(x) <= n:
        return x
    s = (len(x) - n) // 2
    return x[s:s + n]


def write_wav(path: str, x: np.ndarray, sample_rate: int) -> None:
    """Writes float audio as 16-bit PCM WAV, atomically (tmp file + rename)."""
    import soundfile as sf

    x = np.clip(np.asarray(x, np.float32), -1.0, 1.0)
    tmp = f"{path}.tmp.wav"
    sf.write(tmp, x, int(sample_rate), subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def to_pcm16(x: np.ndarray) -> bytes:
    """Float [-1, 1] -> little-endian int16 bytes (how records store audio)."""
    return (np.clip(np.asarray(x, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32767.0


def _clean(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__
