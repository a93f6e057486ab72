"""Rematerialisation (`layers/remat.py`) of the U-Net's blocks and the transformer layers: the same
loss and gradients under 'none' and 'full'; fewer bytes kept for the backward pass under 'dots'
and fewer still under 'full' (the residuals of `jax.vjp`: what the forward pass leaves in memory),
and, for the scanned transformer layers, a compiled step with fewer temporaries.

XLA:CPU's compiled temporaries follow the policy for a scanned stack (each layer's residuals are a
loop output) but not for unrolled blocks, whose peak it schedules the same either way (the U-Net
below: 37.4 MB under 'none', 37.6 MB under 'full'); XLA:TPU's do follow it there too (the
paper-size MuLan-AST step, README "Compiling for a TPU pod"), but a TPU compile large enough to
report temporaries takes minutes."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulan.audio_towers import ast_tower
from noise2music.unet import UNet1D
from tests import fakes


def _unet(remat):
    return UNet1D(base=16, strides=(2, 2), multipliers=(1, 2), blocks=(2, 2), self_attention=(False, True),
                  cross_attention=(False, True), num_heads=2, attention_placement="per_level", remat=remat)


def _residual_bytes(loss, params):
    """Bytes of what the forward pass keeps for the backward pass (the params included)."""
    leaves = jax.eval_shape(lambda p: jax.tree.leaves(jax.vjp(loss, p)[1]), params)
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)


def _check(make, params, *args, **kwargs):
    """`make(policy)`'s mean squared output on the inputs: bytes kept per policy, gradients equal."""
    losses = {r: (lambda p, m=make(r): jnp.mean(m.apply({"params": p}, *args, **kwargs) ** 2))
              for r in ("none", "full", "dots")}
    kept = {r: _residual_bytes(f, params) for r, f in losses.items()}
    assert kept["full"] < kept["dots"] < kept["none"], kept
    (l0, g0), (l1, g1) = (jax.jit(jax.value_and_grad(losses[r]))(params) for r in ("none", "full"))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g1, g0)
    return kept


def test_unet_remat_changes_memory_not_results():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 2048, 1)).astype(np.float32)
    t = np.array([0.3, 0.7], np.float32)
    text = {"text": rng.normal(size=(2, 5, 8)).astype(np.float32), "text_mask": np.ones((2, 5), np.int32)}
    boxed = jax.eval_shape(lambda: _unet("none").init(jax.random.PRNGKey(0), x, t, **text))
    kept = _check(_unet, fakes.random_params(boxed["params"], seed=1), x, t, **text)
    assert kept["full"] < kept["none"] / 5


def _compiled_temporaries(loss, params) -> int:
    return jax.jit(jax.value_and_grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("scan_layers", [False, True])
def test_transformer_layer_remat_changes_memory_not_results(scan_layers):
    feats = np.random.default_rng(1).normal(size=(4, 200, 32)).astype(np.float32)
    tower = lambda r: ast_tower(dim=64, depth=3, num_heads=4, patch=(8, 8), stride=(4, 4), embed_dim=16, remat=r,
                                scan_layers=scan_layers)
    boxed = jax.eval_shape(lambda: tower("none").init(jax.random.PRNGKey(0), feats))
    params = fakes.random_params(boxed["params"], seed=2)
    if not scan_layers:   # the scanned stack's results under each policy: tests/unit/test_scan.py
        _check(tower, params, feats)
    else:
        temps = {r: _compiled_temporaries(lambda p, m=tower(r): jnp.mean(m.apply({"params": p}, feats) ** 2), params)
                 for r in ("none", "full", "dots")}
        assert temps["full"] <= temps["dots"] < temps["none"] / 2, temps


def test_unknown_policy_names_the_setting():
    with pytest.raises(ValueError, match=r"UNet1D.remat='some'"):
        _unet("some")
    with pytest.raises(ValueError, match=r"ast_tower.remat='all'"):
        ast_tower(remat="all")
