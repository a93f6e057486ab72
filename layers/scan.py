"""A stack of identical layers, unrolled or as one scanned layer: the `scan_layers` setting.

    x = scan.stack(TransformerBlock, num_layers, x, mask, deterministic, scan_layers=True,
                   remat="full", heads=..., ...)      # keyword arguments: the block's fields

Unrolled (`scan_layers=False`), the stack is `num_layers` modules named `layer_0`, `layer_1`, ...
Scanned, it is one module named `layers` whose parameters carry a leading axis of length
`num_layers` (logical name 'layers', which no mesh rule shards), run by `nn.scan`: XLA compiles
the layer once instead of `num_layers` times, which is what cuts the compile time of deep towers
(MaxText's `scan_layers`).  The arithmetic is the same; `unstack` and `stack_params` convert
one parameter layout into the other (`mulan/pretrained.py` uses `stack_params` to load
per-layer checkpoints into a scanned tower).

The block's `__call__(x, *args)` returns the new `x`; the last positional argument is static
(the `deterministic` flag), the rest are broadcast to every layer.  Rematerialisation wraps each
layer under `remat` (layers/remat.py) in either layout.
"""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from layers import remat as remat_lib

SCANNED = "layers"         # the scanned module's name, and the logical name of its leading axis
_LAYER = re.compile(r"layer_(\d+)$")


def stack(block_cls: type[nn.Module], num_layers: int, x: jax.Array, *args: Any, scan_layers: bool,
          remat: str, **fields: Any) -> jax.Array:
    """`x` through `num_layers` blocks `block_cls(**fields)`; call inside a compact `__call__`."""
    *broadcast, static = args
    if not scan_layers:
        block = remat_lib.remat(block_cls, remat, static_argnums=(-1,))
        for i in range(num_layers):
            x = block(**fields, name=f"layer_{i}")(x, *args)
        return x
    # Under scan, XLA cannot merge the recomputation with the forward pass anyway (prevent_cse off).
    block = remat_lib.remat(block_cls, remat, static_argnums=(-1,), prevent_cse=False)

    def body(layer, carry, *xs):
        return layer(carry, *xs, static), None

    scanned = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast,) * len(broadcast), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: SCANNED})
    x, _ = scanned(block(**fields, name=SCANNED), x, *broadcast)
    return x


def stack_params(tree: dict[str, Any]) -> dict[str, Any]:
    """`{layer_0: t0, ..., layer_{n-1}: t_{n-1}, other...}` -> `{layers: stacked, other...}`, each
    leaf of `layers` the per-layer leaves stacked on a new leading axis (numpy)."""
    idx = sorted(int(m.group(1)) for k in tree if (m := _LAYER.match(k)))
    if not idx:
        return tree
    if idx != list(range(len(idx))):
        raise ValueError(f"layers {idx} are not numbered 0..{len(idx) - 1}")
    out = {k: v for k, v in tree.items() if not _LAYER.match(k)}
    out[SCANNED] = jax.tree.map(lambda *leaves: np.stack([np.asarray(a) for a in leaves]),
                                *(tree[f"layer_{i}"] for i in idx))
    return out


def unstack(tree: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `stack_params`: `{layers: stacked}` -> `{layer_0: ..., layer_{n-1}: ...}`."""
    if SCANNED not in tree:
        return tree
    out = {k: v for k, v in tree.items() if k != SCANNED}
    n = jax.tree.leaves(tree[SCANNED])[0].shape[0]
    for i in range(n):
        out[f"layer_{i}"] = jax.tree.map(lambda a: a[i], tree[SCANNED])
    return out


def num_stacked(tree: dict[str, Any]) -> int:
    """How many layers a (scanned or unrolled) tree holds."""
    if SCANNED in tree:
        return int(jax.tree.leaves(tree[SCANNED])[0].shape[0])
    return sum(1 for k in tree if _LAYER.match(k))
