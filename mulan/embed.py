"""`python -m mulan.embed --model_dir=DIR (--audio_dir=D | --manifest=F | --task=NAME) [--texts=F] --out=OUT`.

Writes MuLan embeddings (L2-normalised, float32, 128-d) in shards plus an index:

    OUT/audio-00000-of-00003.npy ...   [rows, D]   (or .parquet with --format=parquet: id, embedding)
    OUT/audio_index.jsonl              one line per row: id, source path, shard, row, windows, seconds
    OUT/text-00000-of-00001.npy, OUT/text_index.jsonl
    OUT/failures.jsonl                 unreadable inputs with the reason (never fatal)

Audio: every file under `--audio_dir` (wav/flac/mp3/ogg...), the rows of a manifest
(`data.manifest`), or a seqio task's examples (`--task`, `--split`; the task's `audio`
feature, ids from `clip_id`: a task of `data.tasks` on `--corpus`, or yours, registered by
`--task_module`).  A clip is embedded as the mean over its non-overlapping 10 s windows
(a shorter clip is zero-padded to 10 s); audio is read and embedded 256 clips at a time, so memory
stays bounded on a large corpus.  Text: `--texts` is a .jsonl of {"id", "text"} rows (ids kept) or
one text per line, truncated to the model's text length.  Batches are split over all local devices.

On a pod, run the same command on every worker (`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` /
`JAX_PROCESS_ID`, or nothing on a TPU VM: `trainer.multihost.initialize`), with an `--out` every
host sees: each process embeds its block of the clips and texts on its own devices and writes its
own shards, process 0 joins the indexes (`mulan.embedding`), and the folder is what one process
would have written.  The last stdout line is JSON (on every process; the counts are over all).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import cli


def main(argv: list[str] | None = None) -> dict:
    cli.setup_logging()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--no_ema", action="store_true")
    cli.add_trust_flag(ap)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--audio_dir", help="embed every audio file under this folder")
    src.add_argument("--manifest", help="embed the audio of a JSON-lines manifest")
    src.add_argument("--task", help="embed a seqio task's audio (e.g. mulan_eval)")
    ap.add_argument("--corpus", default=None, help="--task of data.tasks: its corpus (default: the demo corpus)")
    ap.add_argument("--task_module", default=None, help="--task of your own: the module that registers it")
    ap.add_argument("--split", default="", help="manifest split / task split (task default: test)")
    ap.add_argument("--limit", type=int, default=None, help="task: at most this many examples")
    ap.add_argument("--texts", help="texts: a .jsonl of {id, text} rows, or one text per line")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--shard_size", type=int, default=4096, help="rows per output shard")
    ap.add_argument("--format", choices=["npy", "parquet"], default="npy")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)
    if not (args.audio_dir or args.manifest or args.task or args.texts):
        ap.error("nothing to embed: give --audio_dir, --manifest, --task and/or --texts")

    from mulan import embedding
    from mulan.inference import Encoder
    from trainer import multihost
    from trainer.checkpoints import CheckpointRestoreError
    from trainer.restore import ModelDirError

    multihost.initialize()

    t0 = time.perf_counter()
    with cli.exit_on(ModelDirError, CheckpointRestoreError, ValueError, OSError):
        text_ids, texts = embedding.read_texts(args.texts) if args.texts else ([], [])
        enc = Encoder.from_run(args.model_dir, args.step, use_ema=not args.no_ema, batch_size=args.batch_size)
    os.makedirs(args.out, exist_ok=True)
    summary: dict = {"model_dir": enc.model_dir, "step": enc.step, "out": os.path.abspath(args.out), "dim": enc.dim}
    failures = []
    kw = dict(shard_size=args.shard_size, fmt=args.format, progress=not args.no_progress)
    if args.task:
        import importlib

        from data import tasks

        with cli.exit_on(ValueError, FileNotFoundError, ImportError):
            if args.task_module:
                importlib.import_module(args.task_module)
            else:
                tasks.corpus_task(args.task, corpus_dir=args.corpus)
        summary.update(embedding.embed_task_to(enc, args.out, args.task, args.split or "test", args.limit, **kw))
    elif args.audio_dir or args.manifest:
        with cli.exit_on(ValueError, OSError):
            inputs = embedding.audio_inputs(args.audio_dir, args.manifest, args.split)
        got, failures = embedding.embed_audio_to(enc, args.out, inputs, **kw)
        summary.update(got)
    if args.texts:
        summary.update(embedding.embed_texts_to(enc, args.out, text_ids, texts, **kw))
    if multihost.is_primary():
        with open(os.path.join(args.out, "failures.jsonl"), "w", encoding="utf-8") as f:
            for r in failures:
                f.write(json.dumps(r) + "\n")
    summary.update(failures=len(failures), seconds=round(time.perf_counter() - t0, 1))
    print(f"wrote embeddings to {summary['out']} ({len(failures)} unreadable inputs listed in failures.jsonl)",
          file=sys.stderr)
    return cli.print_json(summary)


if __name__ == "__main__":
    main()
