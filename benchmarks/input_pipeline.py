"""Does one host's input pipeline keep up with the paper-size step?  For every recipe
(configs/recipes/*.gin), the examples/s per core of that stage's input pipeline, run here as the
trainer runs it on one host of the recipe's slice, against the examples/s per host core that its
step needs.

    python benchmarks/input_pipeline.py --labels=runs/mulan_tiny/pseudo_labels
    python benchmarks/input_pipeline.py --labels=... --cores=1 --only spectrogram_vocoder

What runs: the recipe's gin config with `datasets/pseudo_labels.gin`, on the corpus the labels
were built on (`--corpus` for another), `TASK='n2m_pseudo_labels'` for the Noise2Music stages
(MuLan trains on weak text: its own task), and the `SeqioData` it configures, iterated as host 0
of the slice's hosts (`DataLayout`: the global batch, its per-host share, the host count), so each
batch is one host's share of one step.  Per example that is the TFRecord read and parse, the
16-bit PCM decode, the random crop (resampled where the records' rate is not the stage's: not in
these recipes, whose records are written at each stage's rate), silence dropping, the text draw,
tokenization (T5 SentencePiece for Noise2Music, WordPiece for MuLan) and, for the Noise2Music
stages, the exact top-10 of the clip's MuLan embedding against a caption bank padded to
`--bank_size` captions (4M, the paper's scale: `pseudo_label_pipeline.synthetic_copy`) and the
inverse-frequency draw.

What the step needs: XLA's estimated step time of each recipe, from its golden
(tests/golden/recipes.json, written by `benchmarks/recipes.py --write_golden`), gives
global batch / step time / hosts examples/s per host.  Host shapes (the Cloud TPU docs): a v5p VM
has 4 chips and 208 vCPUs, a multi-host v6e VM 4 chips and 180 vCPUs.  Only half of them count
here (`--usable_vcpu_fraction=0.5`: the docs' NUMA-bound half, and the rest left to the runtime),
and the figure here is divided by the cores this process may use, so `margin` assumes the pipeline
scales linearly with cores (run `--cores=1` beside the default to see how far it does here).

Caveat: the demo corpus's clips are about 16 s, so a 30 s crop decodes 16 s and pads the rest;
a corpus of 30 s clips decodes up to 1.9x the samples (the matching, not the decode, dominates
the Noise2Music stages).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(ROOT, "tests", "golden", "recipes.json")
# A TPU VM host of a multi-host slice: (chips, vCPUs), from the Cloud TPU docs for each chip.
HOSTS = {"v5p": (4, 208), "v6e": (4, 180)}


def stage_of(recipe: str) -> str:
    return recipe.rsplit("_", 1)[0]


def need(recipe: str, golden: dict, usable: float) -> dict:
    """What recipe's step needs of each host: examples/s per host and per usable host vCPU."""
    from trainer import topology

    g = golden[recipe]
    chip = topology.chip(g["topology"]).name
    if chip not in HOSTS:
        raise SystemExit(f"{recipe}: no host shape for {chip} TPUs in HOSTS (benchmarks/input_pipeline.py)")
    chips_per_host, vcpus = HOSTS[chip]
    hosts = max(1, topology.num_chips(g["topology"]) // chips_per_host)
    per_host = g["global_batch"] / (g["step_ms"] / 1000) / hosts
    return {"topology": g["topology"], "global_batch": g["global_batch"], "step_ms": g["step_ms"], "hosts": hosts,
            "per_host_batch": g["global_batch"] // hosts, "host_vcpus": vcpus,
            "needed_examples_per_s_per_host": round(per_host, 1),
            "needed_examples_per_s_per_vcpu": round(per_host / (vcpus * usable), 2)}


def pipeline(recipe: str, corpus: str, labels: str, global_batch: int, hosts: int):
    """The recipe's `SeqioData` iterated as host 0 of `hosts`: an iterator of that host's batches."""
    import gin

    from trainer import flags as flags_lib
    from trainer.input_pipeline import SeqioData
    from trainer.partitioning import DataLayout

    gin.clear_config()
    argv = [f"--gin_file=recipes/{recipe}.gin", f"--gin.CORPUS_DIR={corpus!r}"]
    if not recipe.startswith("mulan_"):
        argv += ["--gin_file=datasets/pseudo_labels.gin", "--gin.TASK='n2m_pseudo_labels'",
                 f"--gin.PSEUDO_LABELS_DIR={labels!r}"]
    flags_lib.apply(flags_lib.parse_argv(argv))
    layout = DataLayout(global_batch_size=global_batch, per_host_batch_size=global_batch // hosts, shard_id=0,
                        num_shards=hosts)
    return SeqioData().make_iterator(layout, seed=0)


def measure(it, per_host_batch: int, batches: int, windows: int, warmup: int) -> dict:
    """Median examples/s over `windows` windows of `batches` batches, after `warmup` batches."""
    t = time.perf_counter()
    for _ in range(warmup):
        next(it)
    first = time.perf_counter() - t
    rates = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batches * per_host_batch / (time.perf_counter() - t))
    return {"examples_per_s": statistics.median(rates), "windows": [round(r, 1) for r in rates],
            "first_batches_s": round(first, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", required=True, help="a folder built by `python -m pseudo_labels.label`")
    ap.add_argument("--corpus", default=None, help="default: the corpus the labels were built on")
    ap.add_argument("--bank_size", type=int, default=4_000_000, help="pad the caption bank to this many rows")
    ap.add_argument("--only", nargs="*", default=(), help="recipes or stages (default: every recipe)")
    ap.add_argument("--cores", type=int, default=0, help="use only the first N CPUs (default: all)")
    ap.add_argument("--usable_vcpu_fraction", type=float, default=0.5, help="of a TPU host's vCPUs, for the input")
    ap.add_argument("--batches", type=int, default=2, help="batches per timed window")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="batches before timing")
    ap.add_argument("--golden", default=GOLDEN)
    args = ap.parse_args(argv)
    if args.cores:   # before TensorFlow and XLA size their thread pools
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    cores = len(os.sched_getaffinity(0))

    import timing  # benchmarks/timing.py

    with open(args.golden, encoding="utf-8") as f:
        golden = json.load(f)
    recipes = [r for r in sorted(golden) if not args.only or r in args.only or stage_of(r) in args.only]
    if not recipes:
        raise SystemExit(f"--only {args.only}: no recipe or stage of {sorted(golden)}")
    with open(os.path.join(args.labels, "pseudo_labels.json"), encoding="utf-8") as f:
        corpus = os.path.abspath(args.corpus or json.load(f)["corpus_dir"])
    m = timing.machine()
    print(timing.machine_line(m) + f"; this process uses {cores} of them", file=sys.stderr)
    rows, measured = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        labels = os.path.abspath(args.labels)
        if args.bank_size and not all(r.startswith("mulan_") for r in recipes):
            from pseudo_label_pipeline import synthetic_copy

            print(f"padding the caption bank to {args.bank_size:,} captions ...", file=sys.stderr)
            labels, _ = synthetic_copy(args.labels, args.bank_size, "float32", tmp)
        for recipe in recipes:
            n = need(recipe, golden, args.usable_vcpu_fraction)
            key = (stage_of(recipe), n["per_host_batch"])    # the same pipeline for both chips
            if key not in measured:
                print(f"{recipe}: {n['per_host_batch']} examples per host batch ...", file=sys.stderr)
                it = pipeline(recipe, corpus, labels, n["global_batch"], n["hosts"])
                measured[key] = measure(it, n["per_host_batch"], args.batches, args.windows, args.warmup)
                del it
            got = measured[key]
            per_core = got["examples_per_s"] / cores
            row = {"recipe": recipe, **n, "examples_per_s": round(got["examples_per_s"], 1),
                   "examples_per_s_per_core": round(per_core, 1),
                   "margin": round(per_core / n["needed_examples_per_s_per_vcpu"], 1),
                   "inline_matching": not recipe.startswith("mulan_"), "windows": got["windows"]}
            rows.append(row)
            print(f"{recipe}: {row['examples_per_s_per_core']} examples/s per core here; the step needs "
                  f"{row['needed_examples_per_s_per_host']}/s per host = {row['needed_examples_per_s_per_vcpu']} "
                  f"per usable vCPU: margin {row['margin']}x", file=sys.stderr)
    print("\n| recipe | per-host batch | step (XLA est.) | needed / host | needed / vCPU | ours / core | margin |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        print(f"| `{r['recipe']}` | {r['per_host_batch']} | {r['step_ms']} ms | {r['needed_examples_per_s_per_host']:,} "
              f"| {r['needed_examples_per_s_per_vcpu']} | {r['examples_per_s_per_core']} | {r['margin']}x |",
              file=sys.stderr)
    out = {"cores": cores, "bank_size": args.bank_size, "usable_vcpu_fraction": args.usable_vcpu_fraction,
           "min_margin": min(r["margin"] for r in rows), "rows": rows, "machine": m}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
