"""The 1-D Efficient U-Net: shapes, conditioning paths, text dropping, logical axes, attention placement."""
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layers import scan
from noise2music.unet import UNet1D
from tests import fakes

TINY = dict(base=16, kernel=5, strides=(2, 4), multipliers=(1, 2), blocks=(1, 1), self_attention=(False, True),
            cross_attention=(False, True), num_heads=2)


def _params(net, *args, seed=0, **kw):
    """Random parameters of the right shapes (the zero-initialised output layers would make every
    input give 0; tests.fakes.random_params compiles nothing)."""
    return fakes.random_params(jax.eval_shape(lambda *a: net.init(jax.random.PRNGKey(1), *a, **kw), *args), seed)


def _inputs(b=2, n=64, t_len=5, d=12):
    ks = jax.random.split(jax.random.PRNGKey(0), 4)
    return (jax.random.normal(ks[0], (b, n, 1)), jax.random.uniform(ks[1], (b,)),
            jax.random.normal(ks[2], (b, t_len, d)), jnp.ones((b, t_len), jnp.int32),
            jax.random.normal(ks[3], (b, n, 1)))


def test_shapes_conditioning_and_bottom_input():
    net = UNet1D(**TINY, out_channels=1)
    x, t, text, mask, cond = _inputs()
    params = _params(net, x, t, text=text, text_mask=mask, cond=cond, bottom=jnp.zeros((2, 8, 32)))
    apply = jax.jit(net.apply)
    out = apply(params, x, t, text=text, text_mask=mask, cond=cond, bottom=jnp.zeros((2, 8, 32)))
    assert out.shape == (2, 64, 1) and bool(jnp.all(jnp.isfinite(out)))
    moved = apply(params, x, t, text=text, text_mask=mask, cond=cond + 1.0, bottom=jnp.ones((2, 8, 32)))
    assert float(jnp.max(jnp.abs(moved - out))) > 1e-4   # the conditioning reaches the output
    with pytest.raises(ValueError, match="multiple of prod"):
        apply(params, x[:, :60], t, text=text, text_mask=mask, cond=cond[:, :60])
    with pytest.raises(ValueError, match="bottom"):
        apply(params, x, t, text=text, text_mask=mask, cond=cond, bottom=jnp.zeros((2, 16, 32)))
    with pytest.raises(ValueError, match="one per depth"):
        jax.eval_shape(lambda: UNet1D(**{**TINY, "blocks": (1, 1, 1)}).init(jax.random.PRNGKey(0), x, t, text=text))


def test_dropped_text_zeroes_cross_attention():
    net = UNet1D(**TINY)
    x, t, text, mask, _ = _inputs()
    params = _params(net, x, t, text=text, text_mask=mask, seed=3)
    other = text[::-1] * 3.0
    drop = jnp.array([1, 0])
    apply = jax.jit(net.apply)
    a = apply(params, x, t, text=text, text_mask=mask, drop_text=drop)
    b = apply(params, x, t, text=other, text_mask=mask, drop_text=drop)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)               # dropped: the text does not matter
    assert float(jnp.max(jnp.abs(a[1] - b[1]))) > 1e-4             # kept: it does


def test_every_matrix_parameter_has_a_sharded_logical_axis():
    net = UNet1D(**TINY)
    x, t, text, mask, _ = _inputs()
    boxed = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, t, text=text, text_mask=mask))
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    shapes = jax.tree.leaves(nn.meta.unbox(boxed))
    assert len(specs) == len(shapes)
    for spec, shape in zip(specs, shapes):
        if len(shape.shape) >= 2:
            assert any(a in ("embed", "conv_out", "mlp", "heads") for a in spec if a), (spec, shape.shape)


def test_attention_placement_and_head_dim():
    """'every_block' (the paper-count reading, docs/PAPERS.md §2.1) puts self- and cross-attention
    after each residual block of a flagged depth, 'per_level' once after its last; `head_dim` sets
    the attention width independently of C."""
    x, t, text, mask, _ = _inputs()
    blocks = {**TINY, "blocks": (1, 2)}

    def shapes(**kw):
        params = jax.eval_shape(lambda: UNet1D(**blocks, **kw).init(jax.random.PRNGKey(0), x, t, text=text))["params"]
        return {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(nn.meta.unbox(params)).items()}

    def attention(shapes):
        return sorted({k.split("/attention/")[0] for k in shapes if "/attention/" in k})

    every = shapes(head_dim=4)
    assert attention(every) == sorted(f"{d}1/layer_{j}/{a}_attn" for d in ("down", "up") for j in (0, 1)
                                      for a in ("self", "cross"))
    assert every["down1/layer_0/self_attn/attention/query_kernel"] == (32, 2, 4)
    assert every["up1/layer_1/cross_attn/attention/key_kernel"] == (12, 2, 4)   # from the text width
    per_level = shapes(attention_placement="per_level")
    assert attention(per_level) == ["down1/cross_attn", "down1/self_attn", "up1/cross_attn", "up1/self_attn"]
    assert per_level["down1/self_attn/attention/query_kernel"] == (32, 2, 16)   # C / heads
    with pytest.raises(ValueError, match="attention_placement"):
        UNet1D(**TINY, attention_placement="everywhere")


def test_scanned_blocks_compute_what_the_unrolled_ones_do():
    """`scan_blocks`: a depth's blocks as one nn.scan, parameters stacked on a 'layers' axis."""
    x, t, text, mask, _ = _inputs()
    cfg = {**TINY, "blocks": (2, 3)}
    unrolled = UNet1D(**cfg)
    params = _params(unrolled, x, t, text=text, text_mask=mask, seed=5)["params"]
    # down{i}/layer_{j}/... -> down{i}/layers/... (one leading axis per depth and direction)
    scanned = {k: scan.stack_params(v) if k[-1].isdigit() else v for k, v in params.items()}
    net = UNet1D(**cfg, scan_blocks=True)
    shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, t, text=text, text_mask=mask))["params"]
    assert jax.tree.structure(nn.meta.unbox(shapes)) == jax.tree.structure(scanned)
    a = unrolled.apply({"params": params}, x, t, text=text, text_mask=mask)
    b = net.apply({"params": scanned}, x, t, text=text, text_mask=mask)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(a))) > 1e-3
