"""`python -m pseudo_labels.audit --labels=LABELS [--corpus=DIR] [--out=DIR]`: how noisy and how
biased are the pseudo-labels?

Reads every assigned caption and tag of a labels folder (`pseudo_labels.label`) for the attribute
values it mentions and compares them with the corpus's ground truth, beside a random-caption
baseline: coverage, agreement, lift, confusion asymmetry and over-/under-representation, for all
clips and per split (`pseudo_labels.quality`).  Writes DIR/audit.json, DIR/audit.md and PNG plots
(default DIR: LABELS/audit); the table goes to stderr and the last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

from common import cli


def main(argv: list[str] | None = None) -> dict:
    from pseudo_labels import quality

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="a folder built by pseudo_labels.label")
    ap.add_argument("--corpus", default=None, help="the corpus with the truth (default: the one labelled)")
    ap.add_argument("--out", default=None, help="output folder (default LABELS/audit)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-caption baseline")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out or os.path.join(args.labels, "audit"))
    with cli.exit_on(FileNotFoundError, ValueError, KeyError):
        result = quality.audit(args.labels, args.corpus, args.seed)
    files = quality.write(result, out)
    print(quality.markdown(result), file=sys.stderr)
    print(f"audit written to {out} (audit.json, audit.md, {len(files) - 2} plots)", file=sys.stderr)
    return cli.print_json(quality.summary(result, out))


if __name__ == "__main__":
    main()
