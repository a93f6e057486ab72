"""Gin-configurable optax optimizers and learning-rate schedules."""
from __future__ import annotations

import re
from typing import Mapping

import gin
import jax
import optax

from trainer.train_state import param_path


@gin.configurable
def warmup_cosine(peak_value: float = 1e-4, warmup_steps: int = 10_000,
                  decay_steps: int | None = None, end_value: float = 0.0) -> optax.Schedule:
    """Linear warm-up to `peak_value`, then cosine decay to `end_value` at `decay_steps`
    (constant after warm-up when `decay_steps` is None)."""
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
    parts = []
    if clip_grad_norm:
        parts.append(optax.clip_by_global_norm(clip_grad_norm))
    parts.append(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
                 if weight_decay else optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
    if lr_multipliers:
        parts.append(scale_by_path(lr_multipliers))
    return optax.chain(*parts)
