"""A trained MuLan run as an embedder: clip-level audio embeddings (the mean over its 10 s
windows) and text embeddings, for FAD and the MuLan similarity metrics.

    emb = make("runs/mulan_tiny")          # the command line's "mulan:runs/mulan_tiny"
"""
from __future__ import annotations

import os

from music_eval.embedders.base import Embedder, EmbedderInfo, short_hash


class MulanEmbedder(Embedder):
    def __init__(self, model_dir: str, step: int | None = None, use_ema: bool = True, batch_size: int = 32):
        from mulan.inference import Encoder

        self.enc = Encoder.from_run(model_dir, step=step, use_ema=use_ema, batch_size=batch_size)
        # The run, step and weights, and the checkpoint's time: a run re-trained into the same
        # folder does not reuse the old embeddings.
        stamp = f"{os.path.getmtime(self.enc.checkpoint):.0f}" if os.path.exists(self.enc.checkpoint) else ""
        self.info = EmbedderInfo(name="mulan", sample_rate=16000, window=self.enc.window, hop=self.enc.window,
                                 level="clip", dim=self.enc.dim,
                                 fingerprint=f"mulan-{short_hash(os.path.abspath(model_dir) + stamp)}"
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


def make(arg: str | None) -> MulanEmbedder:
    if not arg:
        raise ValueError("embedder 'mulan' needs a run: mulan:MODEL_DIR (or --mulan=MODEL_DIR)")
    return MulanEmbedder(arg)
