"""Embedding with a trained MuLan into an embedding store (`data.embedding_store`): what
`python -m mulan.embed` and the pseudo-label build (`pseudo_labels.labelling`) run.

    enc = Encoder.from_run(model_dir)
    embed_texts_to(enc, out, ids, texts, kind="captions")        # OUT/captions-*.npy + captions_index.jsonl
    summary, failures = embed_audio_to(enc, out, [{"id", "path"}, ...], kind="clips")

Audio is read and embedded `chunk` clips at a time (memory stays bounded on a large corpus); a
clip is the mean over its non-overlapping 10 s windows.  Unreadable files are returned as failures,
never fatal.

On several hosts (the same command on every worker, after `trainer.multihost.initialize`), each
function is called by every process with the same inputs: process p embeds its contiguous block
(`multihost.process_block`) on its own devices and writes its own shards; process 0 then joins
the indexes (`data.embedding_store.merge_parts`), so the folder holds what one process would have
written, rows in the same order.  The counts returned are sums over the hosts, the failures every
host's.  `OUT` must be a folder all hosts see.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from data.embedding_store import merge_parts, write_shards
from trainer import multihost


def _part() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


def _join_hosts(out: str, kind: str, failures: list) -> list:
    """Every process, once it has written its part of `kind`: process 0 joins the parts; returns
    every process's failures (one process: `failures` itself)."""
    p, count = _part()
    if count == 1:
        return failures
    path = lambda q: os.path.join(out, f"{kind}_failures.p{q:05d}.json")  # noqa: E731
    with open(path(p), "w", encoding="utf-8") as f:
        json.dump(failures, f)
    multihost.sync(f"embeddings: {kind} written")
    every = []
    for q in range(count):
        with open(path(q), encoding="utf-8") as f:
            every += json.load(f)
    if p == 0:
        merge_parts(out, kind, count)
    multihost.sync(f"embeddings: {kind} joined")
    if p == 0:
        for q in range(count):
            os.remove(path(q))
    return every


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
    """Embeds `texts` (this process's block of them) and writes OUT/{kind}-*.npy +
    OUT/{kind}_index.jsonl."""
    from tqdm import tqdm

    os.makedirs(out, exist_ok=True)
    block = multihost.process_block(len(texts))
    ids, texts = ids[block], texts[block]
    toks, _ = enc.tokenize(texts)
    truncated = int(sum(1 for t in toks if t[-1] != 0))
    with tqdm(total=len(texts), desc=f"embed {kind}", unit="text", file=sys.stderr, disable=not progress) as pb:
        emb = enc.embed_texts(texts, progress=pb.update)
    files = write_shards(out, kind, ids, emb, [{"text": t} for t in texts], shard_size, fmt, part=_part())
    _join_hosts(out, kind, [])
    n, truncated, shards = multihost.sum_over_processes([len(texts), truncated, len(files)]).tolist()
    return {"texts": n, "texts_truncated": truncated, "text_shards": shards,
            "text_index": os.path.join(os.path.abspath(out), f"{kind}_index.jsonl")}


def _seconds(path: str) -> float:
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception:  # noqa: BLE001 -- load_audio names what is wrong with it.
        return 0.0
    return info.frames / max(info.samplerate, 1)


def embed_audio_to(enc, out: str, inputs: list[dict], kind: str = "audio", shard_size: int = 4096,
                   fmt: str = "npy", progress: bool = True, chunk: int = 256,
                   stream_seconds: float = 60.0) -> tuple[dict, list[dict]]:
    """Reads and embeds `inputs` ({"id", "path"}) `chunk` clips at a time and writes
    OUT/{kind}-*.npy + OUT/{kind}_index.jsonl.  Memory stays bounded on a large corpus and on long
    files: a file longer than `stream_seconds` is read and embedded block by block
    (`data.audio.stream_audio`, `Encoder.embed_audio_stream`), the same embedding up to float
    rounding.  Unreadable files are returned as failures, never fatal."""
    from tqdm import tqdm

    from data.audio import AudioError, load_audio, stream_audio

    os.makedirs(out, exist_ok=True)
    inputs = inputs[multihost.process_block(len(inputs))]
    sr = enc.model.frontend.sample_rate
    ids, embs, extra, failures = [], [], [], []
    with tqdm(total=len(inputs), desc=f"embed {kind}", unit="clip", file=sys.stderr, disable=not progress) as pb:
        for s in range(0, len(inputs), chunk):
            clips, done = [], []          # (position, item, clip) and (position, item, embedding, samples)
            for k, item in enumerate(inputs[s:s + chunk]):
                try:
                    if _seconds(item["path"]) > stream_seconds:   # one at a time, block by block
                        e, n, _ = enc.embed_audio_stream(stream_audio(item["path"], sr))
                        done.append((k, item, e, n))
                    else:
                        clips.append((k, item, load_audio(item["path"], sr)[0]))
                except AudioError as e:
                    failures.append({"id": item["id"], "path": item["path"], "reason": str(e)})
                    pb.update(1)
            if clips:
                emb = enc.embed_audio_clips([x for _, _, x in clips])
                done += [(k, item, e, len(x)) for (k, item, x), e in zip(clips, emb)]
            for _, item, e, n in sorted(done, key=lambda t: t[0]):
                ids.append(item["id"])
                embs.append(np.asarray(e, np.float32).reshape(1, -1))
                extra.append({"path": item["path"], "seconds": round(n / sr, 3), "windows": max(1, n // enc.window)})
            pb.update(len(done))
    emb = np.concatenate(embs) if embs else np.zeros((0, enc.dim), np.float32)
    files = write_shards(out, kind, ids, emb, extra, shard_size, fmt, part=_part())
    failures = _join_hosts(out, kind, failures)
    n, n_windows, shards = multihost.sum_over_processes(
        [len(ids), sum(e["windows"] for e in extra), len(files)]).tolist()
    return {"audio_clips": n, "audio_windows": n_windows, "audio_shards": shards,
            "audio_index": os.path.join(os.path.abspath(out), f"{kind}_index.jsonl")}, failures


def audio_inputs(audio_dir: str | None = None, manifest: str | None = None, split: str = "") -> list[dict]:
    """{"id", "path"} of every audio file under `audio_dir` (ids relative to it), or of the rows of
    a manifest (`data.manifest`; its `split` rows only, when given)."""
    from data.audio import AUDIO_EXTENSIONS
    from data.manifest import read_manifest

    if audio_dir:
        paths = sorted(os.path.join(root, f) for root, _, files in os.walk(audio_dir) for f in files
                       if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS)
        return [{"id": os.path.relpath(p, audio_dir), "path": p} for p in paths]
    rows = read_manifest(manifest)
    if split:
        rows = [r for r in rows if r.get("split") == split]
    return [{"id": r["clip_id"], "path": r["_path"]} for r in rows]


def embed_task_to(enc, out: str, task: str, split: str = "test", limit: int | None = None, kind: str = "audio",
                  shard_size: int = 4096, fmt: str = "npy", progress: bool = True) -> dict:
    """Embeds a registered seqio task's `audio` (ids from `clip_id`) into OUT/{kind}-*.  On several
    hosts, process p of P takes examples p, p + P, ... (every host reads the task), so its rows
    come in host order rather than the task's."""
    import seqio
    from tqdm import tqdm

    ds = seqio.get_mixture_or_task(task).get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
    ids, clips, extra = [], [], []
    p, count = _part()
    for i, ex in enumerate(ds.as_numpy_iterator()):
        if limit is not None and i >= limit:
            break
        if i % count != p:
            continue
        cid = ex.get("clip_id", f"{task}:{split}:{i}".encode())
        ids.append(cid.decode() if isinstance(cid, bytes) else str(cid))
        clips.append(np.asarray(ex["audio"], np.float32))
        extra.append({"source": f"{task}:{split}", "seconds": round(len(clips[-1]) / 16000, 3),
                      "windows": max(1, len(clips[-1]) // enc.window)})
    n_windows = sum(e["windows"] for e in extra)
    with tqdm(total=n_windows, desc=f"embed {kind}", unit="window", file=sys.stderr, disable=not progress) as pb:
        emb = enc.embed_audio_clips(clips, progress=pb.update)
    files = write_shards(out, kind, ids, emb, extra, shard_size, fmt, part=(p, count))
    _join_hosts(out, kind, [])
    n, n_windows, shards = multihost.sum_over_processes([len(ids), n_windows, len(files)]).tolist()
    return {"audio_clips": n, "audio_windows": n_windows, "audio_shards": shards,
            "audio_index": os.path.join(os.path.abspath(out), f"{kind}_index.jsonl")}
