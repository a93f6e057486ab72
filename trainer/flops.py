"""Analytic FLOPs: the matmuls and convolutions of a traced program, counted from its jaxpr.

    n = matmul_flops(step_fn, abstract_state, abstract_batch)   # FLOPs of one call, all devices

Every `dot_general` counts 2 x batch x M x N x K, every `conv_general_dilated` 2 x output size x
(input features per group x kernel taps); elementwise work, reductions and the optimizer's update
are left out (MaxText's "model FLOPs" count matmuls the same way).  Sub-programs are followed:
`jit`, `custom_vjp`/`custom_jvp`, `remat`, `cond` (its most expensive branch), `scan` (times its
length), a `while` loop (once: its trip count is not known from the jaxpr), `shard_map` (times its
devices).  Nothing is compiled or run.

This is the numerator of the MFU that `trainer.compile` projects and `train()` logs
(`perf/mfu`): per device it is this count over the number of devices.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jax_core


def _dot_flops(eqn) -> float:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (lc, rc), (lb, _rb) = eqn.params["dimension_numbers"]
    batch = math.prod(lhs[d] for d in lb)
    contract = math.prod(lhs[d] for d in lc)
    lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in lc and d not in lb)
    rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in rc and d not in _rb)
    return 2.0 * batch * contract * lhs_free * rhs_free


def _conv_flops(eqn) -> float:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    out_features = rhs[dn.rhs_spec[0]]
    return 2.0 * math.prod(out) * math.prod(rhs) / out_features


def _sub_jaxprs(eqn) -> list[tuple[Any, float]]:
    """(jaxpr, multiplicity) of the programs an equation calls."""
    name, p = eqn.primitive.name, eqn.params
    if name == "cond":
        return [(max(p["branches"], key=lambda b: jaxpr_flops(b.jaxpr)), 1.0)]
    mult = 1.0
    if name == "scan":
        mult = float(p["length"])
    elif name == "shard_map":
        mesh = p.get("mesh")
        manual = p.get("manual_axes") or p.get("axis_names") or ()
        mult = float(math.prod(mesh.shape[a] for a in manual)) if mesh is not None else 1.0
    out = []
    for v in p.values():
        for j in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(j, jax_core.ClosedJaxpr):
                out.append((j.jaxpr, mult))
            elif isinstance(j, jax_core.Jaxpr):
                out.append((j, mult))
    if name == "while":   # body once, not the condition
        out = [(p["body_jaxpr"].jaxpr, 1.0)]
    elif name in ("custom_vjp_call", "custom_vjp_call_jaxpr"):
        out = out[:1]     # the primal program, not its fwd/bwd rules (those appear where used)
    return out


def jaxpr_flops(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        else:
            total += sum(m * jaxpr_flops(j) for j, m in _sub_jaxprs(eqn))
    return total


def matmul_flops(fn: Callable, *args: Any) -> float:
    """The matmul and convolution FLOPs of one call of `fn(*args)` (arrays or `ShapeDtypeStruct`s)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)



def _flops_by_dtype(jaxpr, mult: float, out: dict[str, float]) -> None:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            key = "/".join(sorted({str(v.aval.dtype) for v in eqn.invars[:2]}))
            out[key] = out.get(key, 0.0) + mult * (_dot_flops(eqn) if name == "dot_general" else _conv_flops(eqn))
        for j, m in _sub_jaxprs(eqn):
            _flops_by_dtype(j, mult * m, out)


def matmul_flops_by_dtype(fn: Callable, *args: Any) -> dict[str, float]:
    """`matmul_flops` split by the dtypes the operands are in ('bfloat16', 'float32', or
    'bfloat16/float32' for a mixed pair): how much of the work mixed precision moved to bfloat16."""
    out: dict[str, float] = {}
    _flops_by_dtype(jax.make_jaxpr(fn)(*args).jaxpr, 1.0, out)
    return out
