"""Externally pretrained weights into a model's parameters: `place` checks a numpy tree against the
model's (abstract or real) parameters and puts it on device with their shardings; per-layer
checkpoints load into scanned stacks (layers/scan.py) and back.  Used by the models'
`load_pretrained` (MuLan's towers, Noise2Music's T5); every mismatch names the parameter, the
shape the model expects and the shape the checkpoint has."""
from __future__ import annotations

from typing import Any

import numpy as np


class CheckpointMismatchError(ValueError):
    """A pretrained checkpoint that does not fit the configured model; the message names the parameter."""


def match_layout(loaded: dict, template: Any, what: str, path: str = "") -> dict:
    """`loaded`'s transformer layers in the model's layout: per-layer `layer_{i}` stacked into a
    scanned tower's `layers`, or unstacked for an unrolled one (layers/scan.py)."""
    from layers import scan

    n_model, n_ckpt = scan.num_stacked(template), scan.num_stacked(loaded)
    if (scan.SCANNED in template) == (scan.SCANNED in loaded) or not n_ckpt:
        return loaded
    if n_model != n_ckpt:
        raise CheckpointMismatchError(f"{what}: {path or '/'} has {n_model} transformer layers in the model but "
                                      f"{n_ckpt} in the checkpoint (another config? check num_layers / depth).")
    return scan.stack_params(loaded) if scan.SCANNED in template else scan.unstack(loaded)


def place(loaded: dict, template: Any, shardings: Any, what: str, path: str = "") -> Any:
    """`loaded` (numpy tree) checked against `template` (the model's arrays) and put on device
    with `shardings`; per-layer checkpoints load into scanned towers too.  Raises
    `CheckpointMismatchError` naming the first parameter that differs."""
    import jax

    if isinstance(template, dict) or hasattr(template, "keys"):
        if not isinstance(loaded, dict):
            raise CheckpointMismatchError(f"{what}: {path or '/'} is a tensor in the checkpoint, a module in the model.")
        loaded = match_layout(loaded, template, what, path)
        missing = sorted(set(template) - set(loaded))
        extra = sorted(set(loaded) - set(template))
        if missing or extra:
            raise CheckpointMismatchError(
                f"{what}: parameters under {path or '/'} differ: the model has {missing[:5]} that the checkpoint "
                f"lacks, the checkpoint has {extra[:5]} that the model lacks (another config? check num_layers).")
        return {k: place(loaded[k], template[k], shardings[k], what, f"{path}/{k}") for k in template}
    arr = np.asarray(loaded, np.float32)
    if tuple(arr.shape) != tuple(template.shape):
        raise CheckpointMismatchError(
            f"{what}: parameter {path} has shape {tuple(template.shape)} in the model but "
            f"{tuple(arr.shape)} in the checkpoint.")
    return jax.make_array_from_callback(arr.shape, shardings, lambda idx: arr[idx].astype(template.dtype))
