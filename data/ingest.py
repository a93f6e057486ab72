"""`python -m data.ingest --audio_dir=DIR --texts=TEXTS.jsonl --out=CORPUS [--sample_rate=16000] [Beam options]`.

Users' own audio and texts -> the sharded TFRecords the seqio tasks read, as an Apache Beam
pipeline: `CORPUS/records/<split>-NNNNN-of-MMMMM.tfrecord`, `records/INGEST.json` (what went into
each shard) and `records/failures.jsonl` (every skipped file or row, with the reason).  Local
folders or `gs://` buckets, for the audio, the texts and the output alike.

It runs here on Beam's in-process runner (the default; `--direct_num_workers=N
--direct_running_mode=multi_processing` for more cores) and unchanged on a distributed one:
`--runner=DataflowRunner --project=... --region=... --temp_location=gs://...`, or
`--runner=FlinkRunner --flink_master=...`: every argument this binary does not know goes to Beam's
`PipelineOptions`.

The pipeline:
1. the texts JSONL is read line by line (its file and line number kept for errors) and every row
   checked (`data.records.parse_row`); the audio folder is listed (`fileio.MatchFiles`, recursive);
2. rows and files are joined by the path inside the folder: a row without a file, a file without a
   row and a second row for a file are listed as failures (the first row, by line, stands);
3. split `s` with `c` clips gets `n` shards, the smallest power of two with `n * per_shard >= c`,
   and a clip goes to shard `sha256(path) mod n`, its clips in path order; every shard is written
   by one worker, whole or not at all (a temporary object renamed when complete);
4. a last step writes `INGEST.json` and `failures.jsonl` and removes what is not part of this
   output (shards of an earlier packing, temporary files of killed attempts).

So the output is a function of the current inputs, the same on any runner and any number of
workers.  Each shard's inputs (every clip's path, size, modification time and texts, and the rate)
are hashed into a key kept beside it (`records/.ingest/<shard>.json`): a re-run, or a run after a
kill, keeps a shard whose key is unchanged without decoding anything, and writes only the rest;
adding files rewrites just the shards they fall into, until a split's shard count doubles.
The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile

from common import cli
from data import audio as audio_lib
from data import records
from data import weak_text

log = logging.getLogger("ingest")
SIDECARS = ".ingest"   # records/.ingest/<shard>.json: a shard's input key, examples and failures


def num_shards(count: int, per_shard: int) -> int:
    """The smallest power of two `n` with `n * per_shard >= count` (at least 1)."""
    n = 1
    while n * per_shard < count:
        n *= 2
    return n


def bucket(file: str, n: int) -> int:
    """The shard of a clip: a stable hash of its path inside the audio folder, mod `n`."""
    return int.from_bytes(hashlib.sha256(file.encode("utf-8")).digest()[:8], "big") % n


def _numbered_lines(path: str):
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type="uncompressed") as f:
        for ln, raw in enumerate(f, 1):
            if raw.strip():
                yield ln, raw


def _parse(line, texts_path: str):
    import apache_beam as beam

    key, entry = records.parse_row(line[1], f"{texts_path}:{line[0]}")
    if key is None:
        yield beam.pvalue.TaggedOutput("failures", entry)
    else:
        entry["line"] = line[0]
        yield key, entry


def _join(kv, texts_path: str, audio_dir: str):
    """(path, {rows, files}) -> an item to ingest, and the failures of the pair."""
    import apache_beam as beam

    rel, g = kv
    rows, files = sorted(g["rows"], key=lambda r: r["line"]), list(g["files"])
    if not files:
        for r in rows:
            yield beam.pvalue.TaggedOutput("failures", dict(
                item=rel, reason=f"named in {texts_path} (line {r['line']}) but not found under {audio_dir}"))
        return
    if not rows:
        yield beam.pvalue.TaggedOutput("failures", dict(item=rel, reason=f"no row in {texts_path}"))
        return
    for r in rows[1:]:
        yield beam.pvalue.TaggedOutput("failures", dict(
            item=r["where"], reason=f"a second row for {rel} (the first, line {rows[0]['line']}, is used; "
                                    f"one row per file)"))
    m, r = files[0], rows[0]
    yield dict(file=rel, path=m.path, size=m.size_in_bytes, mtime=m.last_updated_in_seconds,
               texts=r["texts"], tags=r["tags"], split=r["split"])


def _local_copy(path: str, tmp_dir: str) -> str:
    """A local file to decode: the path itself, or a copy of a remote object in `tmp_dir`."""
    from common import paths

    if not paths.is_remote(path):
        return path
    from apache_beam.io.filesystems import FileSystems

    local = os.path.join(tmp_dir, os.path.basename(path))
    with FileSystems.open(path, compression_type="uncompressed") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return local


class WriteShard:
    """((split, k), {slot: [n], items: [...]}) -> the shard `split-k-of-n`, or the kept one whose key
    is unchanged; yields its entry for `INGEST.json`."""

    def __init__(self, out_dir: str, sample_rate: int, filter_marks: bool):
        self.out_dir, self.sample_rate, self.filter_marks = out_dir, int(sample_rate), bool(filter_marks)

    def __call__(self, kv):
        from common import paths

        (split, k), g = kv
        n = g["slot"][0]
        part = sorted(g["items"], key=lambda it: it["file"])
        name = records.shard_name(split, k, n)
        key = hashlib.sha256(json.dumps(
            [self.sample_rate, self.filter_marks,
             [[it["file"], it["size"], it["mtime"], it["texts"], it["tags"]] for it in part]]).encode()).hexdigest()
        final = posixpath.join(self.out_dir, name)
        sidecar = paths.resolve(posixpath.join(self.out_dir, SIDECARS, name + ".json"))
        if sidecar.exists() and paths.resolve(final).exists():
            was = json.loads(sidecar.read_text())
            if was.get("key") == key:
                return dict(name=name, split=split, written=False, **was)
        failures: list = []
        with tempfile.TemporaryDirectory() as tmp:
            def to_example(it):
                x, sr = audio_lib.load_audio(_local_copy(it["path"], tmp), self.sample_rate)
                ok = weak_text.mark_ok(it["texts"]) if self.filter_marks else {}
                return records.make_example(it["file"], it["file"], x, sr, it["texts"], ok, it["tags"])

            good = records.write_shard(final, part, to_example, failures)
        entry = dict(key=key, examples=good, failures=failures)
        paths.makedirs(sidecar.parent)
        paths.write_text_atomic(sidecar, json.dumps(entry))
        log.info("%s: %d clips written, %d failed", name, good, len(failures))
        return dict(name=name, split=split, written=True, **entry)


class Finalize:
    """Every shard's entry and every failure -> `INGEST.json`, `failures.jsonl`, and nothing stale."""

    def __init__(self, out_dir: str, sample_rate: int, filter_marks: bool):
        self.out_dir, self.sample_rate, self.filter_marks = out_dir, int(sample_rate), bool(filter_marks)

    def __call__(self, shards, failures, audio_files, with_text):
        from common import paths

        shards = sorted(shards, key=lambda s: s["name"])
        failures = sorted(failures + [f for s in shards for f in s["failures"]],
                          key=lambda f: (f["item"], f["reason"]))
        keep = {s["name"] for s in shards}
        out, side = paths.resolve(self.out_dir), paths.resolve(posixpath.join(self.out_dir, SIDECARS))
        stale = sorted(f.name for f in out.iterdir()
                       if (f.name.endswith(".tfrecord") and f.name not in keep) or ".tfrecord.tmp" in f.name)
        for name in stale:
            (out / name).unlink()
            log.info("removed %s: not part of this ingest's output", name)
        for f in side.iterdir() if side.exists() else []:
            if f.name.removesuffix(".json") not in keep:
                f.unlink()
        splits = {}
        for s in shards:
            d = splits.setdefault(s["split"], dict(shards=0, examples=0, skipped=0, shards_written=0,
                                                   shards_kept=0))
            d["shards"] += 1
            d["examples"] += s["examples"]
            d["skipped"] += len(s["failures"])
            d["shards_written" if s["written"] else "shards_kept"] += 1
        summary = dict(audio_files=audio_files, with_text=with_text, splits=splits, failures=len(failures),
                       removed_stale_shards=sum(f.endswith(".tfrecord") for f in stale))
        index = dict(sample_rate=self.sample_rate, filter_marks=self.filter_marks, summary=summary,
                     shards={s["name"]: dict(key=s["key"], examples=s["examples"], failures=s["failures"])
                             for s in shards})
        paths.write_text_atomic(out / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures))
        paths.write_text_atomic(out / "INGEST.json", json.dumps(index))
        return summary


def build(p, audio_dir: str, texts_path: str, out_dir: str, *, sample_rate: int = 16000, per_shard: int = 64,
          filter_marks: bool = True):
    """Adds the ingest to the Beam pipeline `p`; returns the PCollection of its one summary."""
    import apache_beam as beam
    from apache_beam.io import fileio

    root = audio_dir.rstrip("/")
    rows, row_failures = (
        p | "Texts" >> beam.Create([texts_path])
        | "Lines" >> beam.FlatMap(_numbered_lines)
        | "SpreadLines" >> beam.Reshuffle()
        | "Parse" >> beam.FlatMap(_parse, texts_path).with_outputs("failures", main="rows"))
    files = (
        p | "List" >> fileio.MatchFiles(root + "/**", empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
        | "Audio" >> beam.Filter(lambda m: m.path.lower().endswith(audio_lib.AUDIO_EXTENSIONS))
        | "ByPath" >> beam.Map(lambda m: (posixpath.normpath(m.path[len(root) + 1:]), m)))
    items, join_failures = (
        {"rows": rows, "files": files} | "Join" >> beam.CoGroupByKey()
        | "Pair" >> beam.FlatMap(_join, texts_path, audio_dir).with_outputs("failures", main="items"))
    counts = items | "PerSplit" >> beam.Map(lambda it: (it["split"], 1)) | "Count" >> beam.CombinePerKey(sum)
    shard_counts = counts | "NumShards" >> beam.MapTuple(lambda s, c: (s, num_shards(c, per_shard)))
    keyed = items | "Bucket" >> beam.Map(
        lambda it, n: ((it["split"], bucket(it["file"], n[it["split"]])), it), n=beam.pvalue.AsDict(shard_counts))
    slots = shard_counts | "Slots" >> beam.FlatMapTuple(lambda s, n: [((s, k), n) for k in range(n)])
    shards = ({"slot": slots, "items": keyed} | "Shards" >> beam.CoGroupByKey()
              | "Write" >> beam.Map(WriteShard(out_dir, sample_rate, filter_marks)))
    failures = ((row_failures, join_failures) | "Failures" >> beam.Flatten()
                | "AllFailures" >> beam.combiners.ToList())
    n_files = files | "CountFiles" >> beam.combiners.Count.Globally()
    n_items = items | "CountItems" >> beam.combiners.Count.Globally()
    return (shards | "AllShards" >> beam.combiners.ToList()
            | "Finalize" >> beam.Map(Finalize(out_dir, sample_rate, filter_marks),
                                     beam.pvalue.AsSingleton(failures), beam.pvalue.AsSingleton(n_files),
                                     beam.pvalue.AsSingleton(n_items)))


def run(audio_dir: str, texts_path: str, out: str, *, sample_rate: int = 16000, per_shard: int = 64,
        filter_marks: bool = True, beam_args=()) -> dict:
    """Runs the ingest to completion on the runner `beam_args` names (Beam's in-process one when
    none is named); returns the summary `INGEST.json` holds."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from common import paths

    audio_dir, texts_path = str(paths.resolve(audio_dir)), str(paths.resolve(texts_path))
    out_dir = posixpath.join(str(paths.resolve(out)), "records")
    paths.makedirs(paths.resolve(out_dir))
    options = PipelineOptions(list(beam_args))
    runner = None
    if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
        # Beam's DirectRunner first tries to download the Prism runner from GitHub; its in-process
        # batch runner, which it falls back to, runs offline.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        runner = FnApiRunner()
    with beam.Pipeline(runner=runner, options=options) as p:
        build(p, audio_dir, texts_path, out_dir, sample_rate=sample_rate, per_shard=per_shard,
              filter_marks=filter_marks)
    summary = json.loads(paths.resolve(posixpath.join(out_dir, "INGEST.json")).read_text())["summary"]
    return dict(out=str(paths.resolve(out)), **summary)


def _unknown_beam_args(args: list) -> list:
    """The arguments Beam's `PipelineOptions` would discard with a warning (a typo'd flag)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers = []
    PipelineOptions(args).get_all_options(add_extra_args_fn=parsers.append, display_warnings=False)
    return parsers[0].parse_known_args(args)[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        description="Users' audio + texts JSONL -> sharded TFRecords for seqio, as an Apache Beam pipeline "
                    "(arguments this binary does not know are Beam's pipeline options, e.g. --runner).")
    ap.add_argument("--audio_dir", required=True, help="a folder or gs:// prefix, listed recursively")
    ap.add_argument("--texts", required=True, help="JSONL, one row per audio file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample_rate", type=int, default=16000)
    ap.add_argument("--per_shard", type=int, default=64, help="clips per shard, at most (before rounding "
                    "the shard count up to a power of two)")
    ap.add_argument("--no_text_filter", action="store_true", help="mark every text as about the music")
    a, beam_args = ap.parse_known_args(argv)
    unknown = _unknown_beam_args(beam_args)
    if unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)} (neither this binary's flags nor Beam's "
                 f"pipeline options)")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    from common import paths
    for p, what in ((a.audio_dir, "--audio_dir"), (a.texts, "--texts")):
        if not paths.resolve(p).exists():
            ap.error(f"{what}={p} does not exist")
    if a.per_shard < 1 or a.sample_rate < 1:
        ap.error("--per_shard and --sample_rate must be positive")
    try:
        paths.check_writable(paths.resolve(a.out), "--out")
    except paths.PathError as e:
        ap.error(str(e))
    r = run(a.audio_dir, a.texts, a.out, sample_rate=a.sample_rate, per_shard=a.per_shard,
            filter_marks=not a.no_text_filter, beam_args=beam_args)
    print(f"[records] {r['with_text']} of {r['audio_files']} audio files had texts; {r['failures']} problems "
          f"listed in {r['out']}/records/failures.jsonl")
    print(f"[records] records written to {r['out']}/records")
    return cli.print_json(r)


if __name__ == "__main__":
    main()
