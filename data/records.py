r"""Clips -> sharded TFRecord files that a seqio source reads; users' own audio folders too
(`ingest`, what `python -m data.ingest --audio_dir=/music --texts=/music/texts.jsonl --out=DIR` runs).

One `tf.train.Example` per clip: `clip_id`, `work_id`, `audio` (16-bit PCM, little endian),
`sample_rate`, `num_samples`, the four text sources `text_{short,long,playlist,label}` with the text
filter's marks `ok_{...}` (1 = about the music), and ground-truth tags `tag_{attribute}`.

The texts JSONL has one object per audio file: `{"file": "rel/path.mp3", "short": [...],
"long": [...], "playlist": [...], "label": [...], "tags": {"genre": [...]}, "split": "train"}`; a plain
`"text": "..."` counts as long-form.  Every field's type is checked (a string where a list of strings
belongs is an error, not a list of characters), split names are letters, digits and '_', and one
row per file counts (later ones are listed and ignored).  The output is a function of the current
inputs (`ingest`: unchanged shards kept, changed ones rewritten, stale ones removed), each shard
written whole or not at all.  Files that cannot be decoded (truncated ones included), malformed,
empty or non-UTF-8 rows and rows naming missing files are skipped and listed in `failures.jsonl`
with the line, field or file and the reason; nothing else is lost.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
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
            written += _write_shard(final, chunk, to_example, failures)
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


def _read_texts(path: str, failures: list) -> dict[str, dict]:
    """The texts JSONL's rows by file.  A malformed row is listed in `failures` with its line and
    field; a second row for a file already read is listed and ignored (one row per file: the first)."""
    out, first_line = {}, {}
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
            problem = _row_problem(row)
            if problem:
                failures.append(dict(item=where, reason=problem))
                continue
            texts = {s: [t for t in row.get(s, []) if t.strip()] for s in weak_text.SOURCES}
            if row.get("text", "").strip():
                texts["long"].append(row["text"])
            if not any(texts.values()):
                failures.append(dict(item=where, reason=f"no non-empty text for {row['file']}"))
                continue
            key = os.path.normpath(row["file"])
            if key in out:
                failures.append(dict(item=where, reason=f"a second row for {row['file']} (the first, line "
                                                        f"{first_line[key]}, is used; one row per file)"))
                continue
            first_line[key] = ln
            out[key] = dict(texts=texts, tags=row.get("tags", {}), split=row.get("split", "train"))
    return out


def _item_key(it: dict) -> list:
    st = os.stat(it["path"])
    return [it["file"], st.st_size, st.st_mtime_ns, it["texts"], it["tags"]]


def ingest(audio_dir: str, texts_path: str, out: str, *, sample_rate: int = 16000, per_shard: int = 64,
           filter_marks: bool = True, progress: bool = True) -> dict:
    """A folder of audio files + a texts JSONL -> `out/records/{split}-*.tfrecord`.

    The output is a function of the current inputs: files sorted and packed into fixed shards, each
    written under a temporary name and renamed when complete.  `records/INGEST.json` records what
    went into each shard (every item's path, size, mtime and texts; the rate and text marks), so a
    re-run keeps a shard whose inputs are unchanged (an interrupted ingest resumes), rewrites one
    whose inputs changed, and removes shards no longer part of the output (files removed or
    added change the packing).  `failures.jsonl` lists every problem, also those of kept shards."""
    from tqdm import tqdm

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
    for rel in sorted(set(files) - set(texts)):
        failures.append(dict(item=rel, reason=f"no row in {texts_path}"))

    def to_example(it):
        x, sr = audio_lib.load_audio(it["path"], sample_rate)
        ok = weak_text.mark_ok(it["texts"]) if filter_marks else {}
        return make_example(it["file"], it["file"], x, sr, it["texts"], ok, it["tags"])

    out_dir = os.path.join(os.path.abspath(out), "records")
    os.makedirs(out_dir, exist_ok=True)
    index_path = os.path.join(out_dir, "INGEST.json")
    old = json.load(open(index_path)) if os.path.exists(index_path) else {}
    index = {"sample_rate": int(sample_rate), "filter_marks": bool(filter_marks), "shards": {}}
    same_settings = {k: old.get(k) for k in ("sample_rate", "filter_marks")} == \
        {k: index[k] for k in ("sample_rate", "filter_marks")}
    info = {}
    try:
        for split in sorted({it["split"] for it in items}):
            chunk = [it for it in items if it["split"] == split]
            n = max(1, -(-len(chunk) // per_shard))
            written = skipped = 0
            bar = tqdm(total=len(chunk), desc=f"records {split}", unit="clip", disable=not progress,
                       file=sys.stdout)
            for k in range(n):
                part = chunk[k * per_shard:(k + 1) * per_shard]
                name = shard_name(split, k, n)
                key = hashlib.sha256(json.dumps([_item_key(it) for it in part]).encode()).hexdigest()
                was = old.get("shards", {}).get(name)
                if same_settings and was and was["key"] == key and os.path.exists(os.path.join(out_dir, name)):
                    index["shards"][name] = was
                else:
                    shard_failures = []
                    good = _write_shard(os.path.join(out_dir, name), part, to_example, shard_failures)
                    index["shards"][name] = was = dict(key=key, examples=good, failures=shard_failures)
                    written += good
                    _write_json(index_path, {**index, "shards": {**old.get("shards", {}), **index["shards"]}})
                failures.extend(was["failures"])
                skipped += len(was["failures"])
                bar.update(len(part))
            bar.close()
            info[split] = dict(shards=n, written_now=written, skipped=skipped)
        stale = sorted(f for f in os.listdir(out_dir)
                       if (f.endswith(".tfrecord") and f not in index["shards"]) or f.endswith(".tfrecord.tmp"))
        for f in stale:
            os.remove(os.path.join(out_dir, f))
            log.info("removed %s: not part of this ingest's output (its inputs changed)", f)
        _write_json(index_path, index)
    finally:
        _write_text(os.path.join(out_dir, "failures.jsonl"), "".join(json.dumps(x) + "\n" for x in failures))
    return dict(out=os.path.abspath(out), audio_files=len(files), with_text=len(items), splits=info,
                failures=len(failures), removed_stale_shards=len(stale))


def _write_shard(final: str, items: list, to_example, failures: list) -> int:
    """One shard, whole or not at all (a temporary file renamed when complete); an item that
    cannot be used is listed in `failures` and left out.  Returns the examples written."""
    import tensorflow as tf

    tmp, good = final + ".tmp", 0
    try:
        with tf.io.TFRecordWriter(tmp) as w:
            for item in items:
                try:
                    w.write(to_example(item))
                    good += 1
                except (audio_lib.AudioError, ValueError, UnicodeError) as e:
                    failures.append(dict(item=str(item.get("file") or item.get("clip_id")), reason=str(e)))
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return good


def _write_json(path: str, obj) -> None:
    _write_text(path, json.dumps(obj))


def _write_text(path: str, text: str) -> None:
    from common import paths

    paths.write_text_atomic(paths.resolve(path), text)
