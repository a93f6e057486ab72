"""`python -m music_eval.evaluate --generated=SAMPLES --reference=REF --out=DIR [--mulan=RUN]`.

Scores generated music the way the paper does (docs/PAPERS.md §4; `music_eval.scoring`) and writes a
report a person can read.

    --generated   a `noise2music.sample` output folder (its settings.json names the prompts and
                  files; the 16 kHz WAVs are scored), or a JSON-lines manifest {"audio", "text"[, "id"]}
                  (relative audio paths are relative to the manifest), or a folder with one as
                  manifest.jsonl (audio from any other model)
    --reference   real audio: a JSON-lines manifest {"audio", "text"[, "id"]} or a `music_eval.eval_set`
                  folder (its reference.jsonl: the corpus's held-out split with a caption per clip)
    --mulan       a trained MuLan run: adds the MuLan embedder (FAD, text and audio similarity)
    --embedders   comma-separated (default: musicnn, plus mulan with --mulan); see music_eval/embedders/base.py
    --compare     NAME=SAMPLES, repeatable: more systems scored beside --generated (an untrained model...)

Every clip is scored on its middle `--segment_seconds` (10 s, as the paper scores 30 s
generations; a shorter clip is scored whole), beside a white-noise and a ground-truth row.

Outputs in --out: metrics.json (everything, per item too), report.html (self-contained: the table,
then per prompt the players, spectrograms and scores), and the embedding cache (--cache_dir,
default OUT/cache: a re-run only embeds audio it has not seen).  Exit status 2 for bad input (the
file or flag is named).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

from common import cli


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--generated", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mulan", default=None, help="a trained MuLan run (model dir)")
    cli.add_trust_flag(ap)
    ap.add_argument("--embedders", default=None, help="comma-separated; default musicnn (+ mulan with --mulan)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=SAMPLES")
    ap.add_argument("--name", default=None, help="the generated system's name in the report")
    ap.add_argument("--segment_seconds", type=float, default=10.0)
    ap.add_argument("--no_noise_baseline", action="store_true")
    ap.add_argument("--fad_inf", action="store_true", help="also FAD-infinity (FAD on subsets, extrapolated)")
    ap.add_argument("--fad_inf_points", type=int, default=15)
    ap.add_argument("--cache_dir", default=None, help="embedding cache (default OUT/cache; 'none' disables)")
    ap.add_argument("--generated_suffix", default="_16k.wav")
    ap.add_argument("--report_audio", choices=["ogg", "wav", "none"], default="ogg")
    ap.add_argument("--title", default="Noise2Music evaluation")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    cli.setup_logging()
    a = parse_args(argv)
    from music_eval import report as report_lib, scoring
    from music_eval.inputs import EvalInputError

    with cli.exit_on(EvalInputError):
        report = scoring.evaluate(scoring.EvalSettings(**{k: v for k, v in vars(a).items() if k != "trust_config"}))
    print(report_lib.text_table(report), file=sys.stderr)
    print(f"\n[evaluate] metrics: {os.path.join(a.out, 'metrics.json')}\n[evaluate] report:  {report['html']}",
          file=sys.stderr)
    return cli.print_json(scoring.summary(report))


if __name__ == "__main__":
    main()
