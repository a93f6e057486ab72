"""Batches for inference on the mesh: fixed-size batches split over the devices, padded and trimmed.

    apply = BatchedApply(model.embed_audio, params, partitioner, batch_size=32)
    emb = apply(windows)                       # [N, ...] -> the outputs for all N rows, as numpy

`batch_size` is rounded up to a multiple of the partitioner's batch shards; every batch has that
size (the last one zero-padded, the padding's outputs dropped), so one compiled program serves
every call.  The parameters keep the shardings they have (a run's FSDP layout, or replicated).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from trainer.partitioning import Partitioner


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def pad_rows(x: np.ndarray, rows: int, mode: str = "zeros") -> np.ndarray:
    """`x` [n, ...] grown to `rows` rows with zeros, or with copies of its last row (`mode='edge'`)."""
    x = np.asarray(x)
    extra = rows - len(x)
    if extra <= 0:
        return x
    fill = np.zeros((extra, *x.shape[1:]), x.dtype) if mode == "zeros" else np.repeat(x[-1:], extra, 0)
    return np.concatenate([x, fill])


class BatchedApply:
    """`fn(params, *arrays)` for any number of rows (see the module doc); outputs any pytree."""

    def __init__(self, fn: Callable, params: Any, partitioner: Partitioner, batch_size: int = 32):
        self.partitioner, self.params = partitioner, params
        self.batch_size = round_up(batch_size, partitioner.num_batch_shards)
        self._jitted = jax.jit(fn, out_shardings=partitioner.replicated)

    def __call__(self, *arrays: np.ndarray, progress: Callable[[int], None] | None = None):
        p, b, outs = self.partitioner, self.batch_size, []
        with p.activate():
            for s in range(0, len(arrays[0]), b):
                chunk = [np.asarray(a[s:s + b]) for a in arrays]
                k = len(chunk[0])
                batch = [jax.device_put(pad_rows(c, b), p.batch_sharding(c.ndim)) for c in chunk]
                outs.append(jax.tree.map(lambda v, k=k: np.asarray(v)[:k], self._jitted(self.params, *batch)))
                if progress:
                    progress(k)
        return jax.tree.map(lambda *v: np.concatenate(v), *outs) if outs else None
