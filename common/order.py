"""The training order of examples: a pure function of (seed, global example index), so an input
position is a few integers per host and a run resumes on another number of hosts.

Candidate `g = 0, 1, 2, ...` of a run is record `perm(seed, epoch)(g mod N)` of the split's `N`
records, epoch `g // N` (a stateless index shuffle, `data.indexed_records`), with per-example
random seeds derived from `(seed, g)`.  Host `h` of `H` (the data shard of `DataLayout`) reads the
candidates `g = j * H + h` for `j = start, start + 1, ...`, so with `P` examples per host the
global batch of step `s` is the candidates `[s * G, (s + 1) * G)` (`G = P * H`) whatever `H` is.

A `Stream` is what one host reads; the input pipeline builds the dataset while `reading(stream)`
is active, and the source (`data.indexed_records.IndexedTFRecordSource`) reads it with
`current()`.  Examples keep their candidate number as the feature `INDEX_KEY` (a mixture's task
folded in: `g * num_tasks + task`) so the iterator knows its position after preprocessors that
drop examples (`trainer.input_pipeline.OrderedIterator`).

Nothing here imports TensorFlow at import time.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator

INDEX_KEY = "_index"     # int64: g * num_tasks + task
SEED_KEY = "_seed"       # int64 [2]: the example's stateless seed, (seed, g)


@dataclasses.dataclass(frozen=True)
class Stream:
    """Host `host` of `num_hosts` reads candidates `g = j * num_hosts + host` from `j = start`.

    `keep(g)` (a TensorFlow function of an int64 scalar, or None) selects the candidates of one task
    of a mixture, `task` of `num_tasks`.  `seed` orders the records (shuffled unless `shuffle` is
    False) and seeds the examples."""

    host: int
    num_hosts: int
    start: int
    seed: int
    shuffle: bool = True
    task: int = 0
    num_tasks: int = 1
    keep: Callable[[Any], Any] | None = None


_STREAM: contextvars.ContextVar[Stream | None] = contextvars.ContextVar("stream", default=None)


@contextlib.contextmanager
def reading(stream: Stream) -> Iterator[Stream]:
    """Datasets built inside read `stream` (the sources that support it: `current()`)."""
    token = _STREAM.set(stream)
    try:
        yield stream
    finally:
        _STREAM.reset(token)


def current() -> Stream | None:
    return _STREAM.get()
