"""Mixed precision: one compute dtype and one parameter dtype per model family.

    MulanModel.dtype = %COMPUTE_DTYPE            # 'float32' (the CPU default) or 'bfloat16'
    MulanModel.param_dtype = %PARAM_DTYPE        # what parameters and optimizer moments are stored in

Matmuls and convolutions run in the compute dtype (each layer casts its inputs and parameters);
what loses accuracy in bfloat16 stays float32 everywhere: the log-mel front end, softmax
(`layers.attention`), normalisation statistics (Flax's LayerNorm/GroupNorm and our own norms
compute mean and variance in float32), the towers' pooled outputs, the contrastive logits and the
diffusion loss.  The paper-size configs compute in bfloat16 with float32 parameters, the TPU
recipe (MaxText's `dtype` / `weight_dtype`); the tiny CPU configs stay float32, where bfloat16 is
no faster.  `param_dtype='bfloat16'` halves the parameters' and Adam moments' bytes at the cost of
bfloat16 updates.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from common.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype(name: str, binding: str) -> jnp.dtype:
    """'float32' / 'bfloat16' -> the dtype; ValueError naming `binding` otherwise."""
    if name not in DTYPES:
        raise ConfigError(f"{binding}={name!r}: use one of {sorted(DTYPES)}")
    return jnp.dtype(DTYPES[name])


def cast_params(params: Any, param_dtype: jnp.dtype) -> Any:
    """Floating parameters (boxed or not) in `param_dtype`; a no-op for float32."""
    if param_dtype == jnp.float32:
        return params
    return jax.tree.map(lambda x: x.astype(param_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
