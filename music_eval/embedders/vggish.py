"""VGGish (Hershey et al., 2017) in Flax, for users who have its weights: FAD's original embedder.

    python -m music_eval.evaluate ... --embedders=musicnn,vggish:/path/to/vggish_model.ckpt

The weights (`vggish_model.ckpt`, from the TensorFlow models repository's `research/audioset`)
cannot be downloaded here, so nothing in this project needs them; give the checkpoint and the
`vggish` embedder works.  The converter reads the released TF-Slim variable names
(`vggish/conv1/weights`, `vggish/conv3/conv3_1/biases`, `vggish/fc1/fc1_2/weights`, ...) from a TF
checkpoint prefix, or the same names from an `.npz`.  `tests/test_vggish.py` writes a checkpoint with
those names and checks the converter and the network against an independent TensorFlow graph;
the released weights themselves were not available to check against.

Front end (`vggish_input.waveform_to_examples` / `mel_features`): 16 kHz, 25 ms periodic Hann
frames every 10 ms without padding, 512-point FFT magnitude, 64 HTK mel bands over 125-7,500 Hz
(the DC bin excluded), log(mel + 0.01), then non-overlapping 96-frame (0.96 s) examples.
Network: conv 64 - pool - conv 128 - pool - 2 x conv 256 - pool - 2 x conv 512 - pool (3 x 3
convs, 2 x 2 max pools, "same" padding, ReLU), then 4096 - 4096 - 128 fully connected (ReLU on the
first two); the 128-d output is the embedding (before the released PCA / quantisation, which
`pca` applies when its parameters are given).
"""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from music_eval.embedders.base import Embedder, EmbedderInfo, short_hash

SAMPLE_RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512
NUM_BANDS, FMIN, FMAX = 64, 125.0, 7500.0
EXAMPLE_FRAMES = 96
CHANNELS = {"conv1": 64, "conv2": 128, "conv3_1": 256, "conv3_2": 256, "conv4_1": 512, "conv4_2": 512}
LOG_OFFSET = 0.01

# (Flax module path, released variable scope)
LAYERS = [("conv1", "vggish/conv1"), ("conv2", "vggish/conv2"), ("conv3_1", "vggish/conv3/conv3_1"),
          ("conv3_2", "vggish/conv3/conv3_2"), ("conv4_1", "vggish/conv4/conv4_1"),
          ("conv4_2", "vggish/conv4/conv4_2"), ("fc1_1", "vggish/fc1/fc1_1"), ("fc1_2", "vggish/fc1/fc1_2"),
          ("fc2", "vggish/fc2")]


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[samples] 16 kHz -> [1 + (samples - 400) // 160, 64] log mel (numpy, as mel_features)."""
    from layers.audio_frontend import mel_matrix  # HTK triangles, DC bin excluded: mel_features' construction

    x = np.asarray(wave, np.float64)
    if x.ndim != 1 or len(x) < WINDOW:
        raise ValueError(f"vggish.log_mel: need a 1-D clip of at least {WINDOW} samples, got {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    mag = np.abs(np.fft.rfft(frames * hann, FFT, axis=-1))
    mel = mag @ mel_matrix(NUM_BANDS, FFT // 2 + 1, SAMPLE_RATE, FMIN, FMAX).astype(np.float64)
    return np.log(mel + LOG_OFFSET).astype(np.float32)


def examples(spec: np.ndarray) -> np.ndarray:
    """[T, 64] -> [n, 96, 64] non-overlapping examples (at least one: a short clip is zero-padded)."""
    n = max(1, spec.shape[0] // EXAMPLE_FRAMES)
    if spec.shape[0] < EXAMPLE_FRAMES:
        spec = np.pad(spec, [(0, EXAMPLE_FRAMES - spec.shape[0]), (0, 0)], constant_values=np.log(LOG_OFFSET))
    return spec[: n * EXAMPLE_FRAMES].reshape(n, EXAMPLE_FRAMES, spec.shape[1])


class VGGish(nn.Module):
    """[B, 96, 64] log-mel examples -> [B, 128] embeddings."""

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        hi = jax.lax.Precision.HIGHEST
        for block in (("conv1",), ("conv2",), ("conv3_1", "conv3_2"), ("conv4_1", "conv4_2")):
            for name in block:
                x = nn.relu(nn.Conv(CHANNELS[name], (3, 3), padding="SAME", name=name, precision=hi)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape(x.shape[0], -1)  # NHWC row-major, as TF-Slim's flatten
        x = nn.relu(nn.Dense(4096, name="fc1_1", precision=hi)(x))
        x = nn.relu(nn.Dense(4096, name="fc1_2", precision=hi)(x))
        return nn.Dense(128, name="fc2", precision=hi)(x)


def convert(flat: dict[str, np.ndarray]) -> dict:
    """Released names ('vggish/conv1/weights', ...) -> Flax variables."""
    params = {}
    for ours, theirs in LAYERS:
        try:
            params[ours] = {"kernel": np.asarray(flat[f"{theirs}/weights"], np.float32),
                            "bias": np.asarray(flat[f"{theirs}/biases"], np.float32)}
        except KeyError as e:
            raise ValueError(f"VGGish checkpoint: no variable {e.args[0]!r} (is this vggish_model.ckpt?)") from None
    want = jax.eval_shape(VGGish().init, jax.random.key(0), jnp.zeros((1, EXAMPLE_FRAMES, NUM_BANDS)))["params"]
    for layer, leaves in want.items():
        for leaf, v in leaves.items():
            if params[layer][leaf].shape != v.shape:
                raise ValueError(f"VGGish checkpoint: {layer}/{leaf} has shape {params[layer][leaf].shape}, "
                                 f"VGGish needs {v.shape}")
    return {"params": params}


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """A TF checkpoint prefix (vggish_model.ckpt) or an .npz with the released names."""
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    import tensorflow as tf

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(path)
    except Exception as e:
        raise ValueError(f"{path}: cannot read a TF checkpoint: {e}") from None
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.startswith("vggish/")}


def pca(embeddings: np.ndarray, params_path: str) -> np.ndarray:
    """The released post-processing (vggish_pca_params.npz): PCA + clip to [-2, 2] (not quantised)."""
    with np.load(params_path) as z:
        vecs, means = z["pca_eigen_vectors"], z["pca_means"].reshape(1, -1)
    return np.clip((embeddings - means) @ vecs.T, -2.0, 2.0).astype(np.float32)


class VGGishEmbedder(Embedder):
    """Frame-level (0.96 s) 128-d VGGish embeddings."""

    def __init__(self, checkpoint: str, batch_size: int = 64):
        from trainer.batching import BatchedApply
        from trainer.partitioning import Partitioner

        if not checkpoint:
            raise ValueError("embedder 'vggish' needs the weights: vggish:/path/to/vggish_model.ckpt (or .npz)")
        if not (os.path.exists(checkpoint) or os.path.exists(checkpoint + ".index")):
            raise ValueError(f"vggish:{checkpoint}: no such checkpoint")
        variables = convert(read_checkpoint(checkpoint))
        digest = short_hash(variables["params"]["fc2"]["kernel"].tobytes())
        p = Partitioner()   # the batch over every device, the weights replicated
        self._apply = BatchedApply(VGGish().apply, jax.device_put(variables, p.replicated), p, batch_size)
        self.info = EmbedderInfo(name="vggish", sample_rate=SAMPLE_RATE, window=EXAMPLE_FRAMES * HOP,
                                 hop=EXAMPLE_FRAMES * HOP, level="frame", dim=128, fingerprint=f"vggish-{digest}")

    def embed_many(self, waves, progress=None):
        ex = [examples(log_mel(w)) for w in waves]
        if not ex:
            return []
        emb = self._apply(np.concatenate(ex).astype(np.float32))
        if progress:
            progress(len(waves))
        return [{"embeddings": e} for e in np.split(emb, np.cumsum([len(e) for e in ex])[:-1])]



def make(arg: str | None) -> VGGishEmbedder:
    """"vggish:/path/to/vggish_model.ckpt" (or an .npz with the released variable names)."""
    return VGGishEmbedder(arg)
