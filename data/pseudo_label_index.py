"""A built pseudo-label folder, in memory on every host: the runtime of inline matching.

The folder is what `python -m pseudo_labels.label` writes (docs/PAPERS.md §3):

    LABELS/embeddings/captions-*.npy + captions_index.jsonl   MuLan text embeddings of the bank
    LABELS/embeddings/tags-*.npy     + tags_index.jsonl       ... of the short-tag vocabulary
    LABELS/embeddings/clips-*.npy    + clips_index.jsonl      clip = mean over 10 s windows
    LABELS/counts.npz                                         selection frequency of every caption/tag
                                                              (+ their CSLS penalties, hubness='csls')
    LABELS/pseudo_labels.json                                 the settings (K, K', seed, hubness, model, sizes)
    LABELS/labels.jsonl                                       the export (per clip its K' captions...)

`PseudoLabeler` reads the embeddings, the counts and the settings (no model: the embeddings were
made by MuLan when the folder was built) and, for any batch of clip ids, finds each clip's exact
top-K captions and tags (`data.matching.BankIndex`) and draws K' of them with probability
inversely proportional to `counts`, seeded per clip (a clip's labels do not depend on its batch
or host).  The seqio preprocessor `data.preprocessors.MatchPseudoLabels` calls it inline.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np

from data import matching
from data.embedding_store import read_embeddings

CONFIG = "pseudo_labels.json"
HUBNESS = ("none", "csls")   # the top-K's score: cosine (the paper), or cosine minus half the CSLS penalty


class PseudoLabelError(ValueError):
    """A pseudo-label folder that is missing, stale or does not fit the request."""


def clip_key(clip_id: str) -> int:
    """A stable 63-bit key of a clip id (the per-clip seed of the draw)."""
    return int.from_bytes(hashlib.blake2b(clip_id.encode(), digest_size=8).digest(), "little") >> 1


class PseudoLabeler:
    """A built pseudo-label folder, in memory: the caption and tag banks (as `BankIndex`), the
    clip embeddings, and the selection counts.  Thread-safe; load once per process with `get`."""

    _cache: dict = {}
    _cache_lock = threading.Lock()

    def __init__(self, labels_dir: str, dtype: str = "float32", query_block: int = 1024):
        self.dir = os.path.abspath(labels_dir)
        cfg_path = os.path.join(self.dir, CONFIG)
        if not os.path.exists(cfg_path):
            raise PseudoLabelError(f"{cfg_path} is missing: build the folder with `python -m pseudo_labels.label "
                                   f"--out {self.dir}` (gin: PSEUDO_LABELS_DIR)")
        with open(cfg_path, encoding="utf-8") as f:
            self.config = json.load(f)
        emb = os.path.join(self.dir, "embeddings")
        self.caption_ids, cap, rows = read_embeddings(emb, "captions")
        self.caption_text = [r["text"] for r in rows]
        self.tag_ids, tag, rows = read_embeddings(emb, "tags")
        self.tag_text = [r["text"] for r in rows]
        clip_ids, self.clip_emb, _ = read_embeddings(emb, "clips")
        self.clip_row = {c: i for i, c in enumerate(clip_ids)}
        counts = np.load(os.path.join(self.dir, "counts.npz"))
        self.caption_counts, self.tag_counts = counts["captions"], counts["tags"]
        if len(self.caption_counts) != len(cap) or len(self.tag_counts) != len(tag):
            raise PseudoLabelError(f"{self.dir}/counts.npz does not match the embedded banks "
                                   f"({len(self.caption_counts)} vs {len(cap)} captions): re-run pseudo_labels.label")
        self.hubness = self.config.get("hubness", "none")
        if self.hubness not in HUBNESS:
            raise PseudoLabelError(f"{cfg_path}: hubness={self.hubness!r}, not one of {HUBNESS}")
        bias = {}
        for kind in ("captions", "tags"):
            if self.hubness == "csls":
                if f"{kind}_hubness" not in counts:
                    raise PseudoLabelError(f"{self.dir}/counts.npz has no {kind}_hubness, which hubness='csls' needs: "
                                           f"re-run pseudo_labels.label")
                bias[kind] = -counts[f"{kind}_hubness"] / 2
        self.captions = matching.BankIndex(cap, dtype=dtype, query_block=query_block, bias=bias.get("captions"))
        self.tags = matching.BankIndex(tag, dtype=dtype, query_block=query_block, bias=bias.get("tags"))
        self.k, self.tag_k = int(self.config["k"]), int(self.config["tag_k"])
        self.dtype = dtype

    @classmethod
    def get(cls, labels_dir: str, dtype: str = "float32") -> "PseudoLabeler":
        key = (os.path.abspath(labels_dir), dtype)
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(labels_dir, dtype)
            return cls._cache[key]

    def embeddings_of(self, clip_ids: list[str]) -> np.ndarray:
        try:
            return self.clip_emb[[self.clip_row[c] for c in clip_ids]]
        except KeyError as e:
            raise PseudoLabelError(f"clip {e.args[0]!r} has no embedding in {self.dir}/embeddings/clips_index.jsonl "
                                   f"(the corpus changed since pseudo_labels.label ran: re-run it)") from None

    def label(self, clip_ids: list[str], k_prime: int | None = None, tag_k_prime: int | None = None,
              seed: int | None = None) -> dict:
        """Exact top-K captions and tags of each clip and the inverse-frequency draw of K' of them:
        {caption_scores [Q, K], caption_top [Q, K], caption_pick [Q, K'], caption_pick_scores,
        tag_... alike} (bank row indices)."""
        k_prime = self.config["k_prime"] if k_prime is None else k_prime
        tag_k_prime = self.config["tag_k_prime"] if tag_k_prime is None else tag_k_prime
        seed = self.config["seed"] if seed is None else seed
        q = self.embeddings_of(clip_ids)
        keys = [clip_key(c) for c in clip_ids]
        out = {}
        for name, index, k, kp, counts, salt in (("caption", self.captions, self.k, k_prime, self.caption_counts, 0),
                                                 ("tag", self.tags, self.tag_k, tag_k_prime, self.tag_counts, 1)):
            scores, top = index.topk(q, k)
            pick = matching.inverse_frequency_draw(top, counts, kp, seed * 2 + salt, row_keys=keys)
            pos = np.argmax(top[:, :, None] == pick[:, None, :], axis=1)
            out.update({f"{name}_scores": scores, f"{name}_top": top, f"{name}_pick": pick,
                        f"{name}_pick_scores": np.take_along_axis(scores, pos, 1)})
        return out

    def options(self, clip_ids: list[str], max_tokens: int | None = None, count_tokens=None, **draw) -> tuple:
        """Training text options per clip: each drawn caption, and the drawn tags joined with ', '
        and chunked (at tag boundaries) to `max_tokens` as counted by `count_tokens`."""
        lab = self.label(clip_ids, **draw)
        opts = []
        for caps, tags in zip(lab["caption_pick"], lab["tag_pick"]):
            o = [self.caption_text[i] for i in caps]
            chunk: list[str] = []
            for t in (self.tag_text[i] for i in tags):
                if chunk and max_tokens and count_tokens(", ".join(chunk + [t])) > max_tokens:
                    o.append(", ".join(chunk))
                    chunk = []
                chunk.append(t)
            if chunk:
                o.append(", ".join(chunk))
            opts.append(o)
        return opts, lab
