"""`python -m mulan.embed --model_dir=DIR (--audio_dir=D | --manifest=F | --task=NAME) [--texts=F] --out=OUT`.

Writes MuLan embeddings (L2-normalised, float32, 128-d) in shards plus an index:

    OUT/audio-00000-of-00003.npy ...   [rows, D]   (or .parquet with --format=parquet: id, embedding)
    OUT/audio_index.jsonl              one line per row: id, source path, shard, row, windows, seconds
    OUT/text-00000-of-00001.npy, OUT/text_index.jsonl
    OUT/failures.jsonl                 unreadable inputs with the reason (never fatal)

Audio: every file under `--audio_dir` (wav/flac/mp3/ogg...), the rows of a manifest (as
`mulan.evaluate` reads them), or a seqio task's examples (`--task`, `--split`; the task's `audio`
feature, ids from `clip_id`).  A clip is embedded as the mean over its non-overlapping 10 s windows
(a shorter clip is zero-padded to 10 s); audio is read and embedded 256 clips at a time, so memory
stays bounded on a large corpus.  Text: `--texts` is a .jsonl of {"id", "text"} rows (ids kept) or
one text per line, truncated to the model's text length.  Batches are split over all local devices.  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _write_shards(out: str, kind: str, ids: list[str], emb: np.ndarray, extra: list[dict], shard_size: int,
                  fmt: str) -> list[str]:
    n_shards = max(1, -(-len(ids) // shard_size))
    files = []
    with open(os.path.join(out, f"{kind}_index.jsonl.tmp"), "w", encoding="utf-8") as idx:
        for s in range(n_shards):
            name = f"{kind}-{s:05d}-of-{n_shards:05d}.{'npy' if fmt == 'npy' else 'parquet'}"
            part = emb[s * shard_size:(s + 1) * shard_size]
            path = os.path.join(out, name)
            if fmt == "npy":
                np.save(path + ".tmp.npy", part.astype(np.float32))
                os.replace(path + ".tmp.npy", path)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({"id": ids[s * shard_size:(s + 1) * shard_size],
                                  "embedding": pa.array(list(part.astype(np.float32)), pa.list_(pa.float32()))})
                pq.write_table(table, path + ".tmp")
                os.replace(path + ".tmp", path)
            files.append(path)
            for r in range(len(part)):
                i = s * shard_size + r
                idx.write(json.dumps({"id": ids[i], "shard": name, "row": r, **extra[i]}) + "\n")
    os.replace(os.path.join(out, f"{kind}_index.jsonl.tmp"), os.path.join(out, f"{kind}_index.jsonl"))
    return files


def _audio_inputs(args) -> list[dict]:
    from data.audio import AUDIO_EXTENSIONS
    from mulan.evaluate import read_manifest

    if args.audio_dir:
        paths = sorted(os.path.join(root, f) for root, _, files in os.walk(args.audio_dir) for f in files
                       if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS)
        return [{"id": os.path.relpath(p, args.audio_dir), "path": p} for p in paths]
    rows = read_manifest(args.manifest)
    if args.split:
        rows = [r for r in rows if r.get("split") == args.split]
    return [{"id": r["clip_id"], "path": r["_path"]} for r in rows]


def _task_clips(name: str, split: str, limit: int | None):
    import seqio

    import data.tasks  # noqa: F401 -- registers the corpus tasks

    ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
    for i, ex in enumerate(ds.as_numpy_iterator()):
        if limit is not None and i >= limit:
            break
        cid = ex.get("clip_id", f"{name}:{split}:{i}".encode())
        yield (cid.decode() if isinstance(cid, bytes) else str(cid)), np.asarray(ex["audio"], np.float32)


def read_texts(path: str) -> tuple[list[str], list[str]]:
    """--texts: a .jsonl file of {"id", "text"} rows, or plain text with one text per line
    (ids text0, text1, ...)."""
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        r = json.loads(line)
                        ids.append(str(r["id"])), texts.append(str(r["text"]))
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise ValueError(f"{path}:{n}: expected a JSON object with 'id' and 'text' ({e})") from None
        else:
            texts = [line.rstrip("\n") for line in f if line.strip()]
            ids = [f"text{i}" for i in range(len(texts))]
    return ids, texts


def embed_texts_to(enc, out: str, ids: list[str], texts: list[str], kind: str = "text", shard_size: int = 4096,
                   fmt: str = "npy", progress: bool = True) -> dict:
    """Embeds `texts` and writes OUT/{kind}-*.npy + OUT/{kind}_index.jsonl."""
    from tqdm import tqdm

    os.makedirs(out, exist_ok=True)
    toks, _ = enc.tokenize(texts)
    truncated = int(sum(1 for t in toks if t[-1] != 0))
    with tqdm(total=len(texts), desc=f"embed {kind}", unit="text", file=sys.stderr, disable=not progress) as pb:
        emb = enc.embed_texts(texts, progress=pb.update)
    files = _write_shards(out, kind, ids, emb, [{"text": t} for t in texts], shard_size, fmt)
    return {"texts": len(texts), "texts_truncated": truncated, "text_shards": len(files),
            "text_index": os.path.join(os.path.abspath(out), f"{kind}_index.jsonl")}


def embed_audio_to(enc, out: str, inputs: list[dict], kind: str = "audio", shard_size: int = 4096,
                   fmt: str = "npy", progress: bool = True, chunk: int = 256) -> tuple[dict, list[dict]]:
    """Reads and embeds `inputs` ({"id", "path"}) `chunk` clips at a time (memory stays bounded
    on a large corpus) and writes OUT/{kind}-*.npy + OUT/{kind}_index.jsonl.  Unreadable files
    are returned as failures, never fatal."""
    from tqdm import tqdm

    from data.audio import AudioError, load_audio

    os.makedirs(out, exist_ok=True)
    sr = enc.model.frontend.sample_rate
    ids, embs, extra, failures = [], [], [], []
    with tqdm(total=len(inputs), desc=f"embed {kind}", unit="clip", file=sys.stderr, disable=not progress) as pb:
        for s in range(0, len(inputs), chunk):
            clips = []
            for item in inputs[s:s + chunk]:
                try:
                    clips.append(load_audio(item["path"], sr)[0])
                except AudioError as e:
                    failures.append({"id": item["id"], "path": item["path"], "reason": str(e)})
                    pb.update(1)
                    continue
                ids.append(item["id"])
                extra.append({"path": item["path"], "seconds": round(len(clips[-1]) / sr, 3),
                              "windows": max(1, len(clips[-1]) // enc.window)})
            if clips:
                embs.append(enc.embed_audio_clips(clips))
                pb.update(len(clips))
    emb = np.concatenate(embs) if embs else np.zeros((0, enc.dim), np.float32)
    files = _write_shards(out, kind, ids, emb, extra, shard_size, fmt)
    return {"audio_clips": len(ids), "audio_windows": sum(e["windows"] for e in extra), "audio_shards": len(files),
            "audio_index": os.path.join(os.path.abspath(out), f"{kind}_index.jsonl")}, failures


def read_embeddings(folder: str, kind: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """What `embed_*_to` wrote: (ids, [N, D] float32, index rows)."""
    index_path = os.path.join(folder, f"{kind}_index.jsonl")
    if not os.path.exists(index_path):
        raise FileNotFoundError(f"{index_path} is missing (embed with `python -m mulan.embed`)")
    with open(index_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    shards: dict[str, np.ndarray] = {}
    for r in rows:
        if r["shard"] not in shards:
            path = os.path.join(folder, r["shard"])
            if path.endswith(".npy"):
                shards[r["shard"]] = np.load(path)
            else:
                import pyarrow.parquet as pq

                shards[r["shard"]] = np.stack(pq.read_table(path).column("embedding").to_numpy(zero_copy_only=False))
    names = list(shards)
    expect = [(n, i) for n in names for i in range(len(shards[n]))]
    if expect == [(r["shard"], r["row"]) for r in rows]:  # as written: whole shards in order
        parts = [shards[n] for n in names]
    else:
        parts = [np.stack([shards[r["shard"]][r["row"]] for r in rows])] if rows else []
    emb = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, 0), np.float32)
    return [r["id"] for r in rows], emb, rows


def main(argv: list[str] | None = None) -> dict:
    from trainer.main import setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--no_ema", action="store_true")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--audio_dir", help="embed every audio file under this folder")
    src.add_argument("--manifest", help="embed the audio of a JSON-lines manifest")
    src.add_argument("--task", help="embed a seqio task's audio (e.g. mulan_eval)")
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

    from tqdm import tqdm

    from mulan.inference import Encoder, ModelDirError
    from trainer.checkpoints import CheckpointRestoreError

    t0 = time.perf_counter()
    try:
        text_ids, texts = read_texts(args.texts) if args.texts else ([], [])
        enc = Encoder.from_model_dir(args.model_dir, args.step, use_ema=not args.no_ema, batch_size=args.batch_size)
    except (ModelDirError, CheckpointRestoreError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(args.out, exist_ok=True)
    summary: dict = {"model_dir": enc.model_dir, "step": enc.step, "out": os.path.abspath(args.out), "dim": enc.dim}
    failures = []
    progress = not args.no_progress

    if args.task:
        ids, clips, extra = [], [], []
        for cid, wave in _task_clips(args.task, args.split or "test", args.limit):
            ids.append(cid), clips.append(wave)
            extra.append({"source": f"{args.task}:{args.split or 'test'}", "seconds": round(len(wave) / 16000, 3),
                          "windows": max(1, len(wave) // enc.window)})
        n_windows = sum(e["windows"] for e in extra)
        with tqdm(total=n_windows, desc="embed audio", unit="window", file=sys.stderr, disable=not progress) as pb:
            emb = enc.embed_audio_clips(clips, progress=pb.update)
        files = _write_shards(args.out, "audio", ids, emb, extra, args.shard_size, args.format)
        summary.update(audio_clips=len(ids), audio_windows=n_windows, audio_shards=len(files),
                       audio_index=os.path.join(summary["out"], "audio_index.jsonl"))
    elif args.audio_dir or args.manifest:
        got, failures = embed_audio_to(enc, args.out, _audio_inputs(args), shard_size=args.shard_size,
                                       fmt=args.format, progress=progress)
        summary.update(got)
    if args.texts:
        summary.update(embed_texts_to(enc, args.out, text_ids, texts, shard_size=args.shard_size, fmt=args.format,
                                      progress=progress))
    with open(os.path.join(args.out, "failures.jsonl"), "w", encoding="utf-8") as f:
        for r in failures:
            f.write(json.dumps(r) + "\n")
    summary.update(failures=len(failures), seconds=round(time.perf_counter() - t0, 1))
    print(f"wrote embeddings to {summary['out']} ({len(failures)} unreadable inputs listed in failures.jsonl)",
          file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
