"""`python -m music_eval.write_eval_set [--corpus=DIR] --out=DIR [--split=test] [--max_clips=N]`.

An evaluation set from a built corpus's held-out split (`music_eval.eval_set`): one caption per
clip from its own metadata, so each prompt has a real recording it describes.

    OUT/reference.jsonl   {"id", "audio" (absolute path, 16 kHz), "text", "work_id", "duration_s"} per clip
    OUT/prompts.txt       the same captions, one per line, in the same order: the sampler's --prompts

The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

from common import cli


def main(argv=None) -> dict:
    from data import paths
    from music_eval import eval_set

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus", default=None, help="a built corpus (default: the demo corpus)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--max_clips", type=int, default=None)
    a = ap.parse_args(argv)
    with cli.exit_on(FileNotFoundError, ValueError):
        res = eval_set.build(paths.corpus_dir(a.corpus), a.out, a.split, a.max_clips)
    print(f"[eval_set] {res['clips']} clips ({res['works']} works) of split {a.split!r}: "
          f"{os.path.join(res['out'], 'reference.jsonl')} and prompts.txt", file=sys.stderr)
    return cli.print_json(res)


if __name__ == "__main__":
    main()
