"""The training order of examples: a pure function of (seed, global example index), so an input
position is a few integers per host and a run resumes on another number of hosts or devices.

Candidate `g = 0, 1, 2, ...` of a run is record `perm(seed, epoch)(g mod N)` of the split's `N`
records, epoch `g // N` (a stateless index shuffle, `data.indexed_records`), with per-example
random seeds derived from `(seed, g)`.  With `P` examples per host and `H` hosts (the data shards
of `DataLayout`, global batch `G = P * H`), host `h` reads its slice of each block of `G`
candidates in turn: its `j`-th candidate is `global_index(j) = (j // P) * G + h * P + j % P`.  The
global batch of step `s` is then the candidates `[s * G, (s + 1) * G)` in order, whatever `H` is;
an example a preprocessor drops is replaced by the host's next candidate (from its slice of the
next block), so the hosts never read each other's.

A `Stream` is what one host reads; the input pipeline builds the dataset while `reading(stream)`
is active, and the source (`data.indexed_records.IndexedTFRecordSource`) reads it with
`current()`.  Examples keep their candidate number as the feature `INDEX_KEY` (a mixture's task
folded in: `g * num_tasks + task`) so the iterator knows its position after preprocessors that
drop examples (`trainer.input_pipeline.OrderedIterator`).

Nothing here imports TensorFlow; the index arithmetic works on ints, numpy and TF tensors alike.
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
    """Host `host` of `num_hosts`, `per_host` examples per batch, reads its candidates
    `global_index(j)` from `j = start`.

    `keep(g)` (a TensorFlow function of an int64 scalar, or None) selects the candidates of one task
    of a mixture, `task` of `num_tasks`.  `seed` orders the records (shuffled unless `shuffle` is
    False) and seeds the examples."""

    host: int
    num_hosts: int
    per_host: int
    start: int
    seed: int
    shuffle: bool = True
    task: int = 0
    num_tasks: int = 1
    keep: Callable[[Any], Any] | None = None

    def global_index(self, j):
        """This host's `j`-th candidate."""
        return global_index(j, self.host, self.num_hosts, self.per_host)


def global_index(j, host: int, num_hosts: int, per_host: int):
    """Host `host`'s `j`-th candidate (the module doc)."""
    return (j // per_host) * (per_host * num_hosts) + host * per_host + j % per_host


def host_index(g, host: int, num_hosts: int, per_host: int):
    """The `j` with `global_index(j, host, ...) == g`, for a candidate `g` of that host."""
    return (g // (per_host * num_hosts)) * per_host + g % (per_host * num_hosts) - host * per_host


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
