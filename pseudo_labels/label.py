"""`python -m pseudo_labels.label --model_dir=MULAN --bank=BANK [--corpus=CORPUS] --out=LABELS`.

Pseudo-labelling (docs/PAPERS.md §3): every clip of a corpus gets captions written for *other*
songs, chosen by MuLan.  This computes, once, what the inline seqio matcher needs, and exports the
labelled set (`pseudo_labels.labelling`; the folder's layout is `data.pseudo_label_index`'s):
the MuLan embeddings of the bank, the tags and the clips, the selection counts, the settings and
`labels.jsonl`.  Embeddings are reused when the model step, the bank and the corpus are unchanged
(`--recompute` forces).  Training reads the folder through the task `n2m_pseudo_labels`
(`--gin_file=datasets/pseudo_labels.gin --gin.PSEUDO_LABELS_DIR="'LABELS'"`).  On a pod, the same
command on every worker (`pseudo_labels.labelling`).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import sys

from common import cli


def main(argv: list[str] | None = None) -> dict:
    cli.setup_logging()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", required=True, help="a trained MuLan run")
    ap.add_argument("--step", type=int, default=None)
    cli.add_trust_flag(ap)
    ap.add_argument("--bank", required=True, help="a caption bank built by pseudo_labels.write_bank")
    ap.add_argument("--corpus", default=None, help="the corpus to label (default: the demo corpus)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--k_prime", type=int, default=3)
    ap.add_argument("--tag_k", type=int, default=10)
    ap.add_argument("--tag_k_prime", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hubness", default="none", choices=["none", "csls"],
                    help="the top-K's score: cosine (the paper's), or CSLS's hubness-corrected cosine")
    ap.add_argument("--hubness_k", type=int, default=10, help="clips in a caption's CSLS penalty")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--recompute", action="store_true", help="re-embed even when nothing changed")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)
    for name, v in (("k", args.k), ("tag_k", args.tag_k), ("hubness_k", args.hubness_k)):
        if v < 1:
            ap.error(f"--{name} must be >= 1")
    if not 0 < args.k_prime <= args.k or not 0 < args.tag_k_prime <= args.tag_k:
        ap.error("need 0 < --k_prime <= --k and 0 < --tag_k_prime <= --tag_k")

    from data import paths
    from data.pseudo_label_index import PseudoLabelError
    from pseudo_labels import labelling
    from trainer import multihost
    from trainer.checkpoints import CheckpointRestoreError
    from trainer.restore import ModelDirError

    multihost.initialize()
    with cli.exit_on(PseudoLabelError, ModelDirError, CheckpointRestoreError, FileNotFoundError, ValueError):
        s = labelling.build(args.model_dir, args.bank, paths.corpus_dir(args.corpus), args.out, k=args.k,
                            k_prime=args.k_prime, tag_k=args.tag_k, tag_k_prime=args.tag_k_prime, seed=args.seed,
                            dtype=args.dtype, step=args.step, batch_size=args.batch_size, recompute=args.recompute,
                            progress=not args.no_progress, hubness=args.hubness, hubness_k=args.hubness_k)
    if "labels" in s:
        print(f"pseudo-labelled {s['clips']} clips with {s['captions']} captions and {s['tags']} tags "
              f"(mean top-1 cosine {s['mean_top1_cosine']}): {s['labels']}", file=sys.stderr)
    else:
        print(f"process {s['process']}: its share embedded and counted; process 0 wrote {s['out']}", file=sys.stderr)
    return cli.print_json(s)


if __name__ == "__main__":
    main()
