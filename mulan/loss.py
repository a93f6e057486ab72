"""MuLan's contrastive losses, on the global batch.

Inputs are L2-normalised embeddings a (audio) and t (text), both [batch, dim], for the *global*
batch: under `jax.jit` with batch-sharded inputs XLA gathers what the [batch, batch] similarity
needs, so the result is the same whether the batch sits on one device or is split over many
(`tests/test_mulan_model.py` checks this).

* `'mulan'` (the paper): L = mean_i -log( h(a_i, t_i) / sum_{j != i} [h(a_i, t_j) + h(a_j, t_i)] ),
  h(x, y) = exp(x.y / tau): the positive is left out of the denominator, and both directions'
  negatives share one denominator.  (The paper sums over i; we average, so the learning rate does
  not depend on the batch size.)
* `'infonce'`: symmetric InfoNCE (CLIP): the mean of audio->text and text->audio softmax
  cross-entropies, positive included in the denominator.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from common.errors import ConfigError

LOSSES = ("mulan", "infonce")


def similarity_logits(a: jax.Array, t: jax.Array, temperature: jax.Array) -> jax.Array:
    """[B, D], [B, D] -> [B, B] with logits[i, j] = a_i . t_j / tau (float32)."""
    return jnp.einsum("id,jd->ij", a.astype(jnp.float32), t.astype(jnp.float32)) / temperature


def contrastive_loss(logits: jax.Array, kind: str = "mulan") -> jax.Array:
    """Scalar loss from the [B, B] audio x text logits (diagonal = positives)."""
    b = logits.shape[0]
    eye = jnp.eye(b, dtype=bool)
    pos = jnp.diagonal(logits)
    if kind == "mulan":
        if b < 2:
            raise ConfigError("the MuLan loss needs a global batch of at least 2 (it has no negatives otherwise).")
        neg_inf = jnp.finfo(logits.dtype).min
        rows = jnp.where(eye, neg_inf, logits)      # h(a_i, t_j), j != i
        cols = jnp.where(eye, neg_inf, logits.T)    # h(a_j, t_i), j != i
        denom = jax.nn.logsumexp(jnp.concatenate([rows, cols], axis=1), axis=1)
        return jnp.mean(denom - pos)
    if kind == "infonce":
        a2t = jax.nn.logsumexp(logits, axis=1) - pos
        t2a = jax.nn.logsumexp(logits, axis=0) - pos
        return 0.5 * (jnp.mean(a2t) + jnp.mean(t2a))
    raise ConfigError(f"MulanModel.loss_type={kind!r}: use one of {LOSSES}.")


def retrieval_accuracy(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """In-batch top-1 accuracy, audio->text and text->audio."""
    idx = jnp.arange(logits.shape[0])
    return (jnp.mean(jnp.argmax(logits, axis=1) == idx).astype(jnp.float32),
            jnp.mean(jnp.argmax(logits, axis=0) == idx).astype(jnp.float32))
