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
from collections.abc import Iterator
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


def _checked_info(path: str):
    """libsndfile's header info of an existing, non-empty, decodable file at a plausible rate."""
    import soundfile as sf

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
    return info


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
    info = _checked_info(path)
    sr = int(info.samplerate)
    frames = -1 if max_seconds is None else int(math.ceil(max_seconds * sr))
    try:
        x, sr = sf.read(path, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(path, f"cannot decode (truncated or corrupt?): {_clean(e)}") from None
    if info.frames > 0 and frames < 0 and x.shape[0] < 0.9 * info.frames:
        raise AudioError(path, f"truncated: header says {info.frames} frames, decoded {x.shape[0]}")
    cut = truncation(path)
    if cut:
        raise AudioError(path, f"truncated: {cut}")
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


def truncation(path: str) -> str | None:
    """How the file's container shows it was cut short, or None.  The decoders read a cut file as
    a shorter clip (libsndfile shortens a WAV's frame count to the bytes there are; an Ogg stream
    simply ends), so the containers are checked: a WAV's `data` chunk (or any chunk before it) must
    fit in the file; an Ogg/Opus stream must end with a complete page flagged end-of-stream; an
    MP3's frames, walked from the first, must not run past the end of the file.  FLAC needs no
    check here: its decoder fails on a cut stream and its STREAMINFO states the length."""
    ext = os.path.splitext(path)[1].lower()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if ext == ".wav":
            return _wav_truncation(f, size)
        if ext in (".ogg", ".oga", ".opus"):
            f.seek(max(0, size - 70000))              # An Ogg page is at most 65307 bytes.
            return _ogg_truncation(f.read(), size)
        if ext == ".mp3":
            return _mp3_truncation(f.read(), size)
    return None


def _wav_truncation(f, size: int) -> str | None:
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None                                   # RF64 and others: nothing declared to check.
    order = "<" if head[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        cid, n = f.read(4), int(np.frombuffer(f.read(4), order + "u4")[0])
        if cid == b"data":
            if n in (0, 0xFFFFFFFF):                  # A streaming writer's placeholder.
                return None
            have = size - pos - 8
            return f"its data chunk declares {n} bytes of audio, the file holds {have}" if have < n else None
        pos += 8 + n + (n & 1)
    return "the file ends before its data chunk" if pos > size else None


def _ogg_truncation(tail: bytes, size: int) -> str | None:
    at = tail.rfind(b"OggS")
    if at < 0 or len(tail) < at + 27:
        return "no complete Ogg page at its end"
    nseg = tail[at + 26]
    table = tail[at + 27:at + 27 + nseg]
    if len(table) < nseg or at + 27 + nseg + sum(table) > len(tail):
        return "its last Ogg page is cut off"
    if not tail[at + 5] & 0x04:
        return "its Ogg stream has no end-of-stream page"
    return None


_MP3_BITRATES = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),     # MPEG-1 Layer III
                 2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}          # MPEG-2/2.5
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_truncation(data: bytes, size: int) -> str | None:
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:        # ID3v2 tag: a syncsafe size.
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    end = size - (128 if data[-128:-125] == b"TAG" else 0)
    frames = 0
    while pos + 4 <= end:
        h = data[pos:pos + 4]
        version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
        if h[0] != 0xFF or (h[1] & 0xE0) != 0xE0 or version == 1 or layer != 1:
            break                                      # Not a Layer III frame: trailing tags or junk.
        kbps = _MP3_BITRATES[1 if version == 3 else 2][min(h[2] >> 4, 14)]
        rate_i = (h[2] >> 2) & 3
        if not kbps or rate_i == 3:
            break
        length = (144 if version == 3 else 72) * kbps * 1000 // _MP3_RATES[version][rate_i] + ((h[2] >> 1) & 1)
        if pos + length > end:
            return f"its MP3 frame {frames} runs {pos + length - end} bytes past the end of the file"
        pos += length
        frames += 1
    return None


def stream_audio(path: str, sample_rate: int, *, block_seconds: float = 30.0,
                 allow_silent: bool = False) -> Iterator[np.ndarray]:
    """The file as consecutive float32 mono blocks at `sample_rate`, about `block_seconds` each:
    memory is bounded by a block, not by the file (a 20-minute file is read like a 30 s one).
    The blocks concatenated equal `load_audio(path, sample_rate)` up to float rounding: each
    block is resampled with enough of its neighbours' samples around it to cover the polyphase
    filter, and the same checks are made (a silent file raises `AudioError` after its last
    block, when its peak is known)."""
    import soundfile as sf

    info = _checked_info(path)
    cut = truncation(path)
    if cut:
        raise AudioError(path, f"truncated: {cut}")
    sr = int(info.samplerate)
    ratio = Fraction(int(sample_rate), sr)
    up, down = ratio.numerator, ratio.denominator
    # resample_poly's Kaiser filter has 10 * max(up, down) taps each side at the upsampled rate:
    # this many input samples each side, rounded up to a multiple of `down` (block edges stay on
    # whole output samples).
    half = -(-10 * max(up, down) // up) + 1
    ctx = -(-half // down) * down
    block = max(down, int(block_seconds * sr) // down * down)
    buf, left, done, total, peak = np.zeros(0, np.float64), 0, 0, 0, 0.0

    def out(y: np.ndarray) -> np.ndarray:
        nonlocal peak
        if not np.all(np.isfinite(y)):
            raise AudioError(path, "decoded samples contain NaN or Inf")
        peak = max(peak, float(np.max(np.abs(y))) if y.size else 0.0)
        return np.clip(y, -1.0, 1.0).astype(np.float32)

    try:
        with sf.SoundFile(path) as f:
            for raw in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                buf = np.concatenate([buf, raw.mean(axis=1, dtype=np.float64)])
                total += raw.shape[0]
                until = (left + len(buf) - ctx) // down * down   # outputs whose filter support is all read
                if until > done:
                    y = buf if up == down else _resample_poly(buf, up, down)
                    yield out(y[(done - left) * up // down:(until - left) * up // down])
                    done = until
                    keep = max(left, done - ctx)
                    buf, left = buf[keep - left:], keep
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001 -- libsndfile's messages are good; keep them.
        raise AudioError(path, f"cannot decode (truncated or corrupt?): {_clean(e)}") from None
    if total == 0:
        raise AudioError(path, "zero-length audio")
    y = buf if up == down else _resample_poly(buf, up, down)
    end = -(-total * up // down) - left * up // down
    yield out(y[(done - left) * up // down:end])
    if not allow_silent and peak < SILENCE_PEAK:
        raise AudioError(path, "silent (peak below -90 dBFS)")


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(x, up, down)


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
