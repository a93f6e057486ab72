"""What the frozen T5 encoder costs inside each text stage's train step: its analytic forward
FLOPs for the recipe's global batch (T5 v1.1 XL, the stage's `TEXT_LENGTH` tokens) against the
whole step's analytic FLOPs (the recipe golden's projected MFU x est. step x peak x chips,
tests/golden/recipes.json).  The share is what precomputing the embeddings per caption (as the
paper does) would save at most.  Nothing is compiled: T5 is traced abstractly (a few seconds).

    python benchmarks/text_encoder_share.py

The last stdout line is JSON.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "recipes.json")
# The text stages: tokens per caption (configs/noise2music/<stage>.gin, TEXT_LENGTH).
TEXT_LENGTH = {"waveform_generator": 64, "waveform_cascader": 64, "spectrogram_generator": 96}


def t5_forward_flops(batch: int, length: int) -> float:
    from noise2music.t5 import T5Config, T5Encoder
    from trainer import flops

    enc = T5Encoder(T5Config.v1_1("xl"))
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    params = jax.eval_shape(enc.init, jax.random.PRNGKey(0), ids)
    return flops.matmul_flops(lambda p, i: enc.apply(p, i), params, ids)


def main() -> dict:
    from trainer import topology

    golden = json.load(open(GOLDEN))
    rows = []
    for recipe, g in sorted(golden.items()):
        stage = recipe.rsplit("_", 1)[0]
        if stage not in TEXT_LENGTH:
            continue
        chips = topology.num_chips(g["topology"])
        step = g["projected_mfu"] * g["step_ms"] / 1e3 * topology.chip(g["topology"]).peak_bf16_flops * chips
        t5 = t5_forward_flops(g["global_batch"], TEXT_LENGTH[stage])
        rows.append({"recipe": recipe, "text_length": TEXT_LENGTH[stage], "t5_tflops": round(t5 / 1e12, 1),
                     "step_tflops": round(step / 1e12, 1), "t5_share": round(t5 / step, 3)})
    print("| recipe | tokens | T5 forward (TFLOP / step) | whole step (TFLOP) | T5's share |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['text_length']} | {r['t5_tflops']} | {r['step_tflops']} | {r['t5_share']:.1%} |")
    result = {"rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
