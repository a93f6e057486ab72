"""MuLan train-step and embedding throughput, with a breakdown of where the step's time goes.

    python benchmarks/mulan_step.py                                  # peer_ast.gin, batch 16
    python benchmarks/mulan_step.py --gin_file=mulan/tiny_cpu.gin --batch_size=64

Measures, on this machine's default backend, one device:
  * the full train step (log-mel, SpecAugment, both towers forward and backward, the MuLan loss on
    the batch, Adam update): examples/s and achieved GFLOP/s (XLA's own FLOP count of the
    compiled step divided by the median wall time);
  * audio embedding (log-mel + audio tower, inference) and text embedding: items/s and GFLOP/s;
  * the breakdown: forward+backward of each tower alone and the front end alone, as shares of the
    step (a profile by subtraction, no tracer overhead).
The peer reference (musiclm-pytorch MuLaN at this configuration, this machine, 2 threads) is
~2.5 train examples/s and ~10 audio clips/s; the ratio to it is printed.  Timings are medians of
`--repeats` runs after a warm-up; XLA uses every core of the machine (2 on the reference
machine, as the peer's 2 threads).  The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from timing import flops, median_seconds  # benchmarks/timing.py

PEER_TRAIN_EXAMPLES_PER_S = 2.5
PEER_AUDIO_CLIPS_PER_S = 10.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gin_file", default="mulan/peer_ast.gin")
    ap.add_argument("--gin", action="append", default=[], help="extra NAME=VALUE bindings")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from trainer import flags
    from trainer.optimizers import adam

    flags.parse_and_apply([f"--gin_file={args.gin_file}", "--model_dir=/tmp/unused",
                           "--gin.MulanModel.text_checkpoint=None"] + [f"--gin.{b}" for b in args.gin], "")
    model = flags.bound("train.model")
    b = args.batch_size
    rng = np.random.default_rng(0)
    batch = {"audio": (0.1 * rng.normal(size=(b, model.audio_samples))).astype(np.float32),
             "text_tokens": rng.integers(1000, 29000, size=(b, model.text_length)).astype(np.int32),
             "text_mask": np.ones((b, model.text_length), np.int32)}
    batch = jax.device_put(batch)
    params = jax.jit(lambda r: nn.meta.unbox(model.init_params(r, batch)))(jax.random.PRNGKey(0))
    opt = adam(1e-4)
    opt_state = opt.init(params)
    n_params = sum(x.size for x in jax.tree.leaves(params))

    def step(p, s, bt, key):
        (loss, _), g = jax.value_and_grad(lambda q: model.loss(q, bt, key), has_aux=True)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    key = jax.random.PRNGKey(1)
    step_c = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, batch, key).compile()
    state = [params, opt_state]

    def run_step():
        state[0], state[1], loss = step_c(state[0], state[1], batch, key)
        loss.block_until_ready()

    t_step = median_seconds(run_step, args.repeats)
    params = state[0]

    audio_c = jax.jit(model.embed_audio).lower(params, batch["audio"]).compile()
    text_c = jax.jit(model.embed_text).lower(params, batch["text_tokens"], batch["text_mask"]).compile()
    t_audio = median_seconds(lambda: audio_c(params, batch["audio"]).block_until_ready(), args.repeats)
    t_text = median_seconds(lambda: text_c(params, batch["text_tokens"], batch["text_mask"]).block_until_ready(),
                             args.repeats)

    # Breakdown: each part's forward+backward alone, in training mode.
    from mulan.model import MuLan

    def part_loss(p, which):
        rngs = {"augment": key, "dropout": key}
        if which == "frontend":
            f = model.module.apply({"params": p}, batch["audio"], True, rngs=rngs, method=MuLan.features)
            return jnp.sum(f)
        if which == "audio":
            e = model.module.apply({"params": p}, batch["audio"], True, rngs=rngs, method=MuLan.embed_audio)
        else:
            e = model.module.apply({"params": p}, batch["text_tokens"], batch["text_mask"], True, rngs=rngs,
                                   method=MuLan.embed_text)
        return jnp.sum(e ** 2)

    parts = {}
    for which in ("frontend", "audio", "text"):
        g = jax.jit(jax.grad(lambda p, w=which: part_loss(p, w))) if which != "frontend" else \
            jax.jit(lambda p: part_loss(p, "frontend"))
        c = g.lower(params).compile()
        parts[which] = median_seconds(lambda: jax.block_until_ready(c(params)), args.repeats)

    f_step, f_audio, f_text = flops(step_c), flops(audio_c), flops(text_c)
    result = {
        "config": args.gin_file, "batch_size": b, "cpu_cores": os.cpu_count(),
        "backend": jax.default_backend(), "num_params": int(n_params),
        "train_step_s": round(t_step, 4), "train_examples_per_s": round(b / t_step, 2),
        "train_gflop_per_step": round(f_step / 1e9, 2), "train_gflops": round(f_step / t_step / 1e9, 1),
        "audio_embed_clips_per_s": round(b / t_audio, 2), "audio_embed_gflops": round(f_audio / t_audio / 1e9, 1),
        "text_embed_texts_per_s": round(b / t_text, 2), "text_embed_gflops": round(f_text / t_text / 1e9, 1),
        "breakdown_s": {"frontend_fwd": round(parts["frontend"], 4), "audio_tower_fwd_bwd": round(parts["audio"], 4),
                        "text_tower_fwd_bwd": round(parts["text"], 4)},
        "breakdown_share_of_step": {k: round(v / t_step, 3) for k, v in parts.items()},
        "peer_train_examples_per_s": PEER_TRAIN_EXAMPLES_PER_S, "peer_audio_clips_per_s": PEER_AUDIO_CLIPS_PER_S,
        "train_speedup_vs_peer": round(b / t_step / PEER_TRAIN_EXAMPLES_PER_S, 2),
        "audio_embed_speedup_vs_peer": round(b / t_audio / PEER_AUDIO_CLIPS_PER_S, 2),
        "repeats": args.repeats,
    }
    print(f"MuLan {args.gin_file}, batch {b}, {result['cpu_cores']} CPU cores, {jax.default_backend()}, "
          f"{n_params / 1e6:.1f}M params")
    print(f"  train step      {t_step * 1e3:8.1f} ms  {result['train_examples_per_s']:7.2f} examples/s  "
          f"{result['train_gflops']:6.1f} GFLOP/s   ({result['train_speedup_vs_peer']}x the peer's "
          f"{PEER_TRAIN_EXAMPLES_PER_S})")
    print(f"  audio embedding {t_audio * 1e3:8.1f} ms  {result['audio_embed_clips_per_s']:7.2f} clips/s     "
          f"{result['audio_embed_gflops']:6.1f} GFLOP/s   ({result['audio_embed_speedup_vs_peer']}x the peer's "
          f"{PEER_AUDIO_CLIPS_PER_S})")
    print(f"  text embedding  {t_text * 1e3:8.1f} ms  {result['text_embed_texts_per_s']:7.2f} texts/s     "
          f"{result['text_embed_gflops']:6.1f} GFLOP/s")
    print("  where the step goes (each part's fwd+bwd alone, share of the step):")
    for k, v in parts.items():
        print(f"    {k:<10} {v * 1e3:8.1f} ms  {v / t_step:6.1%}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
