"""Metric writers: TensorBoard events (clu) plus a JSONL mirror of every scalar.

Only process 0 writes files; other processes get a writer that drops
everything.  `MODEL_DIR/metrics.jsonl` holds one line per (step, split):
`{"step": 12, "split": "train", "loss": 0.41, ...}`.  On resume the lines of
steps after the restored checkpoint are dropped, so the file reads exactly as
an uninterrupted run's would.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
class JsonlWriter:
    """A clu `MetricWriter` (by duck typing, so importing this module does not
    import TensorFlow) that appends scalars as JSON lines; images, audio etc.
    are left to TensorBoard."""

    def __init__(self, path: str, split: str):
        self.path, self.split = path, split
        self._f = open(path, "a", encoding="utf-8", buffering=1)  # Line-buffered: survives a kill.

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step), "split": self.split}
        for k, v in scalars.items():
            v = float(np.asarray(v))
            row[k] = v if math.isfinite(v) else str(v)
        self._f.write(json.dumps(row) + "\n")

    def write_summaries(self, step, values, metadata=None):
        self.write_scalars(step, {k: v for k, v in values.items() if np.ndim(v) == 0})

    def write_images(self, step, images): pass
    def write_videos(self, step, videos): pass
    def write_audios(self, step, audios, *, sample_rate): pass
    def write_texts(self, step, texts): pass
    def write_histograms(self, step, arrays, num_buckets=None): pass
    def write_hparams(self, hparams): pass

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def truncate_jsonl(path: str, last_step: int) -> None:
    """Drops lines whose step is after `last_step` (used on resume)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(rows)


def read_jsonl(path: str, split: str = "train") -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r.get("split") == split]


def create_writer(model_dir: str, split: str):
    """A clu MultiWriter: TensorBoard (under MODEL_DIR/<split>) + JSONL; a no-op on processes > 0."""
    from clu import metric_writers  # Lazy: clu's writers import TensorFlow.

    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    os.makedirs(model_dir, exist_ok=True)
    return metric_writers.MultiWriter([
        metric_writers.AsyncWriter(metric_writers.SummaryWriter(os.path.join(model_dir, split))),
        JsonlWriter(os.path.join(model_dir, "metrics.jsonl"), split),
    ])
