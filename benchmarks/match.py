"""Top-10 caption matching throughput and peak memory: `data.matching.BankIndex` vs FAISS.

    pip install -e '.[bench]'          # faiss-cpu, the reference
    python benchmarks/match.py                                   # 4,096 queries vs 1M and 4M captions
    python benchmarks/match.py --bank_sizes=1000000 --dtype=bfloat16

Both searches are exact inner-product search over the same L2-normalised 128-d vectors (a seeded
random bank and queries), on the same cores: ours is one jitted XLA:CPU scan; FAISS is
`IndexFlatIP` (BLAS GEMM + heaps).  Each method runs in its own subprocess so its peak resident
memory (`ru_maxrss`, the bank included) is its own.  Queries/s is the median of `--repeats` timed
searches after one warm-up.  Top-10 ids are compared row by row; rows that differ only in the
order or choice among equal scores count as ties.  The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import timing  # benchmarks/timing.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n: int, q: int, d: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    bank = np.empty((n, d), np.float32)
    for s in range(0, n, 1 << 20):  # generate in chunks to keep the peak at one bank copy
        x = rng.standard_normal((min(1 << 20, n - s), d), dtype=np.float32)
        bank[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    qs = np.random.default_rng(seed + 1).standard_normal((q, d), dtype=np.float32)
    return bank, qs / np.linalg.norm(qs, axis=1, keepdims=True)


def _child(method: str, n: int, q: int, d: int, k: int, repeats: int, dtype: str, out: str) -> None:
    import numpy as np

    bank, queries = _data(n, q, d)
    if method == "ours":
        sys.path.insert(0, ROOT)
        from data.matching import BankIndex

        index = BankIndex(bank, dtype=dtype)
        del bank
        search = lambda: index.topk(queries, k)
    else:
        try:
            import faiss
        except ImportError:
            sys.exit("benchmarks/match.py: FAISS is not installed; pip install -e '.[bench]' (faiss-cpu)")

        index = faiss.IndexFlatIP(d)
        index.add(bank)
        del bank
        search = lambda: index.search(queries, k)
    search()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        scores, ids = search()
        times.append(time.perf_counter() - t)
    np.save(out + ".ids.npy", np.asarray(ids, np.int64))
    np.save(out + ".scores.npy", np.asarray(scores, np.float32))
    with open(out + ".json", "w") as f:
        json.dump({"seconds": float(np.median(times)),
                   "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, f)


def _run(method, n, args) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, method)
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", method, f"--bank_sizes={n}",
               f"--queries={args.queries}", f"--dim={args.dim}", f"--k={args.k}", f"--repeats={args.repeats}",
               f"--dtype={args.dtype}", f"--_out={out}"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{method} at {n:,} failed:\n{p.stderr[-3000:]}")
        r = json.load(open(out + ".json"))
        r["ids"] = np.load(out + ".ids.npy")
        r["scores"] = np.load(out + ".scores.npy")
    return r


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bank_sizes", default="1000000,4000000")
    ap.add_argument("--queries", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.bank_sizes.split(",")]
    if args._child:
        _child(args._child, sizes[0], args.queries, args.dim, args.k, args.repeats, args.dtype, args._out)
        return {}
    import numpy as np

    machine = timing.machine()
    print(timing.machine_line(machine))
    results = []
    print(f"top-{args.k} of {args.queries:,} queries, {args.dim}-d, bank {args.dtype} (ours), "
          f"{os.cpu_count()} CPU cores")
    for n in sizes:
        ours, ref = _run("ours", n, args), _run("faiss", n, args)
        same = np.all(ours["ids"] == ref["ids"], axis=1)
        # A differing row is a tie when the score lists agree (the k-th score is shared).
        ties = (~same) & np.all(np.abs(ours["scores"] - ref["scores"]) < 1e-5, axis=1)
        row = {"bank_size": n, "queries": args.queries,
               "ours_queries_per_s": round(args.queries / ours["seconds"], 1),
               "faiss_queries_per_s": round(args.queries / ref["seconds"], 1),
               "speedup_vs_faiss": round(ref["seconds"] / ours["seconds"], 2),
               "ours_peak_rss_mib": round(ours["peak_rss_mib"]), "faiss_peak_rss_mib": round(ref["peak_rss_mib"]),
               "identical_rows": float(np.mean(same)), "tie_rows": int(ties.sum()),
               "other_mismatches": int((~same & ~ties).sum())}
        results.append(row)
        print(f"  bank {n:>10,}: ours {row['ours_queries_per_s']:>8.1f} q/s, {row['ours_peak_rss_mib']:>6} MiB | "
              f"FAISS {row['faiss_queries_per_s']:>8.1f} q/s, {row['faiss_peak_rss_mib']:>6} MiB | "
              f"{row['speedup_vs_faiss']}x | identical top-{args.k} rows {row['identical_rows']:.4f} "
              f"(ties {row['tie_rows']}, other {row['other_mismatches']})")
    summary = {"k": args.k, "dim": args.dim, "dtype": args.dtype, "repeats": args.repeats,
               "machine": machine, "results": results}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
