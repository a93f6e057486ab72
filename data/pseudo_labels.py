"""`python -m data.pseudo_labels --model_dir=MULAN --bank=BANK --corpus=CORPUS --out=LABELS`.

Pseudo-labelling (SPEC.md §3): every clip of a corpus gets captions written for *other* songs,
chosen by MuLan.  This binary computes, once, what the inline seqio matcher needs, and exports the
labelled set:

    LABELS/embeddings/captions-*.npy + captions_index.jsonl   MuLan text embeddings of the bank
    LABELS/embeddings/tags-*.npy     + tags_index.jsonl       ... of the short-tag vocabulary
    LABELS/embeddings/clips-*.npy    + clips_index.jsonl      clip = mean over 10 s windows
    LABELS/counts.npz                                         selection frequency of every caption/tag
                                                              (the one counting pass over all clips)
    LABELS/pseudo_labels.json                                 the settings (K, K', seed, model, sizes)
    LABELS/labels.jsonl                                       the export, like MuLaMCap: per clip its
                                                              K' captions and tags with scores, and
                                                              the top-K it drew them from

Embeddings are reused when the model step, the bank and the corpus are unchanged (`--recompute`
forces).  The seqio side (`MatchPseudoLabels`, used by the task `n2m_pseudo_labels`) loads this
folder once per host and matches each batch of clips exactly (`data.matching.BankIndex`), then
draws K' of the top K with probability inversely proportional to `counts` (per clip seeded: a
clip's labels do not depend on its batch or host).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time

import numpy as np

from data import matching

CONFIG = "pseudo_labels.json"


class PseudoLabelError(ValueError):
    """A pseudo-label folder that is missing, stale or does not fit the request."""


def clip_key(clip_id: str) -> int:
    """A stable 63-bit key of a clip id (the per-clip seed of the draw)."""
    return int.from_bytes(hashlib.blake2b(clip_id.encode(), digest_size=8).digest(), "little") >> 1


def _file_fingerprint(path: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PseudoLabeler:
    """A built pseudo-label folder, in memory: the caption and tag banks (as `BankIndex`), the
    clip embeddings, and the selection counts.  Thread-safe; load once per process with `get`."""

    _cache: dict = {}
    _cache_lock = threading.Lock()

    def __init__(self, labels_dir: str, dtype: str = "float32", query_block: int = 1024):
        from mulan.embed import read_embeddings

        self.dir = os.path.abspath(labels_dir)
        cfg_path = os.path.join(self.dir, CONFIG)
        if not os.path.exists(cfg_path):
            raise PseudoLabelError(f"{cfg_path} is missing: build the folder with `python -m data.pseudo_labels "
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
                                   f"({len(self.caption_counts)} vs {len(cap)} captions): re-run data.pseudo_labels")
        self.captions = matching.BankIndex(cap, dtype=dtype, query_block=query_block)
        self.tags = matching.BankIndex(tag, dtype=dtype, query_block=query_block)
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
                                   f"(the corpus changed since data.pseudo_labels ran: re-run it)") from None

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


# ----------------------------------------------------------------------------------------------
# Building the folder
# ----------------------------------------------------------------------------------------------

def _fresh(emb_dir: str, kind: str, want: dict) -> bool:
    path = os.path.join(emb_dir, f"{kind}_fingerprint.json")
    if not os.path.exists(path) or not os.path.exists(os.path.join(emb_dir, f"{kind}_index.jsonl")):
        return False
    with open(path, encoding="utf-8") as f:
        return json.load(f) == want


def _mark(emb_dir: str, kind: str, want: dict):
    with open(os.path.join(emb_dir, f"{kind}_fingerprint.json"), "w", encoding="utf-8") as f:
        json.dump(want, f)


def build(model_dir: str, bank_dir: str, corpus_dir: str, out: str, *, k: int = 10, k_prime: int = 3,
          tag_k: int = 10, tag_k_prime: int = 6, seed: int = 0, dtype: str = "float32", step: int | None = None,
          batch_size: int = 32, recompute: bool = False, progress: bool = True) -> dict:
    from mulan.embed import embed_audio_to, embed_texts_to, read_embeddings
    from mulan.evaluate import read_manifest
    from mulan.inference import Encoder

    from data.captions import read_bank

    t0 = time.perf_counter()
    out = os.path.abspath(out)
    emb_dir = os.path.join(out, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    captions, tags = read_bank(bank_dir)
    if len(captions) < k or len(tags) < tag_k:
        raise PseudoLabelError(f"--bank={bank_dir}: {len(captions)} captions / {len(tags)} tags, fewer than "
                               f"--k={k} / --tag_k={tag_k}")
    manifest = os.path.join(corpus_dir, "manifest.jsonl")
    rows = read_manifest(manifest)
    enc = Encoder.from_model_dir(model_dir, step, batch_size=batch_size)
    model = {"model_dir": enc.model_dir, "step": enc.step}
    timings = {}
    for kind, items, src in (("captions", captions, os.path.join(bank_dir, "captions.jsonl")),
                             ("tags", tags, os.path.join(bank_dir, "tags.jsonl"))):
        want = {**model, "source": os.path.abspath(src), "fingerprint": _file_fingerprint(src)}
        if recompute or not _fresh(emb_dir, kind, want):
            t = time.perf_counter()
            embed_texts_to(enc, emb_dir, [c["id"] for c in items], [c["text"] for c in items], kind=kind,
                           progress=progress)
            _mark(emb_dir, kind, want)
            timings[f"embed_{kind}_s"] = round(time.perf_counter() - t, 1)
    want = {**model, "source": os.path.abspath(manifest), "fingerprint": _file_fingerprint(manifest)}
    failures = []
    if recompute or not _fresh(emb_dir, "clips", want):
        t = time.perf_counter()
        _, failures = embed_audio_to(enc, emb_dir, [{"id": r["clip_id"], "path": r["_path"]} for r in rows],
                                     kind="clips", progress=progress)
        _mark(emb_dir, "clips", want)
        timings["embed_clips_s"] = round(time.perf_counter() - t, 1)
        with open(os.path.join(emb_dir, "clips_failures.jsonl"), "w", encoding="utf-8") as f:
            for r in failures:
                f.write(json.dumps(r) + "\n")

    # The one counting pass: every clip's top K, once.
    t = time.perf_counter()
    clip_ids, clip_emb, _ = read_embeddings(emb_dir, "clips")
    counts = {}
    for kind, kk in (("captions", k), ("tags", tag_k)):
        _, bank, _ = read_embeddings(emb_dir, kind)
        _, top = matching.BankIndex(bank, dtype=dtype).topk(clip_emb, kk)
        counts[kind] = matching.selection_counts(top, len(bank))
    np.savez(os.path.join(out, "counts.npz.tmp.npz"), **counts)
    os.replace(os.path.join(out, "counts.npz.tmp.npz"), os.path.join(out, "counts.npz"))
    timings["count_s"] = round(time.perf_counter() - t, 1)
    config = {"k": k, "k_prime": k_prime, "tag_k": tag_k, "tag_k_prime": tag_k_prime, "seed": seed, **model,
              "bank_dir": os.path.abspath(bank_dir), "corpus_dir": os.path.abspath(corpus_dir),
              "captions": len(captions), "tags": len(tags), "clips": len(clip_ids)}
    with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)

    t = time.perf_counter()
    summary = export(out, dtype=dtype, rows=rows, captions=captions, progress=progress)
    timings["export_s"] = round(time.perf_counter() - t, 1)
    summary.update(config=config, clip_failures=len(failures), seconds=round(time.perf_counter() - t0, 1), **timings)
    return summary


def export(labels_dir: str, dtype: str = "float32", rows: list[dict] | None = None,
           captions: list[dict] | None = None, progress: bool = True, batch: int = 1024) -> dict:
    """Writes LABELS/labels.jsonl (one clip per line, like MuLaMCap) and returns its statistics."""
    from tqdm import tqdm

    lab = PseudoLabeler(labels_dir, dtype)
    meta = {r["clip_id"]: r for r in (rows or [])}
    song_of = {c["id"]: c.get("song_id", "") for c in (captions or [])}
    ids = list(lab.clip_row)
    top1, self_match, picked = [], 0, np.zeros(len(lab.caption_ids), bool)
    path = os.path.join(lab.dir, "labels.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as f, \
            tqdm(total=len(ids), desc="export labels", unit="clip", file=sys.stderr, disable=not progress) as bar:
        for s in range(0, len(ids), batch):
            chunk = ids[s:s + batch]
            r = lab.label(chunk)
            for i, cid in enumerate(chunk):
                m = meta.get(cid, {})
                caps = [{"id": lab.caption_ids[j], "text": lab.caption_text[j], "score": round(float(sc), 5),
                         "song_id": song_of.get(lab.caption_ids[j], "")}
                        for j, sc in zip(r["caption_pick"][i], r["caption_pick_scores"][i])]
                self_match += sum(c["song_id"] == m.get("work_id") for c in caps)
                picked[r["caption_pick"][i]] = True
                f.write(json.dumps({
                    "clip_id": cid, "work_id": m.get("work_id", ""), "split": m.get("split", ""),
                    "captions": caps,
                    "tags": [{"id": lab.tag_ids[j], "text": lab.tag_text[j], "score": round(float(sc), 5)}
                             for j, sc in zip(r["tag_pick"][i], r["tag_pick_scores"][i])],
                    "top_k": [[lab.caption_ids[j], round(float(sc), 5)]
                              for j, sc in zip(r["caption_top"][i], r["caption_scores"][i])],
                }, ensure_ascii=False) + "\n")
            top1.extend(r["caption_scores"][:, 0].tolist())
            bar.update(len(chunk))
    os.replace(path + ".tmp", path)
    c = np.sort(lab.caption_counts)[::-1]
    share = float(c[: max(1, len(c) // 100)].sum() / max(1, c.sum()))
    return {"labels": path, "clips": len(ids), "captions": len(lab.caption_ids), "tags": len(lab.tag_ids),
            "mean_top1_cosine": round(float(np.mean(top1)) if top1 else 0.0, 4),
            "bank_selected_in_top_k": round(float((lab.caption_counts > 0).mean()), 4),
            "bank_picked": round(float(picked.mean()), 4),
            "top1pct_captions_share_of_selections": round(share, 4),
            "max_selection_count": int(c[0]) if len(c) else 0,
            "own_song_caption_rate": round(self_match / max(1, len(ids) * lab.config["k_prime"]), 4)}


def main(argv: list[str] | None = None) -> dict:
    from trainer.main import setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", required=True, help="a trained MuLan run")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--bank", required=True, help="a caption bank built by data.captions")
    ap.add_argument("--corpus", default=None, help="the corpus to label (default: the demo corpus)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--k_prime", type=int, default=3)
    ap.add_argument("--tag_k", type=int, default=10)
    ap.add_argument("--tag_k_prime", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--recompute", action="store_true", help="re-embed even when nothing changed")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)
    from mulan.inference import ModelDirError
    from trainer.checkpoints import CheckpointRestoreError

    for name, v, lo in (("k", args.k, 1), ("tag_k", args.tag_k, 1)):
        if v < lo:
            ap.error(f"--{name} must be >= {lo}")
    if not 0 < args.k_prime <= args.k or not 0 < args.tag_k_prime <= args.tag_k:
        ap.error("need 0 < --k_prime <= --k and 0 < --tag_k_prime <= --tag_k")
    try:
        if args.corpus is None:
            from data import paths

            args.corpus = paths.corpus_dir()
        s = build(args.model_dir, args.bank, args.corpus, args.out, k=args.k, k_prime=args.k_prime, tag_k=args.tag_k,
                  tag_k_prime=args.tag_k_prime, seed=args.seed, dtype=args.dtype, step=args.step,
                  batch_size=args.batch_size, recompute=args.recompute, progress=not args.no_progress)
    except (PseudoLabelError, ModelDirError, CheckpointRestoreError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"pseudo-labelled {s['clips']} clips with {s['captions']} captions and {s['tags']} tags "
          f"(mean top-1 cosine {s['mean_top1_cosine']}): {s['labels']}", file=sys.stderr)
    print(json.dumps(s), flush=True)
    return s


if __name__ == "__main__":
    main()
