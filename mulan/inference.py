"""A trained MuLan, loaded from its model dir, with batched, mesh-sharded embedding functions.

    enc = Encoder.from_run('/tmp/mulan_tiny')                # newest checkpoint, EMA weights if any
    a = enc.embed_audio_clips([wave_16k, ...])               # [N, 128], mean over 10 s windows
    t = enc.embed_texts(['solo piano', 'a jazz trio'])       # [N, 128]

The run's own `config.gin` (written by every training run) rebuilds the model; the parameters
come from the Orbax checkpoint by a partial restore (`trainer.restore`: no optimizer state is
read).  Batches are split over this process's devices along the batch axis (`trainer.batching`; parameters
FSDP-sharded per the run's rules); a short final batch is padded and the padding dropped.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

from mulan.model import MulanModel, l2_normalize, windows
from trainer import restore
from trainer.batching import BatchedApply
from trainer.partitioning import Partitioner

log = logging.getLogger(__name__)


class Encoder:
    """Embeds audio and text with a trained MuLan.  `params` are plain (unboxed) arrays."""

    def __init__(self, model: MulanModel, params, partitioner: Partitioner, batch_size: int = 32,
                 step: int | None = None, model_dir: str | None = None, checkpoint: str | None = None):
        self.model, self.params, self.partitioner = model, params, partitioner
        self.step, self.model_dir, self.checkpoint = step, model_dir, checkpoint
        self._audio = BatchedApply(model.embed_audio, params, partitioner, batch_size)
        self._text = BatchedApply(model.embed_text, params, partitioner, batch_size)
        self.batch_size = self._audio.batch_size
        self._vocab = None

    @classmethod
    def from_run(cls, model_dir: str, step: int | None = None, use_ema: bool = True,
                 batch_size: int = 32, bindings: Sequence[str] = ()) -> "Encoder":
        import jax

        # This process's devices: each host of a multi-host job embeds its own inputs.
        run = restore.load(model_dir, expect=MulanModel, step=step, use_ema=use_ema, bindings=bindings,
                           devices=jax.local_devices())
        return cls(run.model, run.params, run.partitioner, batch_size, run.step, run.model_dir, run.checkpoint)

    @property
    def dim(self) -> int:
        return int(self.params["audio_tower"]["projection"]["kernel"].shape[-1])

    @property
    def window(self) -> int:
        return self.model.audio_samples

    # -- audio ---------------------------------------------------------------------
    def embed_audio_windows(self, wins: np.ndarray, progress=None) -> np.ndarray:
        """[N, window] -> L2-normalised [N, D]."""
        if not len(wins):
            return np.zeros((0, self.dim), np.float32)
        return self._audio(np.asarray(wins, np.float32), progress=progress)

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

    def embed_audio_stream(self, blocks: Iterable[np.ndarray], batch: int = 64) -> tuple[np.ndarray, int, int]:
        """A clip given as consecutive blocks (`data.audio.stream_audio`: memory bounded by a
        block) -> ([D], samples, windows): what `embed_audio_clips` gives for the whole clip, its
        windows embedded `batch` at a time and averaged as they come."""
        rest, pending, total, n, samples = np.zeros(0, np.float32), [], None, 0, 0

        def flush():
            nonlocal total
            if pending:
                s = self.embed_audio_windows(np.stack(pending)).sum(0)
                total = s if total is None else total + s
                pending.clear()

        for b in blocks:
            samples += len(b)
            rest = np.concatenate([rest, b])
            while len(rest) >= self.window:
                pending.append(rest[:self.window])
                rest, n = rest[self.window:], n + 1
                if len(pending) == batch:
                    flush()
        if n == 0:                                  # shorter than one window: zero-padded, as windows() does
            pending.append(windows(rest, self.window)[0])
            n = 1
        flush()
        return np.asarray(l2_normalize(total / n)), samples, n

    # -- text ----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """WordPiece ids [N, text_length] ([CLS] ... [SEP], truncated) and mask [N, text_length]."""
        from data.vocab import BertWordPieceVocabulary, batch_ids

        if self._vocab is None:   # the vocabulary the run's task tokenized with
            self._vocab = self.model.vocabulary or BertWordPieceVocabulary()
        return batch_ids(self._vocab, texts, self.model.text_length)

    def embed_texts(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """Texts -> L2-normalised [N, D]; texts longer than `text_length` tokens are truncated."""
        toks, mask = self.tokenize(list(texts))
        if not len(toks):
            return np.zeros((0, self.dim), np.float32)
        return self._text(toks, mask, progress=progress)
