"""trainer.hlo_profile: the roofline profile of an optimized HLO module counts each matmul's
FLOPs, multiplies a loop body by its trip count, and calls an elementwise op memory-bound."""
import jax
import jax.numpy as jnp
import pytest

from trainer import hlo_profile, topology

CHIP = topology.chip("v5p:2x2x1")


def _hlo(fn, *shapes):
    return jax.jit(fn).lower(*(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)).compile().as_text()


def test_matmul_flops_and_the_forward_and_backward_scopes():
    def loss(a, b):
        return jnp.tanh(a @ b).sum()

    p = hlo_profile.profile(_hlo(jax.grad(loss), (256, 512), (512, 128)), CHIP)
    assert p["matmul_flops"] == 2 * (2 * 256 * 512 * 128)   # a @ b, and the gradient g @ b.T
    assert p["by_primitive"]["dot_general"]["ops"] == 2
    assert set(p["by_kind"]) >= {"matmul/conv"}
    assert p["roofline_seconds"] >= p["matmul_seconds_at_peak"] > 0
    assert "top ops:" in hlo_profile.table(p)


def test_a_loop_body_counts_its_trip_count_times():
    def stacked(x, w):
        return jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, length=6)[0]

    p = hlo_profile.profile(_hlo(stacked, (128, 256), (256, 256)), CHIP)
    assert p["matmul_flops"] == pytest.approx(6 * 2 * 128 * 256 * 256)


def test_elementwise_work_is_memory_bound():
    p = hlo_profile.profile(_hlo(lambda x: jnp.exp(x) * 2 + 1, (1024, 1024)), CHIP)
    assert p["matmul_flops"] == 0 and p["memory_bound_share"] == 1.0
    kind = p["by_kind"]["elementwise/reductions"]
    assert kind["bytes"] >= 2 * 1024 * 1024 * 4   # read once, written once


def test_text_without_an_entry_is_refused():
    with pytest.raises(ValueError, match="ENTRY"):
        hlo_profile.profile("HloModule empty\n", CHIP)


# XLA:TPU's gradient of `einsum('ble,ehd->bhld')` for the weight: a convolution whose 12-wide
# window spans an input of extent 1 padded by 11 on each side (taken from a compiled program).
_TPU_GRADIENT = """HloModule grad
ENTRY %main (p0: bf16[64,128,768,1], p1: bf16[12,64,64,128]) -> bf16[768,12,64,1] {
  %p0 = bf16[64,128,768,1]{2,1,0,3} parameter(0)
  %p1 = bf16[12,64,64,128]{3,1,2,0} parameter(1)
  ROOT %convolution.5 = bf16[768,12,64,1]{0,2,3,1} convolution(%p0, %p1), window={size=12x64 pad=11_11x0_0 rhs_reversal=1x0}, dim_labels=1fb0_0o1i->b0f1, metadata={op_name="jit(f)/transpose(jvp(ble,ehd->bhld))/dot_general"}
}
"""


def test_a_padded_window_counts_only_the_taps_over_the_input():
    p = hlo_profile.profile(_TPU_GRADIENT, CHIP)
    assert p["matmul_flops"] == 2 * 768 * 12 * 64 * (64 * 128)   # 2 e h d x (b l), not x the 12-wide window
