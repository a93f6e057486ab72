"""Scanned transformer layers (`layers/scan.py`, `SCAN_LAYERS`): the same outputs and gradients as
the unrolled stack on the same (stacked) parameters, under every remat policy; a program with one
copy of the layer instead of `depth`; the 'layers' axis on the parameters' logical names."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layers import scan
from mulan.audio_towers import ast_tower
from mulan.text_tower import bert_tower
from tests import fakes

DEPTH = 3
FEATS = np.random.default_rng(0).normal(size=(2, 100, 32)).astype(np.float32)


def _ast(scan_layers, remat="none"):
    return ast_tower(dim=32, depth=DEPTH, num_heads=2, patch=(8, 8), stride=(8, 8), embed_dim=8, remat=remat,
                     scan_layers=scan_layers)


@pytest.fixture(scope="module")
def unrolled_params():
    boxed = jax.eval_shape(lambda: _ast(False).init(jax.random.PRNGKey(0), FEATS))
    return fakes.random_params(boxed["params"], seed=3)


def _loss_and_grads(params, scan_layers, remat="none"):
    m = _ast(scan_layers, remat)
    return jax.jit(jax.value_and_grad(lambda p: jnp.mean(m.apply({"params": p}, FEATS) ** 2)))(params)


@pytest.fixture(scope="module")
def unrolled(unrolled_params):
    """The unrolled stack's loss and gradients (the same under every policy: test_remat.py)."""
    return _loss_and_grads(unrolled_params, False)


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scanned_layers_compute_what_unrolled_layers_compute(unrolled_params, unrolled, remat):
    (l0, g0), (l1, g1) = unrolled, _loss_and_grads(scan.stack_params(unrolled_params), True, remat)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), scan.unstack(g1), g0)


def test_scanned_program_holds_one_layer(unrolled_params):
    """What cuts the compile time: the gradient program has the layer's matmuls once, not `DEPTH` times."""
    def dots(scan_layers, params):
        m = _ast(scan_layers)
        grad = jax.jit(jax.grad(lambda p: jnp.mean(m.apply({"params": p}, FEATS) ** 2)))
        return grad.lower(params).as_text().count("stablehlo.dot_general")
    unrolled, scanned = dots(False, unrolled_params), dots(True, scan.stack_params(unrolled_params))
    per_layer = (unrolled - scanned) / (DEPTH - 1)
    assert per_layer >= 6 and scanned < unrolled / 2, (unrolled, scanned)


def test_stacked_parameters_carry_the_layers_axis():
    tower = bert_tower(vocab_size=64, hidden=16, num_layers=DEPTH, num_heads=2, mlp_dim=32, max_positions=8,
                       embed_dim=8, scan_layers=True)
    ids, mask = np.ones((2, 8), np.int32), np.ones((2, 8), np.int32)
    boxed = jax.eval_shape(lambda: tower.init(jax.random.PRNGKey(0), ids, mask))["params"]["encoder"]
    assert "layer_0" not in boxed
    kernel = boxed["layers"]["mlp_in"]["kernel"]
    assert kernel.names == ("layers", "embed", "mlp") and kernel.value.shape == (DEPTH, 16, 32)
    # Parameters stack and unstack exactly; a gap in the numbering is named.
    tree = {"layer_0": {"w": np.zeros(2)}, "layer_1": {"w": np.ones(2)}, "ln": np.ones(3)}
    stacked = scan.stack_params(tree)
    assert stacked["layers"]["w"].shape == (2, 2) and scan.num_stacked(stacked) == 2
    jax.tree.map(np.testing.assert_array_equal, scan.unstack(stacked), tree)
    with pytest.raises(ValueError, match=r"layers \[0, 2\] are not numbered"):
        scan.stack_params({"layer_0": {}, "layer_2": {}})


def test_scanned_layers_get_their_own_init_and_dropout_follows_the_rng():
    """`split_rngs`: each layer is initialised from its own key (not one layer repeated), and training
    dropout is a function of the run's dropout key."""
    tower = ast_tower(dim=32, depth=2, num_heads=2, patch=(8, 8), stride=(8, 8), embed_dim=8,
                      dropout_rate=0.5, scan_layers=True)
    params = nn.unbox(jax.jit(tower.init)(jax.random.PRNGKey(0), FEATS))["params"]
    kernel = np.asarray(params["layers"]["mlp_in"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])
    run = jax.jit(lambda key, train: tower.apply({"params": params}, FEATS, train=train, rngs={"dropout": key}),
                  static_argnums=1)
    key1, key2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    np.testing.assert_array_equal(run(key1, True), run(key1, True))
    assert not np.allclose(run(key1, True), run(key2, True))
    assert not np.allclose(run(key1, True), run(key1, False))
