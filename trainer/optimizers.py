"""Gin-configurable optax optimizers and learning-rate schedules."""
from __future__ import annotations

import re
from typing import Mapping

import gin
import jax
import optax

from common.errors import require
from trainer.train_state import param_path


@gin.configurable
def warmup_cosine(peak_value: float = 1e-4, warmup_steps: int = 10_000,
                  decay_steps: int | None = None, end_value: float = 0.0) -> optax.Schedule:
    """Linear warm-up to `peak_value`, then cosine decay to `end_value` at `decay_steps`
    (constant after warm-up when `decay_steps` is None)."""
    require(peak_value > 0, "warmup_cosine.peak_value", peak_value, "positive (a negative rate trains uphill)")
    require(end_value >= 0, "warmup_cosine.end_value", end_value, "at least 0")
    require(warmup_steps >= 0, "warmup_cosine.warmup_steps", warmup_steps, "at least 0")
    require(decay_steps is None or decay_steps > 0, "warmup_cosine.decay_steps", decay_steps, "positive or None")
    if decay_steps is None:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak_value, max(warmup_steps, 1)), optax.constant_schedule(peak_value)],
            [warmup_steps])
    return optax.warmup_cosine_decay_schedule(0.0, peak_value, max(warmup_steps, 1),
                                              max(decay_steps, warmup_steps + 1), end_value)


def scale_by_path(lr_multipliers: Mapping[str, float]) -> optax.GradientTransformation:
    """Multiplies each parameter's update by the factor of the first regex (`re.search` on the
    '/'-joined parameter path, e.g. 'text_tower/encoder') that matches it; 1 when none does."""
    rules = [(re.compile(p), float(f)) for p, f in lr_multipliers.items()]

    def factor(path) -> float:
        name = param_path(path)
        return next((f for r, f in rules if r.search(name)), 1.0)

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(lambda p, u: u * factor(p), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@gin.configurable
def adam(learning_rate: optax.Schedule | float = 1e-4, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8, weight_decay: float = 0.0, clip_grad_norm: float | None = 1.0,
         lr_multipliers: Mapping[str, float] | None = None) -> optax.GradientTransformation:
    """Adam(W) with optional global-norm clipping (Noise2Music: Adam 0.9/0.999, peak 1e-4).

    `lr_multipliers`: {regex on the parameter path: factor}, e.g. a pretrained text encoder
    fine-tuned at a tenth of the rate: `adam.lr_multipliers = {'text_tower/encoder': 0.1}`.
    """
    if not callable(learning_rate):
        require(learning_rate >= 0, "adam.learning_rate", learning_rate, "at least 0 (a negative rate trains uphill)")
    require(0 <= b1 < 1 and 0 <= b2 < 1, "adam.b1, adam.b2", (b1, b2), "in [0, 1)")
    require(eps > 0, "adam.eps", eps, "positive")
    require(weight_decay >= 0, "adam.weight_decay", weight_decay, "at least 0")
    require(clip_grad_norm is None or clip_grad_norm >= 0, "adam.clip_grad_norm", clip_grad_norm, "at least 0 or None")
    parts = []
    if clip_grad_norm:
        parts.append(optax.clip_by_global_norm(clip_grad_norm))
    parts.append(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
                 if weight_decay else optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
    if lr_multipliers:
        parts.append(scale_by_path(lr_multipliers))
    return optax.chain(*parts)
