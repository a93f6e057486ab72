"""What a model family supplies to the trainer (the role of t5x's BaseModel).

`mulan/` and `noise2music/` subclass `BaseModel`; the trainer never looks
inside.  What else a run does every few steps (TensorBoard samples) is a hook
(`trainer.hooks`), not a model method.  Parameters returned by `init_params` carry logical partitioning
metadata (`nn.with_logical_partitioning`); everything else sees plain arrays.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]


class BaseModel(abc.ABC):
    """A model, its loss and the shapes of the batches it consumes."""

    # Programs besides the train step that `python -m trainer.compile --program=NAME` compiles for a
    # topology: NAME -> 'module:function', function(model, partitioner, batch_size) -> a
    # `trainer.aot.Program` (named as a string, so the model imports nothing of its sampler).
    programs: ClassVar[dict[str, str]] = {}
    # The loss is a mean over examples, so `train.microbatches` can split the batch (a contrastive
    # loss, whose negatives are the rest of the batch, is not).
    loss_is_example_mean: ClassVar[bool] = True

    @abc.abstractmethod
    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes and dtypes of one global batch, e.g. `{'audio': [B, T]}`."""

    @abc.abstractmethod
    def init_params(self, rng: jax.Array, batch: Batch) -> Any:
        """Boxed (logically partitioned) parameters for a batch shaped like `batch`."""

    @abc.abstractmethod
    def loss(self, params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        """Scalar training loss over the *global* batch and scalar metrics."""

    def eval_metrics(self, params: Any, batch: Batch) -> Metrics:
        """Scalar metrics on an eval batch (default: the training loss, fixed rng)."""
        loss, metrics = self.loss(params, batch, jax.random.PRNGKey(0))
        return {"loss": loss, **metrics}

    def load_pretrained(self, params: Any, shardings: Any) -> Any:
        """Called once when a run starts fresh (not on resume): returns `params` with any externally
        pretrained weights the model's config names put in place, sharded like `shardings`."""
        del shardings
        return params

    def without_remat(self) -> "BaseModel":
        """The same model with no rematerialisation (what analytic model FLOPs are counted on, so
        recomputed activations do not count).  Default: itself."""
        return self

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        return {k: jnp.zeros(s.shape, s.dtype) for k, s in self.batch_spec(batch_size).items()}
