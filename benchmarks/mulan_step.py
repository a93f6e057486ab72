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
With `--peers` (the JSON of musiclm-pytorch's MuLaN at this configuration, measured on this
machine by `benchmarks/peers/run_all.sh`, see benchmarks/timing.py) the ratios to it are printed,
and with its peak.json the share of torch's float32 matmul ceiling.  Timings are medians of
`--repeats` runs after a warm-up; XLA uses every core of the machine (the peers pin 2 threads:
run on a 2-core machine, or compare with care).  The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import timing  # benchmarks/timing.py
from timing import flops, median_seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gin_file", default="mulan/peer_ast.gin")
    ap.add_argument("--gin", action="append", default=[], help="extra NAME=VALUE bindings")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    timing.add_peers_flags(ap)
    args = ap.parse_args(argv)
    peer = timing.load_peer(args, "mulan")
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
    machine = timing.machine()
    result = {
        "config": args.gin_file, "batch_size": b, "machine": machine, "num_params": int(n_params),
        "train_step_s": round(t_step, 4), "train_examples_per_s": round(b / t_step, 2),
        "train_gflop_per_step": round(f_step / 1e9, 2), "train_gflops": round(f_step / t_step / 1e9, 1),
        "audio_embed_clips_per_s": round(b / t_audio, 2), "audio_embed_gflops": round(f_audio / t_audio / 1e9, 1),
        "text_embed_texts_per_s": round(b / t_text, 2), "text_embed_gflops": round(f_text / t_text / 1e9, 1),
        "breakdown_s": {"frontend_fwd": round(parts["frontend"], 4), "audio_tower_fwd_bwd": round(parts["audio"], 4),
                        "text_tower_fwd_bwd": round(parts["text"], 4)},
        "breakdown_share_of_step": {k: round(v / t_step, 3) for k, v in parts.items()},
        "repeats": args.repeats,
    }
    ours = {"train": result["train_examples_per_s"], "audio_embed": result["audio_embed_clips_per_s"],
            "text_embed": result["text_embed_texts_per_s"]}
    theirs = {}
    if peer is not None:
        theirs = {"train": timing.peer_figure(peer, "train", "examples_per_s"),
                  "audio_embed": timing.peer_figure(peer, "audio_embed", "clips_per_s"),
                  "text_embed": timing.peer_figure(peer, "text_embed", "texts_per_s")}
        peer_batch = timing.peer_figure(peer, "config", "batch")
        result["peer"] = {"file": peer["_path"], "cpu": peer["env"].get("cpu"), "batch_size": peer_batch,
                          **{f"{k}_per_s": round(v, 2) for k, v in theirs.items()}}
        result["ratio_vs_peer"] = {k: round(ours[k] / theirs[k], 2) for k in theirs}
        if peer_batch != b:
            print(f"note: the peer ran batch {peer_batch}, this run batch {b}", file=sys.stderr)
    ceiling = timing.matmul_ceiling(args)
    if ceiling:
        result["torch_matmul_ceiling_gflops"] = round(ceiling, 1)
        result["share_of_ceiling"] = {"train": round(result["train_gflops"] / ceiling, 3),
                                      "audio_embed": round(result["audio_embed_gflops"] / ceiling, 3)}
    print(f"MuLan {args.gin_file}, batch {b}, {n_params / 1e6:.1f}M params; {timing.machine_line(machine)}")
    units = {"train": "examples/s", "audio_embed": "clips/s", "text_embed": "texts/s"}
    times = {"train": t_step, "audio_embed": t_audio, "text_embed": t_text}
    gflops = {"train": result["train_gflops"], "audio_embed": result["audio_embed_gflops"],
              "text_embed": result["text_embed_gflops"]}
    print(f"  {'':<12} {'ms':>8} {'ours':>8} {'peer':>8} {'ratio':>6}  {'GFLOP/s':>7}")
    for k in ours:
        peer_s = f"{theirs[k]:8.2f} {ours[k] / theirs[k]:5.2f}x" if k in theirs else f"{'-':>8} {'-':>6}"
        print(f"  {k:<12} {times[k] * 1e3:8.1f} {ours[k]:8.2f} {peer_s}  {gflops[k]:7.1f}  {units[k]}")
    if ceiling:
        print(f"  torch's float32 matmul ceiling here: {ceiling:.0f} GFLOP/s; the train step reaches "
              f"{result['share_of_ceiling']['train']:.0%} of it")
    if peer is None:
        print("  (no peer figures: pass --peers=DIR from benchmarks/peers/run_all.sh for the ratios)")
    print("  where the step goes (each part's fwd+bwd alone, share of the step):")
    for k, v in parts.items():
        print(f"    {k:<10} {v * 1e3:8.1f} ms  {v / t_step:6.1%}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
