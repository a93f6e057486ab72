"""Input pipelines whose position is saved with the model.

A `DataSource` makes a host-local `DataIterator` for a `DataLayout`; the
iterator yields numpy batches of `per_host_batch_size` examples and can
serialise its position to bytes, which the checkpointer stores per process
beside the train state.  A resumed run therefore sees exactly the batches it
would have seen.

Two kinds are provided:
- `IndexedIterator`: batch k is a pure function of k (position = k).  Exact,
  cheap, and independent of how many hosts read (examples are indexed globally).
- `SeqioData` / `TfDatasetIterator`: a seqio task or mixture read through
  tf.data; the position is the tf.data iterator checkpoint (as t5x does it).
"""
from __future__ import annotations

import abc
import io
import json
import os
import tarfile
import tempfile
from typing import Any, Callable, Iterator, Mapping

import gin
import numpy as np

from common.errors import ConfigError
from trainer.partitioning import DataLayout

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
    ):
        self.name = mixture_or_task_name
        self.task_feature_lengths = dict(task_feature_lengths or {})
        self.split = split
        self.shuffle = shuffle
        self.feature_converter = feature_converter
        self.task_module = task_module
        self.num_epochs = num_epochs

    def make_iterator(self, layout: DataLayout, *, seed: int) -> DataIterator:
        import importlib

        import seqio

        if self.task_module:
            importlib.import_module(self.task_module)
        try:
            seqio.get_mixture_or_task(self.name)
        except ValueError as e:
            raise ConfigError(
                f"SeqioData.mixture_or_task_name={self.name!r} is not registered "
                f"(set SeqioData.task_module to the module that registers it)."
            ) from e
        converter = (self.feature_converter or seqio.PassThroughFeatureConverter)()
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
