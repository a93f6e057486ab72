"""TFRecord files read by record number: a seqio `DataSource` whose training order is a pure
function of (seed, global example index) (common/order.py).

    source = IndexedTFRecordSource({"train": "corpus/records/train-*.tfrecord"}, records.feature_spec())

Each shard is indexed once per process by walking its record headers (8-byte length, 4-byte CRC,
data, 4-byte CRC: nothing else is read), so record `r` of a split is one seek and one read.  While
the trainer's input pipeline reads a `Stream` (`order.reading`), `get_dataset` gives that host's
candidates `g` (from the stream's start): record `index_shuffle(g mod N, (seed, epoch))`, epoch
`g // N`, with the features `order.INDEX_KEY` (the candidate, for the iterator's
position) and `order.SEED_KEY` (the example's stateless seed, which the project's random
preprocessors draw from: `data.preprocessors.seeded_map`).  Nothing is buffered but what tf.data
prefetches, so the saved position is a few integers and a restart costs no decoding.

Every record's data CRC is checked as it is read.  A bad record (a CRC mismatch, a read that
ends early, the tail of a truncated file) stops the run with an error naming the file and record
(`on_bad_record='stop'`, the default), or with `on_bad_record='skip'` is dropped, logged with its
file, record and reason, and counted (`RecordIndex.bad`, the iterator's `bad_records`): the rest
of the file is read.

Outside a stream (`text_options`, embedding, benchmarks) it is an ordinary source: the host's
records (`shard_info`) once, in order or shuffled with `seed`, without the two features (random
preprocessors then take seqio's seeds, which differ from one repeat to the next).
"""
from __future__ import annotations

import glob as glob_lib
import hashlib
import json
import logging
import os
import struct
import threading
from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

from common import order
from common.errors import ConfigError

_HEADER = 12     # uint64 length + uint32 CRC of the length
_FOOTER = 4      # uint32 CRC of the data
_LOCK = threading.Lock()
_INDEXES: dict[tuple, "RecordIndex"] = {}
ON_BAD_RECORD = ("stop", "skip")
log = logging.getLogger("data.indexed_records")


class RecordFileError(ConfigError):
    """A record file that cannot be indexed or read; the message names it (a user error: exit 2)."""


def _glob(pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(pattern) if "://" in pattern else glob_lib.glob(pattern))


def _size(path: str) -> int:
    return tf.io.gfile.stat(path).length if "://" in path else os.path.getsize(path)


def _open(path: str):
    return tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    import google_crc32c

    c = google_crc32c.value(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def scan(path: str, truncated_ok: bool = False) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(data offsets, data lengths, problem) of every record of the TFRecord file `path`
    (uncompressed).  A truncated file or a damaged header raises `RecordFileError` naming the
    file, or with `truncated_ok` ends the index at the last whole record and says why in `problem`."""
    size, offsets, lengths, pos, problem = _size(path), [], [], 0, None
    with _open(path) as f:
        while pos < size:
            f.seek(pos)
            head = f.read(_HEADER)
            (n,) = struct.unpack("<Q", head[:8]) if len(head) == _HEADER else (0,)
            end = pos + _HEADER + n + _FOOTER
            if len(head) < _HEADER:
                problem = f"{path}: truncated record header at byte {pos} of {size}"
            elif struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                problem = f"{path}: the record header at byte {pos} fails its CRC: the file is damaged"
            elif end > size:
                problem = (f"{path}: the record at byte {pos} declares {n} bytes, past the end of the file "
                           f"({size} bytes): the file is truncated")
            if problem:
                if not truncated_ok:
                    raise RecordFileError(problem)
                problem += f"; {len(offsets)} whole records before it are read, {size - pos} bytes after it are not"
                break
            offsets.append(pos + _HEADER)
            lengths.append(n)
            pos = end
    return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64), problem


class RecordIndex:
    """Every record of a list of TFRecord files, by number: `read(r)` gives record r's bytes,
    its CRC checked.  With `on_bad_record='skip'` a bad record reads as b"" and is counted in
    `bad` ({record or file: reason}); the tail of a truncated file is left out of the index."""

    def __init__(self, files: list[str], sizes: list[int], on_bad_record: str = "stop"):
        if on_bad_record not in ON_BAD_RECORD:
            raise ConfigError(f"on_bad_record={on_bad_record!r}: one of {ON_BAD_RECORD}")
        self.files, self.sizes, self.skip = files, sizes, on_bad_record == "skip"
        self.bad: dict[str, str] = {}
        self._bad_lock = threading.Lock()
        scanned = [scan(f, truncated_ok=self.skip) for f in files]
        for f, (_, _, problem) in zip(files, scanned):
            if problem:
                self._skip(f, problem)
        self.file_of = np.concatenate([np.full(len(o), i, np.int32) for i, (o, _, _) in enumerate(scanned)] or
                                      [np.zeros(0, np.int32)])
        self.offsets = np.concatenate([o for o, _, _ in scanned] or [np.zeros(0, np.int64)])
        self.lengths = np.concatenate([n for _, n, _ in scanned] or [np.zeros(0, np.int64)])
        self._local = threading.local()

    @classmethod
    def of(cls, pattern: str, on_bad_record: str = "stop") -> "RecordIndex":
        """The index of the files matching `pattern`, built once per process and per file state."""
        files = _glob(pattern)
        sizes = [_size(f) for f in files]
        key = (pattern, tuple(zip(files, sizes)), on_bad_record)
        with _LOCK:
            if key not in _INDEXES:
                _INDEXES[key] = cls(files, sizes, on_bad_record)
            return _INDEXES[key]

    def _skip(self, where: str, reason: str) -> None:
        with self._bad_lock:
            first = where not in self.bad
            self.bad[where] = reason
        if first:
            log.warning("skipped (on_bad_record='skip'; %d so far): %s", len(self.bad), reason)

    def __len__(self) -> int:
        return len(self.offsets)

    def fingerprint(self) -> str:
        """What a resumed run compares: the files' names and sizes, and the record count."""
        desc = [[os.path.basename(f), s] for f, s in zip(self.files, self.sizes)] + [len(self)]
        return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]

    def read(self, r) -> bytes:
        r = int(r)
        i = int(self.file_of[r])
        handles = self._local.__dict__.setdefault("handles", {})
        if i not in handles:
            handles[i] = _open(self.files[i])
        f = handles[i]
        f.seek(int(self.offsets[r]))
        n = int(self.lengths[r])
        data = f.read(n + _FOOTER)
        problem = None
        if len(data) != n + _FOOTER:
            problem = f"{self.files[i]}: record {r} ends early (the file changed or was truncated while it was read)"
        elif struct.unpack("<I", data[n:])[0] != masked_crc(data[:n]):
            problem = f"{self.files[i]}: record {r} fails its CRC (its bytes are damaged)"
        if problem is None:
            return data[:n]
        if not self.skip:
            raise RecordFileError(problem + "; `on_bad_record='skip'` skips and counts such records")
        self._skip(f"{self.files[i]}#{r}", problem)
        return b""


class IndexedTFRecordSource(seqio.DataSource):
    """TFRecord files of `tf.train.Example`s read by record number (the module doc)."""

    reads_streams = True      # `trainer.input_pipeline.SeqioData` builds its order on it

    def __init__(self, split_to_filepattern: Mapping[str, str], feature_description: Mapping,
                 on_bad_record: str = "stop"):
        if on_bad_record not in ON_BAD_RECORD:
            raise ConfigError(f"on_bad_record={on_bad_record!r}: one of {ON_BAD_RECORD}")
        self._patterns = dict(split_to_filepattern)
        self._features = dict(feature_description)
        self.on_bad_record = on_bad_record
        super().__init__(splits=list(self._patterns), performs_internal_shuffling=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._patterns})"

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return _glob(self._patterns[split])

    def index(self, split: str) -> RecordIndex:
        idx = RecordIndex.of(self._patterns[split], self.on_bad_record)
        if not len(idx):
            raise FileNotFoundError(f"{self._patterns[split]}: no records for split {split!r}")
        return idx

    # No `num_input_examples`: seqio would `.cache()` a source it knows to be small, which on the
    # trainer's endless stream keeps every decoded candidate in memory.

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                    num_epochs=1) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs   # seqio repeats and trims
        idx = self.index(split)
        n = len(idx)
        stream = order.current()
        ordered = stream is not None
        if not ordered:      # one pass over this host's records; seqio's seeds (they differ per repeat)
            host, hosts = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
            ds = tf.data.Dataset.range(host, n, hosts)
            stream = order.Stream(host=host, num_hosts=hosts, per_host=1, start=0, seed=int(seed or 0),
                                  shuffle=shuffle)
        else:
            stop = np.iinfo(np.int64).max // (4 * stream.num_hosts * stream.per_host * stream.num_tasks)
            ds = tf.data.Dataset.range(stream.start, stop).map(stream.global_index)
        s = stream.seed
        if stream.keep is not None:
            ds = ds.filter(stream.keep)

        def locate(g):
            r = g % n
            if stream.shuffle:
                r = tf.random.experimental.index_shuffle(r, tf.stack([tf.constant(s + (0x0DE4 << 40), tf.int64),
                                                                      g // n]), n - 1)
            return g, r

        def read(g, r):
            return g, tf.ensure_shape(tf.numpy_function(idx.read, [r], tf.string, stateful=False), [])

        def parse(g, raw):
            ex = tf.io.parse_single_example(raw, self._features)
            if ordered:
                ex[order.INDEX_KEY] = g * stream.num_tasks + stream.task
                ex[order.SEED_KEY] = tf.stack([tf.constant(s, tf.int64), g])
            return ex

        ds = ds.map(locate).map(read, num_parallel_calls=tf.data.AUTOTUNE)
        if idx.skip:   # a skipped record reads as b"" (no tf.Example serializes to nothing but the empty one)
            ds = ds.filter(lambda g, raw: tf.strings.length(raw) > 0)
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
