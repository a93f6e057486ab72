"""musicnn (Pons & Serra, 2019) in Flax: the MagnaTagATune / Million Song tagger, for evaluation.

    emb = make(None)                              # the embedder: "musicnn", "musicnn:MSD_musicnn[:layer]"
    net = Musicnn.load()                          # MTT_musicnn from the installed `musicnn` wheel
    out = net.apply_patches(patches)              # [N, 187, 96] log-mel -> taggram, penultimate, ...
    out = net.analyze(wave_16k)                   # a clip -> per-3-s-patch tags [n, 50], features

The network is the original's layer for layer (`musicnn/models.py`, `build_musicnn`):
- front end: batch norm of the log-mel, then "timbral" convs (7 frames x 38 and x 67 mel bins, 204
  filters) and "temporal" convs (128, 64 and 32 frames x 1 bin, 51 filters), each ReLU -> batch norm
  -> max over frequency, concatenated to 561 channels per frame;
- mid end: three 7-frame convs of 64 filters with residual connections, densely concatenated with
  the front end (753 channels);
- back end: max and mean over time (interleaved, 1,506), batch norm, a 200-unit ReLU layer + batch
  norm (the "penultimate" features) and 50 sigmoid tags.
Batch norm is in inference mode with the checkpoint's moving statistics (TF's epsilon, 1e-3).

The input is librosa's log-mel as musicnn computes it: 16 kHz, 512-point FFT with a periodic Hann
window, hop 256, centred frames (reflect padding), power spectrogram -> 96 Slaney mel bands with
Slaney area normalisation (0-8 kHz) -> log10(10000 S + 1).  Unlike the original, which casts the
mel spectrogram to float16 (it overflows on loud audio), everything here is float32.  A clip is cut
into non-overlapping 187-frame (3 s) patches; a clip shorter than one patch is repeat-padded (the
training recipe's "repeat-pad"), so every clip gives at least one patch.

Weights: the TF1 checkpoints the `musicnn` wheel ships (`MTT_musicnn`, `MSD_musicnn`), read with
TensorFlow's checkpoint reader and cached as `.npz` under `$N2M_CACHE_DIR/musicnn/` (TensorFlow is
only imported for that first conversion).  `tests/integration/test_musicnn.py` runs the original TF
graph on the same inputs and checks the port against it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from music_eval.embedders.base import Embedder, EmbedderInfo, short_hash

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FFT_SIZE = 512
HOP = 256
NUM_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as musicnn's extractor
BN_EPSILON = 1e-3   # tf.compat.v1.layers.batch_normalization's default

MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral")
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock",
    "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy")
MODELS = {"MTT_musicnn": MTT_LABELS, "MSD_musicnn": MSD_LABELS}


class MusicnnError(RuntimeError):
    """Weights that cannot be found or do not fit; the message names the file."""


# ----------------------------------------------------------------------------------------------
# Front end (librosa 0.7's melspectrogram, as musicnn's extractor and training data used it)
# ----------------------------------------------------------------------------------------------

def _hz_to_mel_slaney(f):
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=4)
def slaney_mel_matrix(sample_rate: int = SAMPLE_RATE, n_fft: int = FFT_SIZE, n_mels: int = NUM_MELS,
                      fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """[1 + n_fft / 2, n_mels] weights equal to `librosa.filters.mel(..., htk=False, norm='slaney').T`."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.T.astype(np.float32)


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[samples] 16 kHz -> [1 + samples // 256, 96]: log10(10000 * mel power + 1) (numpy: any length
    without a recompile; float64 inside, float32 out)."""
    wave = np.asarray(wave, np.float64)
    if wave.ndim != 1 or wave.shape[0] <= FFT_SIZE // 2:
        raise ValueError(f"musicnn.log_mel: need a 1-D clip longer than {FFT_SIZE // 2} samples, got {wave.shape}")
    x = np.pad(wave, FFT_SIZE // 2, mode="reflect")
    n = 1 + (x.shape[-1] - FFT_SIZE) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, FFT_SIZE)[::HOP][:n]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FFT_SIZE) / FFT_SIZE)
    power = np.abs(np.fft.rfft(frames * hann, axis=-1)) ** 2
    return np.log10(10000.0 * (power @ slaney_mel_matrix().astype(np.float64)) + 1.0).astype(np.float32)


def patches(spec: np.ndarray, frames: int = PATCH_FRAMES) -> np.ndarray:
    """[T, 96] -> [n, frames, 96]: non-overlapping patches from the start (a trailing part shorter
    than a patch is dropped, as the original extractor does); a spectrogram shorter than one patch is
    repeated until it fills one."""
    spec = np.asarray(spec, np.float32)
    if spec.shape[0] < frames:
        reps = -(-frames // max(1, spec.shape[0]))
        spec = np.tile(spec, (reps, 1))[:frames]
    n = spec.shape[0] // frames
    return spec[:n * frames].reshape(n, frames, spec.shape[1])


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class BatchNorm(nn.Module):
    """Inference-mode batch norm over the last axis with TF's parameter names."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (c,))
        beta = self.param("beta", nn.initializers.zeros, (c,))
        mean = self.param("moving_mean", nn.initializers.zeros, (c,))
        var = self.param("moving_variance", nn.initializers.ones, (c,))
        return (x - mean) * (gamma * jax.lax.rsqrt(var + BN_EPSILON)) + beta


def _conv(features, kernel, name, pad_time=(0, 0)):
    return nn.Conv(features, kernel_size=kernel, padding=(pad_time, (0, 0)), name=name,
                   precision=jax.lax.Precision.HIGHEST)


class MusicnnNet(nn.Module):
    """[B, 187, 96] log-mel patches -> dict(logits [B, C], penultimate [B, U], mean_pool, max_pool [B, 753])."""

    num_classes: int = 50
    num_filt_midend: int = 64
    num_units_backend: int = 200

    @nn.compact
    def __call__(self, x):
        x = BatchNorm(name="batch_normalization")(x[..., None])  # [B, T, F, 1]
        F = x.shape[2]
        front = []
        # Timbral: 7 frames x 40% / 70% of the bins, time padded by 3 ("same" in time only).
        for i, frac in enumerate((0.4, 0.7)):
            h = nn.relu(_conv(204, (7, int(frac * F)), f"conv2d{'_' + str(i) if i else ''}", (3, 3))(x))
            front.append(BatchNorm(name=f"batch_normalization_{1 + i}")(h).max(axis=2))
        # Temporal: 128 / 64 / 32 frames x 1 bin, TF "same" padding (k - 1) // 2 before, k // 2 after.
        for i, k in enumerate((128, 64, 32)):
            h = nn.relu(_conv(51, (k, 1), f"conv2d_{2 + i}", ((k - 1) // 2, k // 2))(x))
            front.append(BatchNorm(name=f"batch_normalization_{3 + i}")(h).max(axis=2))
        front = jnp.concatenate(front, axis=-1)  # [B, T, 561]
        # Mid end: convs over the whole channel axis (TF's [7, C] kernels), residual from layer 2.
        feats = [front]
        h = front
        for i in range(3):
            kernel = _conv(self.num_filt_midend, (7, h.shape[-1]), f"conv2d_{5 + i}", (3, 3))
            y = nn.relu(kernel(h[..., None])[:, :, 0, :])
            y = BatchNorm(name=f"batch_normalization_{6 + i}")(y)
            h = y if i == 0 else y + h
            feats.append(h)
        mid = jnp.concatenate(feats, axis=-1)  # [B, T, 753]
        # Back end: [max, mean] interleaved per channel, as TF's flatten of concat(axis=2) gives.
        max_pool, mean_pool = mid.max(axis=1), mid.mean(axis=1)
        flat = jnp.stack([max_pool, mean_pool], axis=-1).reshape(x.shape[0], -1)
        flat = BatchNorm(name="batch_normalization_9")(flat)
        dense = nn.Dense(self.num_units_backend, name="dense", precision=jax.lax.Precision.HIGHEST)
        pen = BatchNorm(name="batch_normalization_10")(nn.relu(dense(flat)))
        logits = nn.Dense(self.num_classes, name="dense_1", precision=jax.lax.Precision.HIGHEST)(pen)
        return {"logits": logits, "penultimate": pen, "mean_pool": mean_pool, "max_pool": max_pool}


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------

def package_checkpoint(model: str = "MTT_musicnn") -> str:
    """The checkpoint prefix inside the installed `musicnn` wheel (a folder ending in '/')."""
    if model not in MODELS:
        raise MusicnnError(f"unknown musicnn model {model!r}; known: {sorted(MODELS)}")
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise MusicnnError("the `musicnn` package is not installed (bash run.sh setup installs it with --no-deps)")
    prefix = os.path.join(list(spec.submodule_search_locations)[0], model) + "/"
    if not os.path.exists(prefix + ".index"):
        raise MusicnnError(f"{prefix}.index: no such checkpoint in the installed musicnn package")
    return prefix


def convert_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """A TF1 checkpoint (prefix) -> {'conv2d/kernel': array, ...} without the optimizer's slots."""
    import tensorflow as tf  # only here: the one-off conversion

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    except Exception as e:
        raise MusicnnError(f"{prefix}: cannot read the TF checkpoint: {e}") from None
    names = [n for n in reader.get_variable_to_shape_map() if "Adam" not in n and "power" not in n]
    return {n: np.asarray(reader.get_tensor(n), np.float32) for n in sorted(names)}


def flat_to_params(flat: dict[str, np.ndarray]) -> dict:
    params: dict = {}
    for name, value in flat.items():
        layer, leaf = name.split("/")
        params.setdefault(layer, {})[leaf] = value
    return {"params": params}


def load_weights(model: str = "MTT_musicnn", checkpoint: str | None = None, cache: bool = True) -> dict:
    """Flax variables for `model` from `checkpoint` (default: the wheel's), via an .npz cache."""
    prefix = checkpoint or package_checkpoint(model)
    with open(prefix + ".index", "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()[:12]
    from data.paths import cache_dir

    path = os.path.join(cache_dir(), "musicnn", f"{model}-{digest}.npz")
    if cache and os.path.exists(path):
        with np.load(path) as z:
            return flat_to_params({k: z[k] for k in z.files})
    flat = convert_checkpoint(prefix)
    _check_fits(flat, model, prefix)
    if cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path + ".tmp.npz", **flat)
        os.replace(path + ".tmp.npz", path)
        log.info("musicnn %s converted from %s, cached in %s", model, prefix, path)
    return flat_to_params(flat)


def _check_fits(flat: dict[str, np.ndarray], model: str, prefix: str):
    net = MusicnnNet(num_classes=len(MODELS[model]))
    want = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, PATCH_FRAMES, NUM_MELS)))["params"]
    want = {f"{layer}/{leaf}": v.shape for layer, d in want.items() for leaf, v in d.items()}
    got = {k: v.shape for k, v in flat.items()}
    if want != got:
        missing = sorted(set(want) - set(got))[:3]
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
        raise MusicnnError(f"{prefix}: the checkpoint's variables do not fit musicnn {model} (missing {missing}, "
                           f"other shapes {wrong}, {len(set(got) - set(want))} unexpected)")


@dataclasses.dataclass
class Musicnn:
    """A loaded musicnn: `apply_patches` on log-mel patches, `analyze` on a 16 kHz clip."""

    model: str
    variables: dict
    labels: tuple[str, ...]
    batch_size: int = 64

    @classmethod
    def load(cls, model: str = "MTT_musicnn", checkpoint: str | None = None, batch_size: int = 64) -> "Musicnn":
        variables = load_weights(model, checkpoint)
        return cls(model, variables, MODELS[model], batch_size)

    @functools.cached_property
    def _apply(self):
        from trainer.batching import BatchedApply
        from trainer.partitioning import Partitioner

        net = MusicnnNet(num_classes=len(self.labels))

        def fn(variables, x):
            out = net.apply(variables, x)
            return {"tags": jax.nn.sigmoid(out.pop("logits")), **out}

        p = Partitioner()   # the batch over every device, the weights replicated
        return BatchedApply(fn, jax.device_put(self.variables, p.replicated), p, self.batch_size)

    def apply_patches(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """[N, 187, 96] -> {'tags' (sigmoid) [N, C], 'penultimate', 'mean_pool', 'max_pool'} (numpy)."""
        return self._apply(np.asarray(x, np.float32))

    def analyze(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        """A 16 kHz clip -> per-patch outputs (see `apply_patches`), at least one patch."""
        return self.apply_patches(patches(log_mel(wave)))


class MusicnnEmbedder(Embedder):
    """musicnn: 3 s patches (16 kHz) -> a `layer` embedding per patch (default the 200-d
    penultimate layer) and the 50 tag scores."""

    LAYERS = ("penultimate", "mean_pool", "max_pool")

    def __init__(self, model: str = "MTT_musicnn", layer: str = "penultimate", checkpoint: str | None = None):
        if layer not in self.LAYERS:
            raise ValueError(f"musicnn layer {layer!r}: choose one of {self.LAYERS}")
        self.net = Musicnn.load(model, checkpoint)
        self.layer = layer
        dim = {"penultimate": 200}.get(layer, 753)
        digest = package_checkpoint(model) if checkpoint is None else checkpoint
        # "musicnn" for the default (MTT, penultimate); others are named apart, so both can be columns.
        name = "musicnn" + ("" if model == "MTT_musicnn" else "_" + model.split("_")[0].lower()) + \
            ("" if layer == "penultimate" else f"_{layer}")
        self.info = EmbedderInfo(name=name, sample_rate=SAMPLE_RATE, window=PATCH_FRAMES * HOP,
                                 hop=PATCH_FRAMES * HOP, level="frame", dim=dim,
                                 fingerprint=f"musicnn-{model}-{layer}-{short_hash(digest)}")
        self.tag_names = tuple(self.net.labels)

    def embed_many(self, waves, progress=None):
        pats = [patches(log_mel(w)) for w in waves]
        if not pats:
            return []
        out = self.net.apply_patches(np.concatenate(pats))
        res, s = [], 0
        for p in pats:
            res.append({"embeddings": out[self.layer][s:s + len(p)], "tags": out["tags"][s:s + len(p)]})
            s += len(p)
        if progress:
            progress(len(waves))
        return res


def make(arg: str | None) -> MusicnnEmbedder:
    """"musicnn", "musicnn:MSD_musicnn", "musicnn:MTT_musicnn:max_pool"."""
    model, _, layer = (arg or "MTT_musicnn").partition(":")
    return MusicnnEmbedder(model or "MTT_musicnn", layer or "penultimate")
