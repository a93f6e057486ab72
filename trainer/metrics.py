"""Metric writers: TensorBoard events (clu) plus a JSONL mirror of every scalar.

Only process 0 writes files; other processes get a writer that drops
everything.  `MODEL_DIR/metrics.jsonl` holds one line per (step, split):
`{"step": 12, "split": "train", "loss": 0.41, ...}`.  On resume the lines of
steps after the restored checkpoint are dropped, so the file reads exactly as
an uninterrupted run's would.

A `gs://` model dir (common/paths.py) has no appends: there metrics.jsonl is rewritten whole and
the TensorBoard events, written by TensorFlow to a local folder, are copied into `MODEL_DIR/<split>`
on every `flush()` (the trainer flushes before each checkpoint and at the end, so after a kill the
bucket holds what the newest checkpoint covers, as the resumed run expects).
"""
from __future__ import annotations

import json
import math
import tempfile
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath

from common import paths



class JsonlWriter:
    """A clu `MetricWriter` (by duck typing, so importing this module does not
    import TensorFlow) that appends scalars as JSON lines; images, audio etc.
    are left to TensorBoard."""

    def __init__(self, path: paths.PathLike, split: str):
        self.path, self.split = paths.resolve(path), split
        self._remote = paths.is_remote(self.path)
        if self._remote:   # kept whole and rewritten on flush
            self._lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        else:
            self._f = open(self.path, "a", encoding="utf-8", buffering=1)  # Line-buffered: survives a kill.

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step), "split": self.split}
        for k, v in scalars.items():
            v = float(np.asarray(v))
            row[k] = v if math.isfinite(v) else str(v)
        line = json.dumps(row) + "\n"
        if self._remote:
            self._lines.append(line)
        else:
            self._f.write(line)

    def write_summaries(self, step, values, metadata=None):
        self.write_scalars(step, {k: v for k, v in values.items() if np.ndim(v) == 0})

    def write_images(self, step, images): pass
    def write_videos(self, step, videos): pass
    def write_audios(self, step, audios, *, sample_rate): pass
    def write_texts(self, step, texts): pass
    def write_histograms(self, step, arrays, num_buckets=None): pass
    def write_hparams(self, hparams): pass

    def flush(self) -> None:
        if self._remote:
            self.path.write_text("".join(self._lines))
        else:
            self._f.flush()

    def close(self) -> None:
        self.flush()
        if not self._remote:
            self._f.close()


class _CopiedEvents:
    """clu's TensorBoard writer on a local folder, its files copied to `remote` on `flush()`."""

    def __init__(self, remote: epath.Path):
        from clu import metric_writers  # Lazy: clu's writers import TensorFlow.

        self.remote, self.local = remote, epath.Path(tempfile.mkdtemp(prefix="tensorboard_"))
        self._writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(self.local)))
        self._sizes: dict[str, int] = {}

    def __getattr__(self, name):   # write_scalars, write_images, ...: the TensorBoard writer's
        return getattr(self._writer, name)

    def flush(self) -> None:
        self._writer.flush()
        for f in self.local.iterdir():
            size = f.stat().length
            if self._sizes.get(f.name) != size:
                (self.remote / f.name).write_bytes(f.read_bytes())
                self._sizes[f.name] = size

    def close(self) -> None:
        self.flush()
        self._writer.close()


def truncate_jsonl(path: paths.PathLike, last_step: int) -> None:
    """Drops lines whose step is after `last_step` (used on resume)."""
    path = paths.resolve(path)
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines(keepends=True)
            if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(rows))


def read_jsonl(path: paths.PathLike, split: str = "train") -> list[dict]:
    return [r for r in map(json.loads, paths.resolve(path).read_text().splitlines())
            if r.get("split") == split]


def create_writer(model_dir: paths.PathLike, split: str):
    """A clu MultiWriter: TensorBoard (under MODEL_DIR/<split>) + JSONL; a no-op on processes > 0."""
    from clu import metric_writers  # Lazy: clu's writers import TensorFlow.

    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    model_dir = paths.resolve(model_dir)
    paths.makedirs(model_dir)
    events = (_CopiedEvents(model_dir / split) if paths.is_remote(model_dir) else
              metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(model_dir / split))))
    return metric_writers.MultiWriter([events, JsonlWriter(model_dir / "metrics.jsonl", split)])
