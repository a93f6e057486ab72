"""Audio embedders for evaluation, behind one interface.

    emb = embedders.make("musicnn")                  # MTT musicnn from the installed wheel (frame-level)
    emb = embedders.make("mulan:runs/mulan_tiny")    # a trained MuLan (clip-level, has a text tower)
    emb.info                  # EmbedderInfo(name, sample_rate, window, hop, level, dim, fingerprint)
    outs = emb.embed_many([wave, ...])               # per clip {'embeddings': [n, dim], 'tags'?: [n, C]}

An embedder takes clips at `info.sample_rate` (the caller resamples) and returns, per clip, one
embedding per window (`level='frame'`: e.g. musicnn's 3 s patches, VGGish's 0.96 s frames) or one
per clip (`level='clip'`: MuLan's mean over 10 s windows).  `fingerprint` names the weights and
settings, so cached embeddings are reused only for the same model.  Taggers also return `tags`
(scores for `tag_names`); joint audio-text models implement `embed_texts`.

Adding a model (VGGish, TRILL, CLAP, ...) for which you have weights is a converter away: write the
network (or reuse one) and a function that reads the weights into its parameters, subclass
`Embedder`, and register a factory:

    @embedders.register("vggish")
    def _vggish(arg):                     # arg: the text after "vggish:" on the command line
        return MyVggish(checkpoint=arg)

or, without touching this package, name it on the command line as `package.module:factory[:arg]`
(`noise2music.evaluate --embedders=musicnn,mulan,my_pkg.vggish:make:/ckpt/vggish`).
`noise2music/musicnn.py` is the worked example: a Flax port, a TF-checkpoint converter and a test
against the original network.  `noise2music/vggish.py` is a second one, registered as
`vggish:/path/to/vggish_model.ckpt`, for users who have VGGish's released weights.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmbedderInfo:
    name: str           # short name: a metric's column ("fad_musicnn")
    sample_rate: int    # the rate clips must be given at
    window: int         # samples per embedding
    hop: int            # samples between embeddings (== window: non-overlapping)
    level: str          # 'frame' (many per clip) or 'clip' (one per clip)
    dim: int
    fingerprint: str    # weights + settings, for the embedding cache


class Embedder(abc.ABC):
    info: EmbedderInfo
    tag_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def embed_many(self, waves: Sequence[np.ndarray], progress: Callable[[int], None] | None = None) -> list[dict]:
        """Clips (float32 mono at `info.sample_rate`) -> per clip {'embeddings': [n, dim], 'tags'?}."""

    @property
    def has_text(self) -> bool:
        return False

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError(f"{self.info.name} has no text tower")


class BatchedApply:
    """`fn(variables, x)` for any number of rows: jitted with the batch split over every device and
    the variables replicated, run in fixed-size batches (a multiple of the batch shards; the last
    one zero-padded, so one program serves every call), outputs (any pytree) back as numpy."""

    def __init__(self, fn: Callable, variables, batch_size: int = 64):
        import jax

        from trainer.partitioning import Partitioner

        self.partitioner = p = Partitioner()  # ('data', 'fsdp', 'tensor') = (1, all devices, 1)
        n = p.num_batch_shards
        self.batch_size = max(n, -(-batch_size // n) * n)
        self.variables = jax.device_put(variables, p.replicated)
        self._fn, self._jitted = fn, {}

    def __call__(self, x: np.ndarray):
        import jax

        x = np.asarray(x, np.float32)
        if x.ndim not in self._jitted:
            p = self.partitioner
            self._jitted[x.ndim] = jax.jit(self._fn, in_shardings=(p.replicated, p.batch_sharding(x.ndim)),
                                           out_shardings=p.replicated)
        fn, b, outs = self._jitted[x.ndim], self.batch_size, []
        for s in range(0, len(x), b):
            chunk = x[s:s + b]
            k = len(chunk)
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k, *chunk.shape[1:]), np.float32)])
            outs.append(jax.tree.map(lambda v, k=k: np.asarray(v)[:k], fn(self.variables, chunk)))
        return jax.tree.map(lambda *v: np.concatenate(v), *outs)


class MusicnnEmbedder(Embedder):
    """musicnn: 3 s patches (16 kHz) -> a `layer` embedding per patch (default the 200-d
    penultimate layer) and the 50 tag scores."""

    LAYERS = ("penultimate", "mean_pool", "max_pool")

    def __init__(self, model: str = "MTT_musicnn", layer: str = "penultimate", checkpoint: str | None = None):
        from noise2music import musicnn

        if layer not in self.LAYERS:
            raise ValueError(f"musicnn layer {layer!r}: choose one of {self.LAYERS}")
        self.net = musicnn.Musicnn.load(model, checkpoint)
        self.layer, self._m = layer, musicnn
        dim = {"penultimate": 200}.get(layer, 753)
        digest = musicnn.package_checkpoint(model) if checkpoint is None else checkpoint
        # "musicnn" for the default (MTT, penultimate); others are named apart, so both can be columns.
        name = "musicnn" + ("" if model == "MTT_musicnn" else "_" + model.split("_")[0].lower()) + \
            ("" if layer == "penultimate" else f"_{layer}")
        self.info = EmbedderInfo(name=name, sample_rate=musicnn.SAMPLE_RATE,
                                 window=musicnn.PATCH_FRAMES * musicnn.HOP, hop=musicnn.PATCH_FRAMES * musicnn.HOP,
                                 level="frame", dim=dim, fingerprint=f"musicnn-{model}-{layer}-{_short_hash(digest)}")
        self.tag_names = tuple(self.net.labels)

    def embed_many(self, waves, progress=None):
        pats = [self._m.patches(self._m.log_mel(w)) for w in waves]
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


class MulanEmbedder(Embedder):
    """A trained MuLan run: clip-level audio embeddings (mean over its windows) and text embeddings."""

    def __init__(self, model_dir: str, step: int | None = None, use_ema: bool = True, batch_size: int = 32):
        import os

        from mulan.inference import Encoder

        self.enc = Encoder.from_model_dir(model_dir, step=step, use_ema=use_ema, batch_size=batch_size)
        # The run, step and weights, and the checkpoint's time: a run re-trained into the same
        # folder does not reuse the old embeddings.
        ckpt = os.path.join(model_dir, "checkpoints", str(self.enc.step))
        stamp = f"{os.path.getmtime(ckpt):.0f}" if os.path.exists(ckpt) else ""
        self.info = EmbedderInfo(name="mulan", sample_rate=16000, window=self.enc.window, hop=self.enc.window,
                                 level="clip", dim=self.enc.dim,
                                 fingerprint=f"mulan-{_short_hash(os.path.abspath(model_dir) + stamp)}"
                                             f"-step{self.enc.step}-{'ema' if use_ema else 'raw'}")

    def embed_many(self, waves, progress=None):
        if not waves:
            return []
        emb = self.enc.embed_audio_clips(list(waves), progress=None)
        if progress:
            progress(len(waves))
        return [{"embeddings": e[None]} for e in emb]

    @property
    def has_text(self) -> bool:
        return True

    def embed_texts(self, texts):
        return self.enc.embed_texts(list(texts))


def _short_hash(s: str) -> str:
    import hashlib

    return hashlib.sha1(s.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[[str | None], Embedder]] = {}


def register(name: str):
    def deco(fn):
        _FACTORIES[name] = fn
        return fn
    return deco


@register("musicnn")
def _musicnn(arg):
    # "musicnn", "musicnn:MSD_musicnn", "musicnn:MTT_musicnn:max_pool"
    model, _, layer = (arg or "MTT_musicnn").partition(":")
    return MusicnnEmbedder(model or "MTT_musicnn", layer or "penultimate")


@register("mulan")
def _mulan(arg):
    if not arg:
        raise ValueError("embedder 'mulan' needs a run: mulan:MODEL_DIR (or --mulan=MODEL_DIR)")
    return MulanEmbedder(arg)


@register("vggish")
def _vggish(arg):
    # "vggish:/path/to/vggish_model.ckpt" (or an .npz with the released variable names)
    from noise2music.vggish import VGGishEmbedder

    return VGGishEmbedder(arg)


def names() -> list[str]:
    return sorted(_FACTORIES)


def make(spec: str) -> Embedder:
    """'name[:arg]' for a registered embedder, or 'package.module:factory[:arg]' for a plug-in."""
    name, _, arg = spec.partition(":")
    if name in _FACTORIES:
        return _FACTORIES[name](arg or None)
    if "." in name:
        fn_name, _, arg = arg.partition(":")
        try:
            fn = getattr(importlib.import_module(name), fn_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"embedder {spec!r}: cannot import {name}:{fn_name} ({e})") from None
        emb = fn(arg or None)
        if not isinstance(emb, Embedder):
            raise ValueError(f"embedder {spec!r}: {name}:{fn_name} returned {type(emb).__name__}, not an Embedder")
        return emb
    raise ValueError(f"unknown embedder {name!r}; registered: {names()}, or give package.module:factory[:arg]")
