"""Compiles every recipe (configs/recipes/*.gin: a paper-size config with the mesh, batch, remat
and dtypes chosen for one TPU slice) ahead of time with `trainer.compile`, on this host, and
prints the projected-cost table: HBM per device, XLA's estimated step time (or, where XLA gives
none, e.g. for v6e programs with an FFT, the roofline estimate, marked "(roofline)"), projected MFU,
steps per day and days to the paper's step count.  All figures are XLA's estimates from ahead-of-time
compilation, not measurements on a TPU.

    python benchmarks/recipes.py                                  # every recipe (~1-2 h on 2 cores)
    python benchmarks/recipes.py --only waveform_generator_v5p-128 --write_golden

`--write_golden` records each compiled recipe's per-device bytes in tests/golden/recipes.json
(what tests/integration/test_recipes.py compares against).  Each recipe compiles in its own
process; `--out FILE` writes the rows as JSON.  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "configs", "recipes")
GOLDEN = os.path.join(ROOT, "tests", "golden", "recipes.json")
# The paper's training steps per stage (Noise2Music, section 4.1); MuLan's are not published.
PAPER_STEPS = {"waveform_generator": 1_600_000, "waveform_cascader": 460_000, "spectrogram_generator": 1_800_000,
               "spectrogram_vocoder": 840_000, "super_resolution": 270_000}


def recipes(only=()) -> list[str]:
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(RECIPES, "*.gin")))
    missing = sorted(set(only) - set(names))
    if missing:
        raise SystemExit(f"--only: no recipe {missing} in {RECIPES} (there are {names})")
    return [n for n in names if not only or n in only]


def stage_of(recipe: str) -> str:
    return recipe.rsplit("_", 1)[0]


def compile_recipe(name: str, timeout: int) -> dict:
    """`python -m trainer.compile --gin_file=recipes/NAME.gin` in its own process -> its JSON line."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "trainer.compile", f"--gin_file=recipes/{name}.gin"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"recipe {name}: trainer.compile exited {proc.returncode}: {proc.stderr[-2000:]}")
    report = json.loads(lines[-1])
    report["wall_seconds"] = round(time.time() - t0, 1)
    return report


def row(name: str, r: dict) -> dict:
    est = r.get("estimated_step_seconds")
    steps = PAPER_STEPS.get(stage_of(name))
    return {"recipe": name, "topology": r["topology"], "chips": r["num_devices"], "mesh": r["mesh"],
            "global_batch": r["global_batch"], "fits": r["fits"],
            "hbm_gib_per_device": round(r["hbm_bytes_per_device"] / 2 ** 30, 2) if r.get("hbm_bytes_per_device") else None,
            "hbm_gib_capacity": round(r["hbm_capacity_bytes"] / 2 ** 30, 2),
            "step_ms": round(est * 1e3, 1) if est else None, "step_time_source": r.get("step_time_source"),
            "projected_mfu": round(r["projected_mfu"], 3) if est else None,
            "steps_per_day": round(86400 / est) if est else None,
            "paper_steps": steps, "days_to_paper_steps": round(steps * est / 86400, 2) if est and steps else None,
            "compile_seconds": round(r.get("compile_seconds") or 0, 1)}


def markdown(rows: list[dict]) -> str:
    out = ["| recipe | slice | mesh (data, fsdp, tensor) | batch | HBM / device | est. step | MFU | steps/day | "
           "days to paper steps |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mesh = ", ".join(str(v) for v in r["mesh"].values())
        days = f"{r['days_to_paper_steps']:.1f} ({r['paper_steps'] // 1000}k)" if r["days_to_paper_steps"] else "-"
        roofline = " (roofline)" if r.get("step_time_source") == "roofline" else ""
        out.append(f"| {r['recipe']} | {r['topology']} ({r['chips']} chips) | {mesh} | {r['global_batch']} | "
                   f"{r['hbm_gib_per_device']} of {r['hbm_gib_capacity']} GiB | {r['step_ms']} ms{roofline} | "
                   f"{r['projected_mfu']:.0%} | {r['steps_per_day']:,} | {days} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=(), help="recipe names (file names without .gin)")
    ap.add_argument("--write_golden", action="store_true", help=f"record per-device bytes in {GOLDEN}")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per recipe")
    a = ap.parse_args(argv)
    names = recipes(a.only)
    rows, failed = [], {}
    for i, name in enumerate(names):
        print(f"[recipes] {i + 1}/{len(names)}: compiling {name} ...", file=sys.stderr, flush=True)
        try:
            r = row(name, compile_recipe(name, a.timeout))
        except (RuntimeError, subprocess.TimeoutExpired) as e:   # one recipe's failure does not lose the others
            failed[name] = str(e)[-300:]
            print(f"[recipes] {name} FAILED: {str(e)[:2000]}", file=sys.stderr, flush=True)
            continue
        rows.append(r)
        print(f"[recipes] {name}: {r['hbm_gib_per_device']} GiB per device, {r['step_ms']} ms, MFU "
              f"{r['projected_mfu']}, compiled in {r['compile_seconds']} s", file=sys.stderr, flush=True)
    print(markdown(rows))
    if a.write_golden:
        golden = json.load(open(GOLDEN)) if os.path.exists(GOLDEN) else {}
        golden.update({r["recipe"]: {k: r[k] for k in ("topology", "mesh", "global_batch", "hbm_gib_per_device",
                                                        "step_ms", "step_time_source", "projected_mfu")}
                       for r in rows})
        with open(GOLDEN, "w") as f:
            json.dump(dict(sorted(golden.items())), f, indent=1)
            f.write("\n")
        print(f"[recipes] goldens written to {GOLDEN}", file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"[recipes] rows written to {a.out}", file=sys.stderr)
    result = {"recipes": rows, "failed": failed}
    print(json.dumps(result))
    if failed:
        sys.exit(f"[recipes] {len(failed)} recipe(s) failed to compile: {sorted(failed)}")
    return result


if __name__ == "__main__":
    main()
