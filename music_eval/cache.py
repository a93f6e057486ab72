"""Embeddings of evaluated audio, cached on disk by the embedder's fingerprint and the audio's
content (a re-run embeds only audio it has not seen).

    cache = EmbeddingCache("out/cache")            # None: no cache
    outs = cache.embed(embedder, waves, "generated")
"""
from __future__ import annotations

import hashlib
import logging
import os
import time

import numpy as np

log = logging.getLogger("music_eval.evaluate")


class EmbeddingCache:
    def __init__(self, root: str | None):
        self.root = root
        self.hits = self.misses = 0

    def _path(self, emb, wave: np.ndarray) -> str:
        h = hashlib.sha1(np.ascontiguousarray(wave, np.float32).tobytes()).hexdigest()
        return os.path.join(self.root, emb.info.fingerprint, h[:2], h + ".npz")

    def embed(self, emb, waves: list[np.ndarray], label: str, chunk: int = 16) -> list[dict]:
        out: list[dict | None] = [None] * len(waves)
        todo = []
        for i, w in enumerate(waves):
            p = self._path(emb, w) if self.root else None
            if p and os.path.exists(p):
                try:
                    with np.load(p) as z:
                        out[i] = {k: z[k] for k in z.files}
                    self.hits += 1
                    continue
                except Exception:  # a torn cache file: embed again
                    pass
            todo.append(i)
        self.misses += len(todo)
        t0 = time.time()
        for s in range(0, len(todo), chunk):
            idx = todo[s:s + chunk]
            for i, res in zip(idx, emb.embed_many([waves[i] for i in idx])):
                out[i] = res
                if self.root:
                    p = self._path(emb, waves[i])
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    np.savez(p + ".tmp.npz", **res)
                    os.replace(p + ".tmp.npz", p)
            log.info("%s: %s %d/%d clips embedded (%d cached) %.0fs", emb.info.name, label,
                     min(s + chunk, len(todo)), len(todo), len(waves) - len(todo), time.time() - t0)
        return out


