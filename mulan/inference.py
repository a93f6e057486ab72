"""A trained MuLan, loaded from its model dir, with batched, mesh-sharded embedding functions.

    enc = Encoder.from_model_dir('/tmp/mulan_tiny')         # newest checkpoint, EMA weights if any
    a = enc.embed_audio_clips([wave_16k, ...])               # [N, 128], mean over 10 s windows
    t = enc.embed_texts(['solo piano', 'a jazz trio'])       # [N, 128]

The run's own `config.gin` (written by every training run) rebuilds the model; the parameters
come from the Orbax checkpoint by a partial restore (no optimizer state is read).  Batches are
split over all devices along the batch axis (parameters replicated or FSDP-sharded per the run's
rules); a short final batch is padded and the padding dropped.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np

from mulan.model import MulanModel, l2_normalize, windows
from trainer import checkpoints as ckpt_lib
from trainer.partitioning import Partitioner

log = logging.getLogger(__name__)


class ModelDirError(ValueError):
    """A model dir that cannot be loaded; the message names the file at fault."""


def latest_step(model_dir: str) -> int | None:
    d = os.path.join(model_dir, "checkpoints")
    if not os.path.isdir(d):
        return None
    steps = [int(n) for n in os.listdir(d) if n.isdigit() and os.path.isdir(os.path.join(d, n, "state"))]
    return max(steps) if steps else None


def model_from_config(config_path: str, bindings: Sequence[str] = ()) -> tuple[MulanModel, object]:
    """Parses a run's `config.gin` and builds its model; returns (model, logical axis rules)."""
    from trainer import main as trainer_main
    from mulan.train import CONFIGURABLES

    trainer_main.import_configurables(CONFIGURABLES)
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([config_path], list(bindings))
        model = gin.query_parameter("train.model").scoped_configurable_fn()
    except Exception as e:  # gin raises ValueError/KeyError with the binding at fault.
        raise ModelDirError(f"{config_path}: cannot rebuild the model ({type(e).__name__}: {e}).") from e
    try:
        rules = gin.query_parameter("Partitioner.logical_axis_rules")
    except ValueError:
        rules = None
    if not isinstance(model, MulanModel):
        raise ModelDirError(f"{config_path}: train.model is {type(model).__name__}, not a MulanModel.")
    return model, rules


def _has_ema() -> bool:
    """Whether the parsed run config kept EMA parameters."""
    try:
        return gin.query_parameter("train.ema_decay") is not None
    except ValueError:
        return False


class Encoder:
    """Embeds audio and text with a trained MuLan.  `params` are plain (unboxed) arrays."""

    def __init__(self, model: MulanModel, params, partitioner: Partitioner, batch_size: int = 32,
                 step: int | None = None, model_dir: str | None = None):
        n = partitioner.num_batch_shards
        self.batch_size = max(n, (batch_size + n - 1) // n * n)
        self.model, self.params, self.partitioner = model, params, partitioner
        self.step, self.model_dir = step, model_dir
        self._audio = jax.jit(model.embed_audio, out_shardings=partitioner.replicated)
        self._text = jax.jit(model.embed_text, out_shardings=partitioner.replicated)
        self._vocab = None

    @classmethod
    def from_model_dir(cls, model_dir: str, step: int | None = None, use_ema: bool = True,
                       batch_size: int = 32, bindings: Sequence[str] = ()) -> "Encoder":
        model_dir = os.path.abspath(model_dir)
        config = os.path.join(model_dir, "config.gin")
        if not os.path.exists(config):
            raise ModelDirError(f"{config}: missing (is --model_dir a MuLan training run's directory?).")
        step = latest_step(model_dir) if step is None else step
        if step is None:
            raise ModelDirError(f"{model_dir}/checkpoints: no complete checkpoint to load.")
        model, rules = model_from_config(config, bindings)
        partitioner = Partitioner(mesh_shape=(1, -1, 1), **({"logical_axis_rules": rules} if rules else {}))
        with partitioner.activate():
            boxed = jax.eval_shape(lambda r: model.init_params(r, model.dummy_batch(1)), jax.random.PRNGKey(0))
        shardings = partitioner.logical_to_sharding(nn.get_partition_spec(boxed))
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                nn.meta.unbox(boxed), shardings)
        step_dir = os.path.join(model_dir, "checkpoints", str(step))
        restored, which = None, "params"
        if use_ema and _has_ema():
            restored, which = ckpt_lib.restore_params(step_dir, abstract, key="ema_params"), "EMA params"
        if restored is None:
            restored = ckpt_lib.restore_params(step_dir, abstract, key="params")
        log.info("loaded %s step %d (%s)", model_dir, step, which)
        return cls(model, restored, partitioner, batch_size, step, model_dir)

    # -- batching ------------------------------------------------------------------
    def _batched(self, fn: Callable, arrays: list[np.ndarray], progress: Callable[[int], None] | None):
        n = len(arrays[0])
        out = []
        with self.partitioner.activate():
            for s in range(0, n, self.batch_size):
                chunk = [a[s:s + self.batch_size] for a in arrays]
                k = len(chunk[0])
                if k < self.batch_size:
                    chunk = [np.concatenate([c, np.zeros((self.batch_size - k, *c.shape[1:]), c.dtype)]) for c in chunk]
                batch = [jax.device_put(c, self.partitioner.batch_sharding(c.ndim)) for c in chunk]
                out.append(np.asarray(fn(self.params, *batch))[:k])
                if progress:
                    progress(k)
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.params["audio_tower"]["projection"]["kernel"].shape[-1])

    @property
    def window(self) -> int:
        return self.model.audio_samples

    # -- audio ---------------------------------------------------------------------
    def embed_audio_windows(self, wins: np.ndarray, progress=None) -> np.ndarray:
        """[N, window] -> L2-normalised [N, D]."""
        return self._batched(self._audio, [np.asarray(wins, np.float32)], progress)

    def embed_audio_clips(self, clips: Iterable[np.ndarray], progress=None) -> np.ndarray:
        """Clips of any length (16 kHz mono) -> [N, D]: the mean over non-overlapping windows of
        `audio_samples` (a clip shorter than one window is zero-padded), re-normalised."""
        clips = list(clips)
        wins = [windows(c, self.window) for c in clips]
        counts = [len(w) for w in wins]
        if not clips:
            return np.zeros((0, self.dim), np.float32)
        emb = self.embed_audio_windows(np.concatenate(wins), progress)
        means = np.stack([m.mean(0) for m in np.split(emb, np.cumsum(counts)[:-1])])
        return np.asarray(l2_normalize(means))

    # -- text ----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """WordPiece ids [N, text_length] ([CLS] ... [SEP], truncated) and mask [N, text_length]."""
        if self._vocab is None:
            from data.vocab import BertWordPieceVocabulary  # the vocabulary the task trained with

            self._vocab = BertWordPieceVocabulary()
        v, length = self._vocab, self.model.text_length
        toks = np.zeros((len(texts), length), np.int32)
        mask = np.zeros((len(texts), length), np.int32)
        for i, t in enumerate(texts):
            ids = [v.cls_id] + list(v.encode(t))[: length - 2] + [v.eos_id]
            toks[i, :len(ids)] = ids
            mask[i, :len(ids)] = 1
        return toks, mask

    def embed_texts(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """Texts -> L2-normalised [N, D]; texts longer than `text_length` tokens are truncated."""
        toks, mask = self.tokenize(list(texts))
        return self._batched(self._text, [toks, mask], progress)
