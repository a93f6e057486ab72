"""Does inline matching keep up?  Examples/s of the seqio task `n2m_pseudo_labels` (exact top-K
against the whole bank, inside tf.data) against `n2m_weak_text` (the same pipeline without it).

    python benchmarks/pseudo_label_pipeline.py --labels=runs/mulan_tiny/pseudo_labels
    python benchmarks/pseudo_label_pipeline.py --labels=... --bank_size=4000000 --dtype=bfloat16

`--bank_size` pads the caption bank with seeded random unit vectors ("synthetic caption i") to
that many rows in a temporary copy of the folder (clip and tag embeddings kept; the counting pass
re-run, and timed), so the scale of the paper's bank can be measured on any corpus.  Each task
reads `--examples` examples (after `--warmup`), `--repeats` times; figures are medians.  The
last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def synthetic_copy(labels: str, bank_size: int, dtype: str, tmp: str) -> tuple[str, float]:
    """A copy of `labels` whose caption bank has `bank_size` rows; returns (dir, counting seconds)."""
    import numpy as np

    from data import matching
    from data.embedding_store import read_embeddings

    out = os.path.join(tmp, "labels")
    shutil.copytree(labels, out, ignore=shutil.ignore_patterns("audit", "labels.jsonl"))
    emb = os.path.join(out, "embeddings")
    ids, cap, rows = read_embeddings(emb, "captions")
    n_extra = max(0, bank_size - len(ids))
    rng = np.random.default_rng(0)
    extra = rng.standard_normal((n_extra, cap.shape[1]), dtype=np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    big = np.concatenate([cap, extra])
    for f in os.listdir(emb):
        if f.startswith("captions-"):
            os.remove(os.path.join(emb, f))
    np.save(os.path.join(emb, "captions-00000-of-00001.npy"), big)
    with open(os.path.join(emb, "captions_index.jsonl"), "w", encoding="utf-8") as f:
        for i in range(len(big)):
            text = rows[i]["text"] if i < len(rows) else f"synthetic caption {i}"
            f.write(json.dumps({"id": f"c{i}", "shard": "captions-00000-of-00001.npy", "row": i, "text": text}) + "\n")
    t = time.perf_counter()
    _, clips, _ = read_embeddings(emb, "clips")
    with open(os.path.join(out, "pseudo_labels.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    counts = dict(np.load(os.path.join(out, "counts.npz")))
    bias = None
    if cfg.get("hubness", "none") == "csls":   # the padded bank's CSLS penalties, as the build computes them
        counts["captions_hubness"] = matching.hubness(big, clips, cfg["hubness_k"], dtype)
        bias = -counts["captions_hubness"] / 2
    _, top = matching.BankIndex(big, dtype=dtype, bias=bias).topk(clips, cfg["k"])
    counts["captions"] = matching.selection_counts(top, len(big))
    np.savez(os.path.join(out, "counts.npz"), **counts)
    return out, time.perf_counter() - t


def configure(corpus: str, labels: str, dtype: str, batch: int):
    """Registers both tasks on `corpus` with the inline matcher's settings (`data.tasks.corpus_task`)."""
    from data import tasks
    from data.preprocessors import PseudoLabelMatching

    settings = PseudoLabelMatching(labels, dtype=dtype, batch_size=batch)
    for name in ("n2m_weak_text", "n2m_pseudo_labels"):
        tasks.corpus_task(name, corpus_dir=corpus, pseudo_labels=settings)


def rate(task: str, n: int, warmup: int, repeats: int) -> list:
    import seqio

    out = []
    for r in range(repeats):
        ds = seqio.get_mixture_or_task(task).get_dataset({"audio": 160000, "text_tokens": 64}, split="train",
                                                         shuffle=True, seed=r, num_epochs=None)
        it = ds.as_numpy_iterator()
        for _ in range(warmup):
            next(it)
        t = time.perf_counter()
        for _ in range(n):
            next(it)
        out.append(n / (time.perf_counter() - t))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", required=True, help="a folder built by pseudo_labels.label")
    ap.add_argument("--corpus", default=None, help="default: the corpus the folder labelled")
    ap.add_argument("--bank_size", type=int, default=0, help="pad the caption bank to this many rows")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch_size", type=int, default=128, help="clips per inline top-K search")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with open(os.path.join(args.labels, "pseudo_labels.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    corpus = args.corpus or cfg["corpus_dir"]
    with tempfile.TemporaryDirectory() as tmp:
        labels, count_s = (os.path.abspath(args.labels), None)
        if args.bank_size:
            labels, count_s = synthetic_copy(args.labels, args.bank_size, args.dtype, tmp)
        from data.pseudo_label_index import PseudoLabeler

        t = time.perf_counter()
        bank = len(PseudoLabeler.get(labels, args.dtype).caption_ids)
        load_s = time.perf_counter() - t
        configure(corpus, labels, args.dtype, args.batch_size)
        res = {}
        for task in ("n2m_weak_text", "n2m_pseudo_labels"):
            res[task] = statistics.median(rate(task, args.examples, args.warmup, args.repeats))
            print(f"{task}: {res[task]:.1f} examples/s (median of {args.repeats})", file=sys.stderr)
    out = {"bank_captions": bank, "dtype": args.dtype, "batch_size": args.batch_size,
           "weak_text_examples_per_s": round(res["n2m_weak_text"], 1),
           "pseudo_labels_examples_per_s": round(res["n2m_pseudo_labels"], 1),
           "ratio": round(res["n2m_pseudo_labels"] / res["n2m_weak_text"], 3),
           "bank_load_s": round(load_s, 1), "counting_pass_s": round(count_s, 1) if count_s is not None else None,
           "clips": cfg["clips"], "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(f"inline matching against {bank:,} captions: {out['pseudo_labels_examples_per_s']} examples/s vs "
          f"{out['weak_text_examples_per_s']} without matching (ratio {out['ratio']})", file=sys.stderr)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
