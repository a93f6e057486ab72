"""Rematerialisation of repeated blocks, as one setting: 'none', 'full' or 'dots'.

    Block = remat(TransformerBlock, self.remat, static_argnums=(-1,))   # `deterministic` is static
    x = Block(...)(x, mask, deterministic)

'full' keeps only each block's inputs and recomputes the rest in the backward pass; 'dots' also
keeps the outputs of its weight matmuls (those without batch dimensions: MaxText's "minimal"
policy), recomputing attention scores, normalisations and activations; 'none' keeps everything.
The parameters and the results are the same under all three; only the memory (and the recompute)
differ.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from common.errors import ConfigError

POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check(policy: str, setting: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"{setting}={policy!r}: one of {tuple(POLICIES)}")


def remat(module_cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...] = (),
          prevent_cse: bool = True) -> type[nn.Module]:
    """`module_cls`, rematerialised under `policy` (the class itself for 'none').  `prevent_cse=False`
    inside `nn.scan` (layers/scan.py), where the loop already keeps XLA from merging the recompute."""
    check(policy, "remat")
    if policy == "none":
        return module_cls
    return nn.remat(module_cls, policy=POLICIES[policy], prevent_cse=prevent_cse, static_argnums=static_argnums)
