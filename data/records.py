r"""Clips -> sharded TFRecord files that a seqio source reads; users' own audio folders too
(`ingest`, what `python -m data.ingest --audio_dir=/music --texts=/music/texts.jsonl --out=DIR` runs).

One `tf.train.Example` per clip: `clip_id`, `work_id`, `audio` (16-bit PCM, little endian),
`sample_rate`, `num_samples`, the four text sources `text_{short,long,playlist,label}` with the text
filter's marks `ok_{...}` (1 = about the music), and ground-truth tags `tag_{attribute}`.

The texts JSONL has one object per audio file: `{"file": "rel/path.mp3", "short": [...],
"long": [...], "playlist": [...], "label": [...], "tags": {"genre": [...]}}`; a plain
`"text": "..."` counts as long-form. Files are sorted and packed into fixed shards, each written to a
temporary name and renamed when complete, so an interrupted ingest resumes with the first missing
shard. Files that cannot be decoded, empty or non-UTF-8 texts, and rows naming missing files are
skipped and listed in `failures.jsonl` with the reason; nothing else is lost.
"""
from __future__ import annotations

import json
import logging
import os
import sys

from data import audio as audio_lib
from data import weak_text

TAG_ATTRIBUTES = ("instrument", "genre", "style", "tempo", "mode", "dance", "ensemble")
log = logging.getLogger("records")


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.tfrecord"


def make_example(clip_id: str, work_id: str, x, sr: int, texts: dict, ok: dict, tags: dict) -> bytes:
    import tensorflow as tf

    def b(vals):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in vals]))

    def i(vals):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in vals]))

    f = {"clip_id": b([clip_id]), "work_id": b([work_id]),
         "audio": tf.train.Feature(bytes_list=tf.train.BytesList(value=[audio_lib.to_pcm16(x)])),
         "sample_rate": i([sr]), "num_samples": i([len(x)])}
    for s in weak_text.SOURCES:
        f[f"text_{s}"] = b(texts.get(s, []))
        f[f"ok_{s}"] = i(ok.get(s, [1] * len(texts.get(s, []))))
    for a in TAG_ATTRIBUTES:
        f[f"tag_{a}"] = b(tags.get(a, []))
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def feature_spec():
    """The parsing spec of `make_example` for `tf.io.parse_single_example`."""
    import tensorflow as tf

    spec = {"clip_id": tf.io.FixedLenFeature([], tf.string), "work_id": tf.io.FixedLenFeature([], tf.string),
            "audio": tf.io.FixedLenFeature([], tf.string), "sample_rate": tf.io.FixedLenFeature([], tf.int64),
            "num_samples": tf.io.FixedLenFeature([], tf.int64)}
    for s in weak_text.SOURCES:
        spec[f"text_{s}"] = tf.io.VarLenFeature(tf.string)
        spec[f"ok_{s}"] = tf.io.VarLenFeature(tf.int64)
    for a in TAG_ATTRIBUTES:
        spec[f"tag_{a}"] = tf.io.VarLenFeature(tf.string)
    return spec


def _write_shards(out_dir: str, split: str, items: list, per_shard: int, to_example, progress: bool, failures: list):
    """Writes items into fixed shards; a complete shard is never rewritten (resume)."""
    import tensorflow as tf
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    n = max(1, -(-len(items) // per_shard))
    written = 0
    bar = tqdm(total=len(items), desc=f"records {split}", unit="clip", disable=not progress, file=sys.stdout)
    for k in range(n):
        chunk = items[k * per_shard:(k + 1) * per_shard]
        final = os.path.join(out_dir, shard_name(split, k, n))
        if os.path.exists(final):
            bar.update(len(chunk))
            continue
        tmp = final + ".tmp"
        with tf.io.TFRecordWriter(tmp) as w:
            for item in chunk:
                try:
                    w.write(to_example(item))
                    written += 1
                except (audio_lib.AudioError, ValueError, UnicodeError) as e:
                    failures.append(dict(item=str(item.get("file") or item.get("clip_id")), reason=str(e)))
                bar.update(1)
        os.replace(tmp, final)
    bar.close()
    return n, written


def records_dir_name(sample_rate: int) -> str:
    """`records` for the reference 16 kHz, `records_<rate>` for any other rate."""
    return "records" if int(sample_rate) == 16000 else f"records_{int(sample_rate)}"


def write_corpus_records(corpus_dir: str, rows: list[dict], *, sample_rate: int = 16000, per_shard: int = 32,
                         progress: bool = True) -> dict:
    """The corpus builder's manifest rows -> `records[_<rate>]/{train,test}-*.tfrecord`."""
    out_dir = os.path.join(corpus_dir, records_dir_name(sample_rate))
    failures, info = [], {}

    def to_example(r):
        x, sr = audio_lib.load_audio(os.path.join(corpus_dir, r["audio"][str(sample_rate)]), sample_rate)
        return make_example(r["clip_id"], r["work_id"], x, sr, r["texts"], r["text_ok"], r["tags"])

    for split in ("train", "test"):
        items = [r for r in rows if r["split"] == split]
        if items:
            before = len(failures)
            shards, _ = _write_shards(out_dir, split, items, per_shard, to_example, progress, failures)
            info[split] = dict(shards=shards, examples=len(items) - (len(failures) - before))
    if failures:
        with open(os.path.join(out_dir, "failures.jsonl"), "w") as f:
            for x in failures:
                f.write(json.dumps(x) + "\n")
    return info


def _read_texts(path: str, failures: list) -> dict[str, dict]:
    out = {}
    with open(path, "rb") as f:
        for ln, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{ln}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                failures.append(dict(item=where, reason="line is not UTF-8"))
                continue
            except json.JSONDecodeError as e:
                failures.append(dict(item=where, reason=f"not JSON: {e.msg}"))
                continue
            if not isinstance(row, dict) or not row.get("file"):
                failures.append(dict(item=where, reason="missing column 'file'"))
                continue
            texts = {s: [t for t in row.get(s, []) if isinstance(t, str) and t.strip()] for s in weak_text.SOURCES}
            if isinstance(row.get("text"), str) and row["text"].strip():
                texts["long"].append(row["text"])
            if not any(texts.values()):
                failures.append(dict(item=where, reason=f"no non-empty text for {row['file']}"))
                continue
            out[os.path.normpath(row["file"])] = dict(texts=texts, tags=row.get("tags", {}),
                                                      split=row.get("split", "train"))
    return out


def ingest(audio_dir: str, texts_path: str, out: str, *, sample_rate: int = 16000, per_shard: int = 64,
           filter_marks: bool = True, progress: bool = True) -> dict:
    """A folder of audio files + a texts JSONL -> `out/records/{split}-*.tfrecord`."""
    failures: list = []
    texts = _read_texts(texts_path, failures)
    files = {}
    for root, _, names in os.walk(audio_dir):
        for n in names:
            if n.lower().endswith(audio_lib.AUDIO_EXTENSIONS):
                rel = os.path.normpath(os.path.relpath(os.path.join(root, n), audio_dir))
                files[rel] = os.path.join(root, n)
    for rel in sorted(set(texts) - set(files)):
        failures.append(dict(item=rel, reason=f"named in {texts_path} but not found under {audio_dir}"))
    items = [dict(file=rel, path=files[rel], **texts[rel]) for rel in sorted(set(texts) & set(files))]
    untexted = sorted(set(files) - set(texts))
    for rel in untexted:
        failures.append(dict(item=rel, reason=f"no row in {texts_path}"))

    def to_example(it):
        x, sr = audio_lib.load_audio(it["path"], sample_rate)
        ok = weak_text.mark_ok(it["texts"]) if filter_marks else {}
        tags = {a: list(v) for a, v in it["tags"].items()} if isinstance(it["tags"], dict) else {}
        return make_example(it["file"], it["file"], x, sr, it["texts"], ok, tags)

    info = {}
    out_dir = os.path.join(os.path.abspath(out), "records")
    for split in sorted({it["split"] for it in items}):
        chunk = [it for it in items if it["split"] == split]
        before = len(failures)
        shards, written = _write_shards(out_dir, split, chunk, per_shard, to_example, progress, failures)
        info[split] = dict(shards=shards, written_now=written, skipped_now=len(failures) - before)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "failures.jsonl"), "w") as f:
        for x in failures:
            f.write(json.dumps(x) + "\n")
    return dict(out=os.path.abspath(out), audio_files=len(files), with_text=len(items), splits=info,
                failures=len(failures))
