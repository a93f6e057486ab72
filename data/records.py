r"""Clips -> sharded TFRecord files that a seqio source reads: the corpus's, and the pieces of the
users'-audio ingest (`data/ingest.py`, an Apache Beam pipeline): the texts rows, the shards.

One `tf.train.Example` per clip: `clip_id`, `work_id`, `audio` (16-bit PCM, little endian),
`sample_rate`, `num_samples`, the four text sources `text_{short,long,playlist,label}` with the text
filter's marks `ok_{...}` (1 = about the music), and ground-truth tags `tag_{attribute}`.

The texts JSONL has one object per audio file: `{"file": "rel/path.mp3", "short": [...],
"long": [...], "playlist": [...], "label": [...], "tags": {"genre": [...]}, "split": "train"}`; a plain
`"text": "..."` counts as long-form.  Every field's type is checked (a string where a list of strings
belongs is an error, not a list of characters), split names are letters, digits and '_', and one
row per file counts (later ones are listed and ignored).  Each shard is written whole or not at all.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import re
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
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    n = max(1, -(-len(items) // per_shard))
    written = 0
    bar = tqdm(total=len(items), desc=f"records {split}", unit="clip", disable=not progress, file=sys.stdout)
    for k in range(n):
        chunk = items[k * per_shard:(k + 1) * per_shard]
        final = os.path.join(out_dir, shard_name(split, k, n))
        if not os.path.exists(final):
            written += write_shard(final, chunk, to_example, failures)
        bar.update(len(chunk))
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


_FIELDS = ("file", "text", *weak_text.SOURCES, "tags", "split")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _row_problem(row) -> str | None:
    """What is wrong with one texts-JSONL row (a field of the wrong type, an unknown field or tag
    attribute, an unsafe file or split name), naming the field; None when it is well-formed."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        return f"unknown field {unknown[0]!r} (fields: {', '.join(_FIELDS)})"
    f = row.get("file")
    if not isinstance(f, str) or not f.strip():
        return "missing column 'file' (a path relative to --audio_dir)"
    if os.path.isabs(f) or os.path.normpath(f).split(os.sep)[0] == "..":
        return f"field 'file': {f!r} is not a path inside --audio_dir"
    if "text" in row and not isinstance(row["text"], str):
        return f"field 'text': expected a string, got {type(row['text']).__name__}"
    for name in weak_text.SOURCES:
        v = row.get(name, [])
        if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
            return f"field {name!r}: expected a list of strings, got {json.dumps(v)[:80]}"
    tags = row.get("tags", {})
    if not isinstance(tags, dict):
        return f"field 'tags': expected an object of attribute -> list of strings, got {type(tags).__name__}"
    for attr, v in tags.items():
        if attr not in TAG_ATTRIBUTES:
            return f"field 'tags.{attr}': unknown attribute (attributes: {', '.join(TAG_ATTRIBUTES)})"
        if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
            return f"field 'tags.{attr}': expected a list of strings, got {json.dumps(v)[:80]}"
    split = row.get("split", "train")
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        return f"field 'split': {json.dumps(split)[:80]} is not a split name (letters, digits and '_')"
    return None


def parse_row(raw: bytes, where: str) -> tuple[str | None, dict]:
    """One texts-JSONL line -> `(file key, {texts, tags, split, where})`, or `(None, failure)` naming
    `where` (the file and line) and what is wrong: not UTF-8, not JSON, a malformed field
    (`_row_problem`), or no non-empty text.  The key is the normalized path inside the audio folder."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, dict(item=where, reason="line is not UTF-8")
    except json.JSONDecodeError as e:
        return None, dict(item=where, reason=f"not JSON: {e.msg}")
    problem = _row_problem(row)
    if problem:
        return None, dict(item=where, reason=problem)
    texts = {s: [t for t in row.get(s, []) if t.strip()] for s in weak_text.SOURCES}
    if row.get("text", "").strip():
        texts["long"].append(row["text"])
    if not any(texts.values()):
        return None, dict(item=where, reason=f"no non-empty text for {row['file']}")
    return posixpath.normpath(row["file"]), dict(texts=texts, tags=row.get("tags", {}),
                                                 split=row.get("split", "train"), where=where)


def write_shard(final: str, items: list, to_example, failures: list) -> int:
    """One shard, whole or not at all: locally a temporary file beside it, its own per attempt,
    renamed when complete; in a bucket a local file uploaded as one object (objects are replaced
    whole).  An item that cannot be used is listed in `failures` and left out.  Returns the
    examples written."""
    import tempfile
    import uuid

    import tensorflow as tf

    from common import paths

    remote = paths.is_remote(final)
    with tempfile.TemporaryDirectory() as scratch:
        tmp, good = (os.path.join(scratch, "shard") if remote else f"{final}.tmp-{uuid.uuid4().hex[:8]}"), 0
        try:
            with tf.io.TFRecordWriter(tmp) as w:
                for item in items:
                    try:
                        w.write(to_example(item))
                        good += 1
                    except (audio_lib.AudioError, ValueError, UnicodeError) as e:
                        failures.append(dict(item=str(item.get("file") or item.get("clip_id")), reason=str(e)))
            if remote:
                with open(tmp, "rb") as f:
                    paths.resolve(final).write_bytes(f.read())
            else:
                os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return good
