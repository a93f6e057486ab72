"""`python -m data.ingest --audio_dir=DIR --texts=TEXTS.jsonl --out=CORPUS [--sample_rate=16000]`.

Users' own audio and texts -> sharded TFRecords the seqio tasks read (`data.records.ingest`):
`CORPUS/records/<split>-*.tfrecord` and `failures.jsonl` (every skipped file or row, with the
reason).  TEXTS.jsonl has one row per audio file: `{"file": "rel/path.mp3", "short": [...],
"long": [...], "playlist": [...], "label": [...], "tags": {"genre": [...]}, "split": "train"}`.
The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import logging
import os

from common import cli
from data import records


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Users' audio + texts JSONL -> sharded TFRecords for seqio.")
    ap.add_argument("--audio_dir", required=True)
    ap.add_argument("--texts", required=True, help="JSONL, one row per audio file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample_rate", type=int, default=16000)
    ap.add_argument("--per_shard", type=int, default=64)
    ap.add_argument("--no_progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    for p, what in ((a.audio_dir, "--audio_dir"), (a.texts, "--texts")):
        if not os.path.exists(p):
            ap.error(f"{what}={p} does not exist")
    r = records.ingest(a.audio_dir, a.texts, a.out, sample_rate=a.sample_rate, per_shard=a.per_shard,
               progress=not a.no_progress)
    print(f"[records] {r['with_text']} of {r['audio_files']} audio files had texts; {r['failures']} problems "
          f"listed in {r['out']}/records/failures.jsonl")
    print(f"[records] records written to {r['out']}/records")
    return cli.print_json(r)


if __name__ == "__main__":
    main()
