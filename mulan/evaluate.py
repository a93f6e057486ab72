"""`python -m mulan.evaluate --model_dir=DIR [--corpus_dir=DIR | --manifest=FILE] [--out=FILE]`.

Evaluates a trained MuLan on held-out audio with ground-truth tags (`mulan.evaluation`):

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
import os
import sys

from common import cli
from mulan import evaluation


def main(argv: list[str] | None = None) -> dict:
    cli.setup_logging()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", required=True, help="a MuLan training run's directory")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    ap.add_argument("--no_ema", action="store_true", help="use the raw, not the EMA, parameters")
    cli.add_trust_flag(ap)
    ap.add_argument("--corpus_dir", default=None, help="a built corpus (default: the one the run trained on)")
    ap.add_argument("--manifest", default=None, help="a JSON-lines manifest with audio paths and tags")
    ap.add_argument("--split", default="test", help="the manifest split to evaluate ('' = all rows)")
    ap.add_argument("--probe_split", default="train", help="split the linear probe trains on ('' = no probe)")
    ap.add_argument("--attributes", default=",".join(evaluation.DEFAULT_ATTRIBUTES))
    ap.add_argument("--query_source", default="label", help="text source of the retrieval queries")
    ap.add_argument("--min_positives", type=int, default=2, help="tags with fewer positives are left out")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--out", default=None, help="JSON results file (default MODEL_DIR/eval/step_N.json)")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)

    from data import paths
    from data.manifest import read_manifest
    from mulan.inference import Encoder
    from trainer import flags
    from trainer.checkpoints import CheckpointRestoreError
    from trainer.restore import ModelDirError

    with cli.exit_on(ModelDirError, CheckpointRestoreError, ValueError, FileNotFoundError):
        enc = Encoder.from_run(args.model_dir, args.step, use_ema=not args.no_ema, batch_size=args.batch_size)
        manifest = args.manifest
        if manifest is None:   # the corpus the run was configured with, its config's CORPUS_DIR
            corpus = paths.corpus_dir(args.corpus_dir or flags.bound("%CORPUS_DIR", None))
            manifest = os.path.join(corpus, "manifest.jsonl")
        if not os.path.exists(manifest):
            raise ValueError(f"{manifest}: no such manifest.")
        rows = read_manifest(manifest)
        eval_rows = [r for r in rows if not args.split or r.get("split") == args.split]
        train_rows = [r for r in rows if args.probe_split and r.get("split") == args.probe_split]
        if not eval_rows:
            raise ValueError(f"{manifest}: no rows with split={args.split!r}.")
        attributes = [a for a in args.attributes.split(",") if a]
        result = evaluation.evaluate(enc, eval_rows, train_rows, attributes, args.query_source, args.min_positives,
                                     not args.no_progress)
    result.update(model_dir=os.path.abspath(args.model_dir), step=enc.step, manifest=os.path.abspath(manifest),
                  split=args.split)
    out = args.out or os.path.join(enc.model_dir, "eval", f"step_{enc.step}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(evaluation.table(result), file=sys.stderr)
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
    return cli.print_json(summary)




if __name__ == "__main__":
    main()
