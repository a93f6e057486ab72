"""Helpers shared by the benchmarks (scripts run as `python benchmarks/NAME.py`): timing, the
machine a figure was measured on, and the PyTorch peers' figures measured on the same machine.

A ratio to a peer is only meaningful within one machine and one run (CPU families differ: XLA:CPU
and torch move in different directions between an AMD EPYC and an Intel Xeon), so no peer figure is
written into a benchmark.  `benchmarks/peers/` runs the peers here and writes their JSON:

    V=$(bash benchmarks/peers/setup.sh)                 # a venv with torch (CPU) and the peers
    bash benchmarks/peers/run_all.sh $V runs/peers      # peak.json, mulan.json, unet.json, faiss.json
    python benchmarks/mulan_step.py --peers=runs/peers  # our figures, the peer's, and the ratios
"""
from __future__ import annotations

import json
import os
import sys
import time

PEER_FILES = {"peak": "peak.json", "mulan": "mulan.json", "unet": "unet.json", "faiss": "faiss.json"}


def _fail(message: str):
    """A bad --peers input: one line on stderr, exit 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` runs after one warm-up run."""
    import numpy as np

    fn()  # warm-up (compiled already; first run allocates)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def flops(compiled) -> float:
    """XLA's FLOP count of a compiled computation (0 when the backend reports none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) if cost else 0.0


def cpu_model() -> str:
    """The CPU's model name, read as the peers' harness reads it (their JSON's `env.cpu`)."""
    from peers.peer_common import _cpu_model  # benchmarks/peers: stdlib only at import

    return _cpu_model()


def machine() -> dict:
    """What a figure was measured on: CPU model and cores, JAX's backend and version, XLA flags."""
    import jax

    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "backend": jax.default_backend(),
            "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loadavg": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None}


def machine_line(m: dict) -> str:
    return (f"machine: {m['cpu']}, {m['cpu_cores']} cores, {m['backend']}, jax {m['jax']}, "
            f"XLA_FLAGS={m['xla_flags'] or '(none)'}, load {' '.join(m['loadavg'] or [])}")


def add_peers_flags(ap) -> None:
    ap.add_argument("--peers", default=None,
                    help="the peers' JSON measured on this machine: a folder as benchmarks/peers/run_all.sh "
                         f"writes it ({', '.join(PEER_FILES.values())}) or one file")
    ap.add_argument("--peers_from_other_cpu", action="store_true",
                    help="accept peer figures measured on another CPU model (the ratio then compares machines)")


def load_peer(args, kind: str) -> dict | None:
    """The peer's JSON of `kind` from `--peers`, or None when no `--peers` was given (or the folder
    has no such file).  Peer figures measured on another CPU model are refused (exit 2, naming the
    file and both CPUs) unless `--peers_from_other_cpu`."""
    if not args.peers:
        return None
    path = os.path.join(args.peers, PEER_FILES[kind]) if os.path.isdir(args.peers) else args.peers
    if not os.path.exists(path):
        if os.path.isdir(args.peers):
            return None
        _fail(f"--peers: {path} does not exist")
    try:
        with open(path) as f:
            peer = json.load(f)
    except (OSError, ValueError) as e:
        _fail(f"--peers: {path} is not a peer's JSON ({e})")
    theirs, ours = (peer.get("env") or {}).get("cpu", "unknown"), cpu_model()
    if theirs != ours and not args.peers_from_other_cpu:
        _fail(f"--peers: {path} was measured on '{theirs}', this machine is '{ours}': run the peer "
                         "here (benchmarks/peers/run_all.sh) or pass --peers_from_other_cpu")
    peer["_path"] = path
    return peer


def peer_figure(peer: dict, *keys: str):
    """peer[k1][k2]... naming the file and the missing field when the JSON lacks it."""
    x = peer
    for k in keys:
        if not isinstance(x, dict) or k not in x:
            _fail(f"--peers: {peer['_path']} has no field {'.'.join(keys)} (not this peer's JSON?)")
        x = x[k]
    return x


def matmul_ceiling(args) -> float | None:
    """torch's float32 GFLOP/s on the largest square matmul of the peers' peak.json, if given."""
    if not (args.peers and os.path.isdir(args.peers)):
        return None
    peak = load_peer(args, "peak")
    if peak is None:
        return None
    runs = [r for r in peer_figure(peak, "runs") if r.get("lib") == "torch" and r.get("dtype") == "float32"
            and "n" in r]
    return max(runs, key=lambda r: r["n"])["gflops_median"] if runs else None
