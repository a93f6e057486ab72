"""Timing helpers shared by the benchmarks (scripts run as `python benchmarks/NAME.py`)."""
from __future__ import annotations

import time


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
