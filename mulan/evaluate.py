"""`python -m mulan.evaluate --model_dir=DIR [--corpus_dir=DIR | --manifest=FILE] [--out=FILE]`.

Evaluates a trained MuLan on held-out audio with ground-truth tags:

* zero-shot tagging: each tag's text ("piano", "jazz", ...) is embedded by the text tower; a clip's
  score for the tag is the cosine with its audio embedding.  ROC-AUC and PR-AUC per tag, macro and
  micro, per tag attribute (instrument, genre, style, ...) and over instrument + style together.
* retrieval: one text query per clip (its `--query_source` texts joined by ", ", default the label
  text), text->audio and audio->text: R@1/5/10, mAP (= MRR, one relevant item), median rank.
* linear probe: logistic regression per tag on frozen audio embeddings of the train split,
  scored on the evaluation split (ROC-AUC, macro).

Audio is embedded as the mean over non-overlapping 10 s windows (a shorter clip is zero-padded).
Chance levels are printed beside every figure.  Results: a readable table on stderr, a JSON file
(`--out`, default `MODEL_DIR/eval/step_N.json`), and one JSON object as the last line of stdout.

Manifest input: JSON lines with `audio` (a path, relative to the manifest's folder, or
`{"16000": path}`), `tags` ({attribute: [tag, ...]} or a list) and optionally `split` and `texts`.
The corpus builder's `manifest.jsonl` is one.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

log = logging.getLogger("mulan.evaluate")
DEFAULT_ATTRIBUTES = ("instrument", "genre", "style", "tempo", "mode", "ensemble")
HEADLINE = ("instrument", "style")


def read_manifest(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e}).") from e
            if "audio" not in r:
                raise ValueError(f"{path}:{i}: no 'audio' field.")
            a = r["audio"]
            rel = a.get("16000") or next(iter(a.values())) if isinstance(a, dict) else a
            r["_path"] = rel if os.path.isabs(rel) else os.path.join(os.path.dirname(os.path.abspath(path)), rel)
            tags = r.get("tags", {})
            r["_tags"] = tags if isinstance(tags, dict) else {"tag": list(tags)}
            r.setdefault("clip_id", r.get("id", f"row{i}"))
            rows.append(r)
    return rows


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


def main(argv: list[str] | None = None) -> dict:
    from trainer.main import setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", required=True, help="a MuLan training run's directory")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    ap.add_argument("--no_ema", action="store_true", help="use the raw, not the EMA, parameters")
    ap.add_argument("--corpus_dir", default=None, help="a built corpus (default: the one the run trained on)")
    ap.add_argument("--manifest", default=None, help="a JSON-lines manifest with audio paths and tags")
    ap.add_argument("--split", default="test", help="the manifest split to evaluate ('' = all rows)")
    ap.add_argument("--probe_split", default="train", help="split the linear probe trains on ('' = no probe)")
    ap.add_argument("--attributes", default=",".join(DEFAULT_ATTRIBUTES))
    ap.add_argument("--query_source", default="label", help="text source of the retrieval queries")
    ap.add_argument("--min_positives", type=int, default=2, help="tags with fewer positives are left out")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--out", default=None, help="JSON results file (default MODEL_DIR/eval/step_N.json)")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)

    from mulan.inference import Encoder, ModelDirError
    from trainer.checkpoints import CheckpointRestoreError

    try:
        enc = Encoder.from_model_dir(args.model_dir, args.step, use_ema=not args.no_ema, batch_size=args.batch_size)
        manifest = args.manifest
        if manifest is None:
            from data import paths

            corpus = args.corpus_dir or _trained_corpus() or paths.corpus_dir(None)
            manifest = os.path.join(corpus, "manifest.jsonl")
        if not os.path.exists(manifest):
            raise ValueError(f"{manifest}: no such manifest.")
        rows = read_manifest(manifest)
        eval_rows = [r for r in rows if not args.split or r.get("split") == args.split]
        train_rows = [r for r in rows if args.probe_split and r.get("split") == args.probe_split]
        if not eval_rows:
            raise ValueError(f"{manifest}: no rows with split={args.split!r}.")
        attributes = [a for a in args.attributes.split(",") if a]
        result = evaluate(enc, eval_rows, train_rows, attributes, args.query_source, args.min_positives,
                          not args.no_progress)
    except (ModelDirError, CheckpointRestoreError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    result.update(model_dir=os.path.abspath(args.model_dir), step=enc.step, manifest=os.path.abspath(manifest),
                  split=args.split)
    out = args.out or os.path.join(enc.model_dir, "eval", f"step_{enc.step}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(table(result), file=sys.stderr)
    print(f"\nresults: {out}", file=sys.stderr)
    summary = {
        "model_dir": result["model_dir"], "step": enc.step, "num_clips": result["num_clips"], "results_file": out,
        "zero_shot_macro_roc_auc": {k: round(v["macro_roc_auc"], 4) for k, v in result["zero_shot"].items()},
        "zero_shot_macro_pr_auc": {k: round(v["macro_pr_auc"], 4) for k, v in result["zero_shot"].items()},
        "text_to_audio": {k: result["retrieval"]["text_to_audio"][k] for k in ("r@1", "r@5", "r@10", "map", "median_rank", "chance_r@10")},
        "audio_to_text": {k: result["retrieval"]["audio_to_text"][k] for k in ("r@1", "r@5", "r@10", "map", "median_rank", "chance_r@10")},
        "linear_probe_macro_roc_auc": {k: round(v["macro_roc_auc"], 4) for k, v in result.get("linear_probe", {}).items()
                                       if isinstance(v, dict)},
    }
    print(json.dumps(summary), flush=True)
    return summary


def _trained_corpus() -> str | None:
    """The corpus the loaded run was configured with (its config.gin's CORPUS_DIR), if any."""
    import gin

    try:
        value = gin.query_parameter("data.paths.corpus_dir.path")
    except ValueError:
        return None
    if isinstance(value, gin.config.ConfigurableReference):  # the %CORPUS_DIR macro
        value = value.scoped_configurable_fn()
    return value


if __name__ == "__main__":
    main()
