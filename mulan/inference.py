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
from typing import Callable, Iterable, Sequence

import jax
import numpy as np

from mulan.model import MulanModel, l2_normalize, windows
from trainer import model_dir as model_dir_lib
from trainer.model_dir import ModelDirError, latest_step  # noqa: F401 -- re-exported
from trainer.partitioning import Partitioner

log = logging.getLogger(__name__)


def model_from_config(config_path: str, bindings: Sequence[str] = ()) -> tuple[MulanModel, object]:
    """Parses a run's `config.gin` and builds its model; returns (model, logical axis rules)."""
    from mulan.train import CONFIGURABLES

    model, rules, _ = model_dir_lib.model_from_config(config_path, CONFIGURABLES, MulanModel, bindings)
    return model, rules


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
        from mulan.train import CONFIGURABLES

        run = model_dir_lib.load(model_dir, modules=CONFIGURABLES, expect=MulanModel, step=step, use_ema=use_ema,
                                 bindings=bindings)
        return cls(run.model, run.params, run.partitioner, batch_size, run.step, run.model_dir)

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
        from data.vocab import BertWordPieceVocabulary, batch_ids  # the vocabulary the task trained with

        if self._vocab is None:
            self._vocab = BertWordPieceVocabulary()
        return batch_ids(self._vocab, texts, self.model.text_length)

    def embed_texts(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """Texts -> L2-normalised [N, D]; texts longer than `text_length` tokens are truncated."""
        toks, mask = self.tokenize(list(texts))
        return self._batched(self._text, [toks, mask], progress)
