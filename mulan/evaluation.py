"""Evaluating a trained MuLan on held-out audio with ground-truth tags (what `python -m
mulan.evaluate` runs): zero-shot tagging, text<->audio retrieval and linear probes, each beside its
chance level (docs/PAPERS.md §1).

    result = evaluate(encoder, eval_rows, train_rows, attributes, query_source="label", min_positives=2)
    print(table(result))

Rows are `data.manifest.read_manifest` rows (audio path, tags by attribute, texts, split).
"""
from __future__ import annotations

import sys
import time

import numpy as np

DEFAULT_ATTRIBUTES = ("instrument", "genre", "style", "tempo", "mode", "ensemble")
HEADLINE = ("instrument", "style")


def load_clips(rows: list[dict], sample_rate: int, desc: str, progress: bool):
    """(clips, kept rows, failures): unreadable files are skipped and reported, never fatal."""
    from tqdm import tqdm

    from data.audio import AudioError, load_audio

    clips, kept, failures = [], [], []
    for r in tqdm(rows, desc=desc, disable=not progress, file=sys.stderr, unit="clip"):
        try:
            clips.append(load_audio(r["_path"], sample_rate, allow_silent=False)[0])
            kept.append(r)
        except AudioError as e:
            failures.append({"clip_id": r["clip_id"], "path": r["_path"], "reason": str(e)})
    return clips, kept, failures


def labels(rows: list[dict], attribute: str, names: list[str]) -> np.ndarray:
    """[clips, tags] bool: which of `names` each row carries for `attribute`."""
    return np.array([[n in r["_tags"].get(attribute, []) for n in names] for r in rows], bool).reshape(
        len(rows), len(names))


def tag_matrix(rows: list[dict], attribute: str, min_positives: int) -> tuple[list[str], np.ndarray]:
    counts: dict[str, int] = {}
    for r in rows:
        for t in set(r["_tags"].get(attribute, [])):
            counts[t] = counts.get(t, 0) + 1
    names = sorted(t for t, c in counts.items() if min_positives <= c < len(rows))
    return names, labels(rows, attribute, names)


def evaluate(enc, eval_rows, train_rows, attributes, query_source: str, min_positives: int, progress: bool) -> dict:
    from mulan import eval_metrics as M

    t0 = time.perf_counter()
    clips, eval_rows, failures = load_clips(eval_rows, enc.model.frontend.sample_rate, "eval audio", progress)
    if len(eval_rows) < 2:
        raise ValueError(f"only {len(eval_rows)} readable evaluation clips; need at least 2.")
    a = enc.embed_audio_clips(clips)
    result: dict = {"num_clips": len(eval_rows), "failures": failures, "zero_shot": {}}
    labels_all, scores_all = [], []
    vocab = {attr: tag_matrix(eval_rows, attr, min_positives) for attr in attributes}
    for attr in attributes:
        names, y = vocab[attr]
        if not names:
            continue
        t = enc.embed_texts(names)
        s = a @ t.T
        result["zero_shot"][attr] = M.tagging(y, s, names)
        if attr in HEADLINE:
            labels_all.append(y)
            scores_all.append(s)
    if labels_all:
        names = [n for attr in HEADLINE if attr in result["zero_shot"] for n in result["zero_shot"][attr]["per_tag"]]
        result["zero_shot"]["instrument+style"] = {
            k: v for k, v in M.tagging(np.concatenate(labels_all, 1), np.concatenate(scores_all, 1), names).items()
            if k != "per_tag"}
    queries = [", ".join(r.get("texts", {}).get(query_source, [])) or ", ".join(
        t for v in r["_tags"].values() for t in v) for r in eval_rows]
    q = enc.embed_texts(queries)
    sim = q @ a.T
    result["retrieval"] = {"query_source": query_source, "text_to_audio": M.retrieval(sim),
                           "audio_to_text": M.retrieval(sim.T)}
    if train_rows:
        tclips, train_rows, tfail = load_clips(train_rows, enc.model.frontend.sample_rate, "probe train audio", progress)
        failures.extend(tfail)
        xa = enc.embed_audio_clips(tclips)
        probe = {}
        for attr in attributes:
            names, y_eval = vocab[attr]
            y_train = labels(train_rows, attr, names)
            keep = y_train.any(axis=0)  # tags the probe can learn (seen in training)
            if not keep.any():
                continue
            names = [n for n, k in zip(names, keep) if k]
            scores = M.linear_probe(xa, y_train[:, keep], a)
            probe[attr] = {k: v for k, v in M.tagging(y_eval[:, keep], scores, names).items() if k != "per_tag"}
        result["linear_probe"] = {"num_train_clips": len(train_rows), **probe}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def table(result: dict) -> str:
    lines = [f"MuLan evaluation: {result['num_clips']} clips ({len(result['failures'])} unreadable)", "",
             "zero-shot tagging          tags   ROC-AUC  (chance 0.5)   PR-AUC  (chance)"]
    for attr, r in result["zero_shot"].items():
        lines.append(f"  {attr:<24} {r['num_tags']:>4}   {r['macro_roc_auc']:.3f}                  "
                     f"{r['macro_pr_auc']:.3f}   ({r['chance_macro_pr_auc']:.3f})")
    lines += ["", "retrieval            R@1     R@5     R@10    mAP     median rank   (chance R@10, median)"]
    for d in ("text_to_audio", "audio_to_text"):
        r = result["retrieval"][d]
        lines.append(f"  {d:<16} {r['r@1']:.3f}   {r['r@5']:.3f}   {r['r@10']:.3f}   {r['map']:.3f}   "
                     f"{r['median_rank']:>6.1f}        ({r['chance_r@10']:.3f}, {r['chance_median_rank']:.1f})")
    if "linear_probe" in result:
        lines += ["", f"linear probe (trained on {result['linear_probe']['num_train_clips']} clips)   ROC-AUC  PR-AUC"]
        for attr, r in result["linear_probe"].items():
            if isinstance(r, dict):
                lines.append(f"  {attr:<24}               {r['macro_roc_auc']:.3f}    {r['macro_pr_auc']:.3f}")
    return "\n".join(lines)


