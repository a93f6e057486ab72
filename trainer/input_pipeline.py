"""Input pipelines whose position is saved with the model.

A `DataSource` makes a host-local `DataIterator` for a `DataLayout`; the
iterator yields numpy batches of `per_host_batch_size` examples and can
serialise its position to bytes, which the checkpointer stores per process
beside the train state (`restore` reads every process's, so a run can resume on
another number of hosts).  A resumed run sees exactly the batches it would have
seen.

Three kinds are provided:
- `IndexedIterator`: batch k is a pure function of k (position = k).  Exact,
  cheap, and independent of how many hosts read (examples are indexed globally).
- `OrderedIterator` (`SeqioData` on tasks whose source reads streams, e.g. the
  corpus's `data.indexed_records`): the order of examples is a pure function of
  (seed, global example index) (common/order.py); the position is a few integers
  per host, and a run resumes exactly on another number of hosts or devices.
- `TfDatasetIterator` (`SeqioData` on any other seqio task): the position is the
  tf.data iterator checkpoint (as t5x does it), shuffle buffer included.
"""
from __future__ import annotations

import abc
import io
import json
import logging
import math
import os
import tarfile
import tempfile
from typing import Any, Callable, Iterator, Mapping

import gin
import numpy as np

from common import order
from common.errors import ConfigError
from trainer.partitioning import DataLayout

log = logging.getLogger(__name__)

NumpyBatch = dict[str, np.ndarray]


class DataIterator(abc.ABC, Iterator[NumpyBatch]):
    @abc.abstractmethod
    def __next__(self) -> NumpyBatch: ...

    @abc.abstractmethod
    def get_state(self) -> bytes:
        """The iterator's position, serialised."""

    @abc.abstractmethod
    def set_state(self, state: bytes) -> None:
        """Moves the iterator to a position from `get_state`."""

    def restore(self, states: Mapping[int, bytes], process_index: int) -> None:
        """Moves the iterator to where a checkpoint left it, from every saving process's
        `get_state()` (by process index).  This kind needs the same process's own state."""
        if process_index not in states:
            raise FileNotFoundError(
                f"no input-pipeline state for process {process_index} (the checkpoint was written by "
                f"{len(states)} process(es); this input pipeline cannot resume on more)")
        self.set_state(states[process_index])


class DataSource(abc.ABC):
    @abc.abstractmethod
    def make_iterator(self, layout: DataLayout, *, seed: int) -> DataIterator: ...


class IndexedIterator(DataIterator):
    """Batch k of this host = `fn(example_indices)` for the global indices of batch k."""

    def __init__(self, fn: Callable[[np.ndarray], NumpyBatch], layout: DataLayout):
        self._fn = fn
        self._layout = layout
        self.index = 0

    def __next__(self) -> NumpyBatch:
        lay = self._layout
        start = self.index * lay.global_batch_size + lay.shard_id * lay.per_host_batch_size
        self.index += 1
        return self._fn(np.arange(start, start + lay.per_host_batch_size, dtype=np.int64))

    def get_state(self) -> bytes:
        return json.dumps({"index": self.index}).encode()

    def set_state(self, state: bytes) -> None:
        self.index = int(json.loads(state.decode())["index"])

    def restore(self, states: Mapping[int, bytes], process_index: int) -> None:
        self.set_state(states.get(process_index, next(iter(states.values()))))   # every host's is the same


class TfDatasetIterator(DataIterator):
    """A tf.data iterator whose state is a TF checkpoint, packed into bytes."""

    def __init__(self, dataset: Any):
        import tensorflow as tf  # Lazy: only seqio/tf.data users pay for TF.

        self._tf = tf
        self._iterator = iter(dataset)
        self._ckpt = tf.train.Checkpoint(iterator=self._iterator)

    def __next__(self) -> NumpyBatch:
        return {k: v.numpy() for k, v in next(self._iterator).items()}

    def get_state(self) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            self._ckpt.write(os.path.join(tmp, "it"))
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for name in sorted(os.listdir(tmp)):
                    tar.add(os.path.join(tmp, name), arcname=name)
            return buf.getvalue()

    def set_state(self, state: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(fileobj=io.BytesIO(state), mode="r") as tar:
                tar.extractall(tmp, filter="data")
            self._ckpt.read(os.path.join(tmp, "it")).assert_consumed()


@gin.configurable
class SeqioData(DataSource):
    """A seqio task or mixture, sharded for this host and batched.

    Args:
      mixture_or_task_name: a registered seqio task/mixture (register it by
        importing its module, e.g. `--gin.SeqioData.task_module='data.tasks'`).
      task_feature_lengths: e.g. `{'text_tokens': 64}`.
      split: dataset split.
      shuffle: shuffle (with `seed`) -- on for training.
      feature_converter: a `seqio.FeatureConverter` class, default pass-through.
      task_module: a module imported first so the task is registered.
      num_epochs: None = repeat forever (training; with a stream-reading source
        the order of common/order.py), else that many passes through tf.data.
      allow_data_change: resume from a checkpoint whose records, seed or tasks
        differ from this run's (refused by default, naming what changed).
    """

    def __init__(
        self,
        mixture_or_task_name: str,
        task_feature_lengths: Mapping[str, int] | None = None,
        split: str = "train",
        shuffle: bool = True,
        feature_converter: Any = None,
        task_module: str | None = None,
        num_epochs: int | None = None,
        allow_data_change: bool = False,
    ):
        self.name = mixture_or_task_name
        self.task_feature_lengths = dict(task_feature_lengths or {})
        self.split = split
        self.shuffle = shuffle
        self.feature_converter = feature_converter
        self.task_module = task_module
        self.num_epochs = num_epochs
        self.allow_data_change = allow_data_change

    def make_iterator(self, layout: DataLayout, *, seed: int) -> DataIterator:
        import importlib

        import seqio

        if self.task_module:
            importlib.import_module(self.task_module)
        try:
            mot = seqio.get_mixture_or_task(self.name)
        except ValueError as e:
            raise ConfigError(
                f"SeqioData.mixture_or_task_name={self.name!r} is not registered "
                f"(set SeqioData.task_module to the module that registers it)."
            ) from e
        converter = (self.feature_converter or seqio.PassThroughFeatureConverter)()
        tasks = mot.tasks if isinstance(mot, seqio.Mixture) else [mot]
        if self.num_epochs is None and all(getattr(t.source, "reads_streams", False) for t in tasks):
            return OrderedIterator(self, mot, tasks, converter, layout, seed)
        ds = seqio.get_dataset(
            self.name,
            task_feature_lengths=self.task_feature_lengths,
            dataset_split=self.split,
            shuffle=self.shuffle,
            num_epochs=self.num_epochs,
            shard_info=layout.seqio_shard_info(),
            seed=seed,
            feature_converter=converter,
        )
        ds = ds.batch(layout.per_host_batch_size, drop_remainder=True)
        return TfDatasetIterator(ds)


class OrderedIterator(DataIterator):
    """A seqio task or mixture in the order of common/order.py: the position is, per task, the next
    candidate this host reads, plus (a mixture) the next draw of the task choice.

    A mixture draws task `c` for candidate `g` with probability proportional to its rate, from a
    stateless seed of (seed, g); each task reads its own candidates.  When no preprocessor dropped
    anything (silent crops, clips without text) every host is at the same step boundary and the
    position is one integer; a resume on another number of hosts or devices (the global batch
    fixed) then continues the same global order from the same step.  After drops the hosts'
    positions differ and such a resume starts every task at the step of the least advanced host
    (a warning says so).  The records' fingerprints and the seed are saved too: a resume on changed
    data is refused unless `SeqioData.allow_data_change`."""

    _MIX_SALT = 0x4D4958

    def __init__(self, data: SeqioData, mot: Any, tasks: list, converter: Any, layout: DataLayout, seed: int):
        self._data, self._mot, self._tasks, self._converter = data, mot, tasks, converter
        self._layout, self._seed = layout, int(seed)
        self._rates = ([float(mot.get_rate(t)) for t in tasks] if len(tasks) > 1 else [1.0])
        self._next = [0] * len(tasks)     # per task: the next candidate j this host reads
        self._draws = 0                   # a mixture: the next candidate j whose task is drawn
        self._it = None
        self._identity_now = None         # what the data is, taken once (it globs every record file)

    # -- the order -----------------------------------------------------------
    def _choice(self, g):
        import tensorflow as tf

        logits = tf.math.log(tf.constant([self._rates], tf.float32))
        seed = tf.stack([tf.constant(self._seed + self._MIX_SALT, tf.int64), g])
        return tf.random.stateless_categorical(logits, 1, seed)[0, 0]

    def _dataset(self):
        import seqio
        import tensorflow as tf

        lay, data = self._layout, self._data
        parts = []
        for c, task in enumerate(self._tasks):
            keep = (lambda g, c=c: tf.equal(self._choice(g), c)) if len(self._tasks) > 1 else None
            stream = order.Stream(host=lay.shard_id, num_hosts=lay.num_shards, per_host=lay.per_host_batch_size,
                                  start=self._next[c], seed=self._seed, shuffle=data.shuffle, task=c,
                                  num_tasks=len(self._tasks), keep=keep)
            with order.reading(stream), seqio.utils.map_seed_manager(self._seed):
                ds = task.get_dataset(data.task_feature_lengths, split=data.split, shuffle=False,
                                      seed=self._seed, num_epochs=None)
            parts.append(self._converter(ds, data.task_feature_lengths))
        if len(parts) == 1:
            ds = parts[0]
        else:
            where = (lay.shard_id, lay.num_shards, lay.per_host_batch_size)
            choices = tf.data.Dataset.range(self._draws, np.iinfo(np.int64).max // (4 * lay.global_batch_size)).map(
                lambda j: self._choice(order.global_index(j, *where)))
            ds = tf.data.Dataset.choose_from_datasets(parts, choices, stop_on_empty_dataset=True)
        return ds.batch(lay.per_host_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def __next__(self) -> NumpyBatch:
        import tensorflow as tf

        if self._it is None:
            self._it = iter(self._dataset())
        try:
            batch = {k: v.numpy() for k, v in next(self._it).items()}
        except tf.errors.OpError as e:   # a record file cut or unreadable mid-run: one line naming it
            named = [line.strip() for line in e.message.splitlines() if "RecordFileError" in line]
            if not named:
                raise
            raise ConfigError(f"the input pipeline of {self._data.name!r} stopped: "
                              f"{named[-1].split('RecordFileError: ', 1)[-1]}") from e
        if order.INDEX_KEY not in batch:
            raise ConfigError(f"SeqioData.feature_converter={type(self._converter).__name__} drops the feature "
                              f"{order.INDEX_KEY!r} (common/order.py), which the trainer's order needs")
        g, task = np.divmod(batch.pop(order.INDEX_KEY), len(self._tasks))
        lay = self._layout
        j = order.host_index(g, lay.shard_id, lay.num_shards, lay.per_host_batch_size)
        for c in np.unique(task):
            self._next[c] = max(self._next[c], int(j[task == c].max()) + 1)
        self._draws += len(g)
        # Every kept candidate of a task before the next draw has been read (each draw of task c
        # took c's next one), so no task's position lags the draws: hosts that dropped nothing
        # agree on one integer.
        self._next = [max(n, self._draws) for n in self._next]
        return batch

    # -- the position --------------------------------------------------------
    def _identity(self) -> dict:
        if self._identity_now is None:
            prints = {}
            for t in self._tasks:
                index = getattr(t.source, "index", None)
                prints[t.name] = index(self._data.split).fingerprint() if index else None
            self._identity_now = {"tasks": [t.name for t in self._tasks], "rates": self._rates, "seed": self._seed,
                                  "split": self._data.split, "shuffle": self._data.shuffle, "records": prints}
        return self._identity_now

    def bad_records(self) -> dict[str, int]:
        """Per task, the records its source skipped so far in this process (`on_bad_record='skip'`)."""
        out = {}
        for t in self._tasks:
            index = getattr(t.source, "index", None)
            out[t.name] = len(getattr(index(self._data.split), "bad", ())) if index else 0
        return out

    def get_state(self) -> bytes:
        lay = self._layout
        return json.dumps({"order": 1, "host": lay.shard_id, "num_hosts": lay.num_shards,
                           "per_host_batch": lay.per_host_batch_size, "next": self._next, "draws": self._draws,
                           "bad_records": self.bad_records(), **self._identity()}).encode()

    def set_state(self, state: bytes) -> None:
        self.restore({0: state}, 0, own=True)

    def restore(self, states: Mapping[int, bytes], process_index: int, own: bool = False) -> None:
        saved = {i: json.loads(b.decode()) for i, b in states.items()}
        if any(s.get("order") != 1 for s in saved.values()):
            raise ConfigError("the checkpoint's input position is not of this input pipeline (it was written by "
                              "another kind of data source)")
        first = next(iter(saved.values()))
        self._check_same_data(first)
        lay = self._layout
        by_host = {s["host"]: s for s in saved.values()}
        hosts = first["num_hosts"]
        same_layout = hosts == lay.num_shards and first["per_host_batch"] == lay.per_host_batch_size
        if own or (same_layout and lay.shard_id in by_host):
            s = saved[process_index] if own else by_host[lay.shard_id]
            self._next, self._draws = list(s["next"]), int(s["draws"])
        else:   # another number of hosts or batch: the same global order from the least advanced host
            if sorted(by_host) != list(range(hosts)):
                raise ConfigError(f"the checkpoint holds the input positions of hosts {sorted(by_host)} of {hosts}")
            per = first["per_host_batch"]

            def frontier(key):   # the least advanced host's next global candidate
                return min(order.global_index(key(s), h, hosts, per) for h, s in by_host.items())

            if len({(tuple(s["next"]), s["draws"]) for s in by_host.values()}) > 1:
                log.warning("resuming on %d hosts from %d whose input positions differ (a preprocessor dropped "
                            "examples): every task restarts at the least advanced host's step, so a few examples "
                            "are seen again", lay.num_shards, hosts)
            # The start of the step that holds the frontier, in this host's slice: exact when every
            # host was at the same step boundary (nothing dropped).
            start = lambda g: (g // lay.global_batch_size) * lay.per_host_batch_size
            self._next = [start(frontier(lambda s, c=c: s["next"][c])) for c in range(len(self._tasks))]
            self._draws = start(frontier(lambda s: s["draws"]))
            log.info("input position: from %d host(s) x %d examples to host %d of %d x %d, at candidate %s",
                     hosts, per, lay.shard_id, lay.num_shards, lay.per_host_batch_size, self._next)
        self._it = None

    def _check_same_data(self, saved: dict) -> None:
        now = self._identity()
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v]
        if not changed:
            return
        what = "; ".join(changed)
        if not self._data.allow_data_change:
            raise ConfigError(f"the input data changed since the checkpoint ({what}); to continue from the same "
                              f"position on the new data, pass --gin.SeqioData.allow_data_change=True")
        log.warning("the input data changed since the checkpoint (%s); continuing from the same position "
                    "(SeqioData.allow_data_change)", what)
