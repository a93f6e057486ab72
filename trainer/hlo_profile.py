"""A roofline profile of a compiled program's optimized HLO: which ops dominate, and which are
memory-bound, without running it (`python -m trainer.compile ... --profile`).

    report = profile(compiled.as_text(), chip)       # chip: a trainer.topology.Chip
    print(table(report))

Every top-level instruction of the program (the entry computation and the bodies of its loops,
times their known trip count) gets FLOPs (the convolutions and dots inside it: on TPU a matmul is
a convolution in HLO) and bytes (its operands read and its outputs written, as their shapes say),
and a roofline time: max(FLOPs / peak bf16, bytes / HBM bandwidth); an op is memory-bound when the
second is larger.  The times are summed by kind (matmul/conv fusions, other fusions and elementwise
ops, copies and layout changes, collectives: bytes only, they overlap compute over ICI), by the
model scope the op came from (the first Flax module in its `op_name`, `audio_tower`, `unet`, ...)
and by the JAX primitive it was lowered from (`conv_general_dilated`, `reduce_sum`, ...).
This is an upper bound on what each op needs (no overlap of compute and memory inside an op is
assumed away) and a lower bound on what it takes (no stalls); XLA's own estimate
(`estimated_step_seconds`) is the step's figure, this says where it goes.
"""
from __future__ import annotations

import collections
import math
import re
from typing import Any

_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2, "s16": 2,
          "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_SHAPE = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_NAME = re.compile(r"%([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id", "replica-id",
         "copy-done", "while", "conditional", "call", "opt-barrier", "iota"}


def _shapes(type_str: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _SHAPE.findall(type_str)]


def _nbytes(type_str: str) -> float:
    return sum(_BYTES[dt] * math.prod(dims) for dt, dims in _shapes(type_str))


def _split_instruction(line: str):
    """`%name = TYPE op(operands), attrs` -> (name, type, op, operands, attrs), or None."""
    m = re.match(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*", line)
    if not m:
        return None
    rest = line[m.end():]
    if rest.startswith("("):             # a tuple type: up to its matching parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                break
        type_str, rest = rest[:i + 1], rest[i + 1:].lstrip()
    else:
        type_str, _, rest = rest.partition(" ")
    op, _, rest = rest.partition("(")
    depth, i = 1, 0
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            break
    return m.group(1), type_str, op.strip(), rest[:i], rest[i + 1:]


def parse(hlo_text: str) -> dict[str, list[dict]]:
    """Computations by name -> their instructions (name, type, op, operand names, attributes);
    the entry computation is also under the key '__entry__'."""
    comps: dict[str, list[dict]] = {}
    current = None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line.strip())
        if header:
            current = comps.setdefault(header.group(2), [])
            if header.group(1):
                comps["__entry__"] = current
            continue
        if current is None:
            continue
        if line.strip() == "}":
            current = None
            continue
        parts = _split_instruction(line)
        if parts:
            name, type_str, op, operands, attrs = parts
            current.append({"name": name, "type": type_str, "op": op, "operands": _NAME.findall(operands),
                            "attrs": attrs})
    return comps


def _conv_flops(ins: dict, types: dict[str, str]) -> float:
    """2 x output elements x the taps each sums over: the kernel's input features times, per spatial
    dimension, its window clipped to the input's extent.  (XLA:TPU writes a matmul's gradient as a
    convolution whose window spans a zero-padded input: the padding taps do no work.)"""
    labels = re.search(r"dim_labels=(\w+)_(\w+)->", ins["attrs"])
    if not labels or len(ins["operands"]) < 2:
        return 0.0
    lhs, kernel = (_shapes(types.get(o, "")) for o in ins["operands"][:2])
    out = _shapes(ins["type"])
    if not lhs or not kernel or not out:
        return 0.0
    lhs_labels, kernel_labels = labels.groups()
    lhs_shape, kernel_shape = lhs[0][1], kernel[0][1]
    if len(lhs_labels) != len(lhs_shape) or len(kernel_labels) != len(kernel_shape):
        return 0.0
    taps = kernel_shape[kernel_labels.index("i")]
    for d, size in zip(kernel_labels, kernel_shape):
        if d.isdigit() and d in lhs_labels:
            taps *= min(size, lhs_shape[lhs_labels.index(d)])
    return 2.0 * math.prod(out[0][1]) * taps


def _dot_flops(ins: dict, types: dict[str, str]) -> float:
    lhs = _shapes(types.get(ins["operands"][0], ""))
    dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins["attrs"])
    out = _shapes(ins["type"])
    if not lhs or not out or not dims:
        return 0.0
    contract = math.prod(lhs[0][1][int(d)] for d in dims.group(1).split(",") if d)
    return 2.0 * math.prod(out[0][1]) * contract


def _computation_flops(comps, name: str, seen=None) -> float:
    """The matmul/conv FLOPs inside a fused (or called) computation."""
    seen = seen or set()
    if name in seen or name not in comps:
        return 0.0
    seen.add(name)
    types = {i["name"]: i["type"] for i in comps[name]}
    total = 0.0
    for ins in comps[name]:
        if ins["op"] == "convolution":
            total += _conv_flops(ins, types)
        elif ins["op"] == "dot":
            total += _dot_flops(ins, types)
        for called in re.findall(r"calls=%([\w.\-]+)", ins["attrs"]):
            total += _computation_flops(comps, called, seen)
    return total


_TRANSFORMS = {"jvp", "transpose", "vmap", "checkpoint", "remat", "rematted_computation", "while", "body", "cond",
               "scan", "pjit", "shard_map"}


def _scope(ins: dict) -> str:
    """Where the op came from: the first Flax module in its `op_name`
    (`jit(train_step)/jvp(MuLan)/MuLan.embed_audio/audio_tower/...` -> 'audio_tower'), else the
    last module method (`MuLan.features`: the front end), else 'other' (the loss, the optimizer)."""
    m = _OP_NAME.search(ins["attrs"])
    method = "other"
    for raw in (m.group(1).split("/")[1:-1] if m else []):   # the last part is the primitive
        if raw.startswith("jit("):
            continue
        part = re.sub(r"^(\w+\()+|\)+$", "", raw)
        if "." in part:
            method = part
        elif part and part not in _TRANSFORMS and re.fullmatch(r"[a-z_][\w]*", part):
            return part
    return method


def _primitive(ins: dict) -> str:
    """The JAX primitive the op was lowered from (the last part of its `op_name`), or its HLO op."""
    m = _OP_NAME.search(ins["attrs"])
    return re.sub(r"^jit\(|\)$", "", m.group(1).rsplit("/", 1)[-1]) if m else ins["op"]


def _kind(ins: dict, flops: float) -> str:
    op = ins["op"]
    if any(op.startswith(c) for c in _COLLECTIVES):
        return "collectives"
    if flops > 0:
        return "matmul/conv"
    if op in ("copy", "copy-start", "transpose"):
        return "copies/layout"
    return "elementwise/reductions"


def profile(hlo_text: str, chip: Any, top: int = 12) -> dict:
    """The roofline profile of an optimized HLO module for `chip` (see the module doc)."""
    comps = parse(hlo_text)
    if "__entry__" not in comps:
        raise ValueError("no ENTRY computation in the HLO text")
    peak, bw = chip.peak_bf16_flops, chip.hbm_bytes_per_second
    ops: list[dict] = []

    def walk(name: str, times: int, seen: tuple = ()):
        if name in seen:
            return
        types = {i["name"]: i["type"] for i in comps[name]}
        for ins in comps[name]:
            op = ins["op"]
            if op == "while":
                trip = _TRIP.search(ins["attrs"])
                body = re.search(r"body=%([\w.\-]+)", ins["attrs"])
                if body and body.group(1) in comps:
                    walk(body.group(1), times * (int(trip.group(1)) if trip else 1), seen + (name,))
                continue
            if op in ("call", "conditional"):
                for called in re.findall(r"(?:to_apply|branch_computations=\{?|calls)=?%([\w.\-]+)", ins["attrs"]):
                    if called in comps:
                        walk(called, times, seen + (name,))
                continue
            if op in _FREE or op.endswith("-done"):
                continue
            flops = 0.0
            if op == "fusion" or op.endswith("-start") and "calls=" in ins["attrs"]:
                called = re.search(r"calls=%([\w.\-]+)", ins["attrs"])
                flops = _computation_flops(comps, called.group(1)) if called else 0.0
            elif op == "convolution":
                flops = _conv_flops(ins, types)
            elif op == "dot":
                flops = _dot_flops(ins, types)
            nbytes = _nbytes(ins["type"]) + sum(_nbytes(types.get(o, "")) for o in ins["operands"])
            if op == "copy-start":   # (destination, source, context): one buffer moved
                nbytes = _nbytes(types.get(ins["operands"][0], "")) if ins["operands"] else 0.0
            kind = _kind(ins, flops)
            compute, memory = flops / peak, nbytes / bw
            ops.append({"name": ins["name"], "op": op, "kind": kind, "scope": _scope(ins),
                        "primitive": _primitive(ins), "op_name": (_OP_NAME.search(ins["attrs"]) or [None, ""])[1][-120:],
                        "times": times,
                        "flops": flops * times, "bytes": nbytes * times,
                        "seconds": 0.0 if kind == "collectives" else max(compute, memory) * times,
                        "memory_bound": kind != "collectives" and memory > compute})

    walk("__entry__", 1)
    total = sum(o["seconds"] for o in ops) or 1e-30

    def group(key: str) -> dict:
        out: dict[str, dict] = collections.defaultdict(lambda: {"ops": 0, "seconds": 0.0, "flops": 0.0, "bytes": 0.0,
                                                                "memory_bound_seconds": 0.0})
        for o in ops:
            g = out[o[key]]
            g["ops"] += o["times"]
            g["seconds"] += o["seconds"]
            g["flops"] += o["flops"]
            g["bytes"] += o["bytes"]
            g["memory_bound_seconds"] += o["seconds"] if o["memory_bound"] else 0.0
        return {k: {**v, "share": v["seconds"] / total} for k, v in sorted(out.items(), key=lambda kv: -kv[1]["seconds"])}

    matmul = sum(o["flops"] for o in ops)
    return {"roofline_seconds": total, "matmul_flops": matmul, "matmul_seconds_at_peak": matmul / peak,
            "memory_bound_share": sum(o["seconds"] for o in ops if o["memory_bound"]) / total,
            "by_kind": group("kind"), "by_scope": group("scope"), "by_primitive": group("primitive"),
            "top_ops": sorted(ops, key=lambda o: -o["seconds"])[:top]}


def table(p: dict) -> str:
    """The profile as the lines `trainer.compile --profile` prints."""
    lines = [f"  roofline profile (per device): {p['roofline_seconds'] * 1e3:.2f} ms summed over ops, "
             f"{p['memory_bound_share']:.0%} of it memory-bound; matmuls at peak alone: "
             f"{p['matmul_seconds_at_peak'] * 1e3:.2f} ms"]
    for title, key in (("by kind", "by_kind"), ("by scope", "by_scope"), ("by JAX primitive", "by_primitive")):
        lines.append(f"  {title}:")
        for name, g in list(p[key].items())[:8]:
            lines.append(f"    {name:<24} {g['share']:6.1%}  {g['seconds'] * 1e3:9.2f} ms  "
                         f"({g['memory_bound_seconds'] / max(g['seconds'], 1e-30):.0%} memory-bound, "
                         f"{g['ops']} ops, {g['bytes'] / 2 ** 30:.2f} GiB moved)")
    lines.append("  top ops:")
    for o in p["top_ops"]:
        lines.append(f"    {o['seconds'] * 1e3:8.3f} ms  {o['kind']:<22} {'memory' if o['memory_bound'] else 'compute'}"
                     f"  x{o['times']}  {o['op_name'] or o['name']}")
    return "\n".join(lines)
