"""Building a pseudo-label folder with a trained MuLan (docs/PAPERS.md §3), and its export.

    summary = build(mulan_run, bank_dir, corpus_dir, out)     # what `python -m pseudo_labels.label` runs

1. MuLan text embeddings of the caption bank and of the short-tag vocabulary, and MuLan audio
   embeddings of every clip of the corpus (mean over 10 s windows), into `OUT/embeddings/`
   (`data.embedding_store`); reused while the model step, the bank and the corpus are unchanged
   (`recompute=True` forces).
2. The one counting pass: every clip's exact top-K captions and tags, and how often each is
   chosen (`OUT/counts.npz`); the settings in `OUT/pseudo_labels.json`.  With `hubness='csls'`
   each caption's and tag's CSLS penalty (its mean cosine to its `hubness_k` nearest clips,
   `data.matching.hubness`) is computed first, saved beside the counts, and every top-K (here
   and inline) ranks by cosine minus half of it; the paper's recipe is `hubness='none'`.
3. `export`: `OUT/labels.jsonl`, like MuLaMCap: per clip its K' drawn captions and tags with their
   scores and the top-K they came from, by the same runtime the seqio task uses inline
   (`data.pseudo_label_index.PseudoLabeler`), and the statistics of the labelled set.

The folder layout is `data.pseudo_label_index`'s.

On a pod every worker runs the same command (`trainer.multihost.initialize`), with an `OUT` all
hosts see: each process embeds its block of the captions, tags and clips (`mulan.embedding`),
counts the selections of its block of clips, and the counts are summed over the hosts; process 0
writes the settings and the export.  The folder equals a one-process build's.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import jax
import numpy as np

from data import matching
from data.embedding_store import read_embeddings
from data.manifest import read_manifest
from data.pseudo_label_index import CONFIG, HUBNESS, PseudoLabeler, PseudoLabelError
from mulan.embedding import embed_audio_to, embed_texts_to
from mulan.inference import Encoder
from pseudo_labels.bank import read_bank
from trainer import multihost


def _file_fingerprint(path: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fresh(emb_dir: str, kind: str, want: dict) -> bool:
    path = os.path.join(emb_dir, f"{kind}_fingerprint.json")
    if not os.path.exists(path) or not os.path.exists(os.path.join(emb_dir, f"{kind}_index.jsonl")):
        return False
    with open(path, encoding="utf-8") as f:
        return json.load(f) == want


def _mark(emb_dir: str, kind: str, want: dict):
    if not multihost.is_primary():
        return
    with open(os.path.join(emb_dir, f"{kind}_fingerprint.json"), "w", encoding="utf-8") as f:
        json.dump(want, f)


def build(model_dir: str, bank_dir: str, corpus_dir: str, out: str, *, k: int = 10, k_prime: int = 3,
          tag_k: int = 10, tag_k_prime: int = 6, seed: int = 0, dtype: str = "float32", step: int | None = None,
          batch_size: int = 32, recompute: bool = False, progress: bool = True, hubness: str = "none",
          hubness_k: int = 10) -> dict:
    t0 = time.perf_counter()
    if hubness not in HUBNESS:
        raise PseudoLabelError(f"--hubness={hubness!r}: one of {HUBNESS}")
    out = os.path.abspath(out)
    emb_dir = os.path.join(out, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    captions, tags = read_bank(bank_dir)
    if len(captions) < k or len(tags) < tag_k:
        raise PseudoLabelError(f"--bank={bank_dir}: {len(captions)} captions / {len(tags)} tags, fewer than "
                               f"--k={k} / --tag_k={tag_k}")
    manifest = os.path.join(corpus_dir, "manifest.jsonl")
    rows = read_manifest(manifest)
    enc = Encoder.from_run(model_dir, step, batch_size=batch_size)
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
        if multihost.is_primary():
            with open(os.path.join(emb_dir, "clips_failures.jsonl"), "w", encoding="utf-8") as f:
                for r in failures:
                    f.write(json.dumps(r) + "\n")
    multihost.sync("pseudo-labels: embeddings marked")

    # The one counting pass: every clip's top K, once (each host its block; the counts summed).
    t = time.perf_counter()
    clip_ids, clip_emb, _ = read_embeddings(emb_dir, "clips")
    mine = clip_emb[multihost.process_block(len(clip_emb))]
    counts = {}
    for kind, kk in (("captions", k), ("tags", tag_k)):
        _, bank, _ = read_embeddings(emb_dir, kind)
        bias = None
        if hubness == "csls":   # each host the penalty of its block of the bank, against every clip
            block = multihost.process_block(len(bank))
            r = np.zeros(len(bank), np.float32)
            if block.stop > block.start:
                r[block] = matching.hubness(bank[block], clip_emb, hubness_k, dtype)
            counts[f"{kind}_hubness"] = r = multihost.sum_over_processes(r)
            bias = -r / 2
        _, top = matching.BankIndex(bank, dtype=dtype, bias=bias).topk(mine, kk)
        counts[kind] = multihost.sum_over_processes(matching.selection_counts(top, len(bank)))
    timings["count_s"] = round(time.perf_counter() - t, 1)
    if not multihost.is_primary():
        multihost.sync("pseudo-labels: exported")
        return {"process": jax.process_index(), "clips": len(clip_ids), "captions": len(captions),
                "tags": len(tags), "out": out, **timings}
    np.savez(os.path.join(out, "counts.npz.tmp.npz"), **counts)
    os.replace(os.path.join(out, "counts.npz.tmp.npz"), os.path.join(out, "counts.npz"))
    config = {"k": k, "k_prime": k_prime, "tag_k": tag_k, "tag_k_prime": tag_k_prime, "seed": seed,
              "hubness": hubness, "hubness_k": hubness_k, **model,
              "bank_dir": os.path.abspath(bank_dir), "corpus_dir": os.path.abspath(corpus_dir),
              "captions": len(captions), "tags": len(tags), "clips": len(clip_ids)}
    with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)

    t = time.perf_counter()
    summary = export(out, dtype=dtype, rows=rows, captions=captions, progress=progress)
    timings["export_s"] = round(time.perf_counter() - t, 1)
    summary.update(config=config, clip_failures=len(failures), seconds=round(time.perf_counter() - t0, 1), **timings)
    multihost.sync("pseudo-labels: exported")
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


