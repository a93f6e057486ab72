"""Frozen parameters: subtrees marked by path get no optimizer state, no EMA copy and no update.

    train.frozen = ['^text_encoder/']     # regexes, `re.search` on the '/'-joined parameter path

The optimizer becomes `optax.multi_transform`: the configured one on the trainable leaves and
`optax.set_to_zero()` (stateless) on the frozen ones, so Adam keeps no moments for them and they
never move.  `TrainState.ema_params` holds the trainable leaves only; inference merges it over
the frozen parameters (`merge`).  Noise2Music's text stages freeze their T5 encoder this way
(configs/noise2music/base.gin): at T5-XL size its 1.2B parameters would otherwise carry two Adam
moments and an EMA copy, 3 x 4.9 GB (README, "Compiling for a TPU pod").  A pattern that matches
no parameter is an error, so a renamed module cannot silently unfreeze.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import optax
from flax import traverse_util

from trainer.errors import ConfigError

TRAINABLE, FROZEN = "trainable", "frozen"


class Frozen:
    """The frozen-path patterns of a run (`train.frozen`); empty = everything trains."""

    def __init__(self, patterns: Sequence[str] = (), binding: str = "train.frozen"):
        if isinstance(patterns, str):
            patterns = (patterns,)
        self.patterns, self.binding = tuple(patterns), binding
        try:
            self._rules = [re.compile(p) for p in self.patterns]
        except re.error as e:
            raise ConfigError(f"{binding}: {e.pattern!r} is not a regular expression ({e})") from e

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def is_frozen(self, path: str) -> bool:
        return any(r.search(path) for r in self._rules)

    def check(self, params: Any) -> None:
        """ConfigError naming each pattern that matches no parameter of `params`."""
        paths = ["/".join(k) for k in traverse_util.flatten_dict(params)]
        for pattern, rule in zip(self.patterns, self._rules):
            if not any(rule.search(p) for p in paths):
                top = sorted({p.split("/")[0] for p in paths})
                raise ConfigError(f"{self.binding}: {pattern!r} matches no parameter (top-level modules: {top}; "
                                  f"paths look like {paths[0]!r})")

    def split(self, tree: Any) -> tuple[dict, dict]:
        """A parameter-shaped nested dict -> (trainable, frozen) nested dicts, each holding only its
        leaves (leaves may be arrays, boxes or `ShapeDtypeStruct`s)."""
        flat = traverse_util.flatten_dict(tree)
        parts: dict[bool, dict] = {False: {}, True: {}}
        for k, v in flat.items():
            parts[self.is_frozen("/".join(k))][k] = v
        return tuple(traverse_util.unflatten_dict(parts[f]) if parts[f] else {} for f in (False, True))

    def trainable(self, tree: Any) -> Any:
        """What the EMA keeps: `tree` itself when nothing is frozen."""
        return self.split(tree)[0] if self else tree

    def labels(self, tree: Any) -> dict:
        flat = traverse_util.flatten_dict(tree)
        return traverse_util.unflatten_dict(
            {k: FROZEN if self.is_frozen("/".join(k)) else TRAINABLE for k in flat})

    def optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        """`tx` on the trainable leaves; the frozen ones get zero updates and no state."""
        if not self:
            return tx
        return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, self.labels)


def merge(*trees: Any) -> dict:
    """Nested dicts overlaid left to right (the EMA's trainable leaves over the frozen params)."""
    flat: dict = {}
    for t in trees:
        flat.update(traverse_util.flatten_dict(t))
    return traverse_util.unflatten_dict(flat)
