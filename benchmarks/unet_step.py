"""1-D U-Net train-step and sampling-step speed at the peer's configuration, with a breakdown.

    python benchmarks/unet_step.py
    python benchmarks/unet_step.py --kernel=7 --batch_size=2

The configuration of the reference, `audio-diffusion-pytorch`'s UNetV0 (v-diffusion) as measured
on this machine: 1 channel, length 32,768, channels [128, 256, 512, 512], strides [4, 4, 4, 2],
2 blocks per level, self- and cross-attention at the last two levels (8 heads of 64), 64 text
tokens of width 768, batch 4, Adam, float32, 2 threads: ~0.9 samples/s per train step and
~0.34 s per sampling step at batch 1.  Ours is `noise2music.unet.UNet1D` with those settings
(kernel 3 like UNetV0's blocks), v-parameterisation, the cosine schedule.

Measured, one device, medians of `--repeats` runs after a warm-up:
  * train step: diffusion loss forward + backward + Adam update (samples/s, achieved GFLOP/s from
    XLA's FLOP count of the compiled step);
  * sampling step at batch 1: one network evaluation and the ancestral update (seconds), and
    with classifier-free guidance (conditional + unconditional in one batch of 2);
  * the breakdown: forward alone, and forward + backward without attention, as shares of the step.
The last stdout line is one JSON object.
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
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--length", type=int, default=32768)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    timing.add_peers_flags(ap)
    args = ap.parse_args(argv)
    peer = timing.load_peer(args, "unet")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from noise2music import diffusion
    from noise2music.unet import UNet1D

    def net(attn=True):
        return UNet1D(base=128, kernel=args.kernel, strides=(4, 4, 4, 2), multipliers=(1, 2, 4, 4),
                      blocks=(2, 2, 2, 2), self_attention=(False, False, attn, attn),
                      cross_attention=(False, False, attn, attn), num_heads=8, head_dim=64,
                      attention_placement="per_level")   # the peer's: one attention per level

    sched = diffusion.Schedule("cosine")
    b, n = args.batch_size, args.length
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (b, n, 1))
    text = jax.random.normal(key, (b, 64, 768))
    mask = jnp.ones((b, 64), jnp.int32)

    def build(model):
        params = nn.meta.unbox(model.init(key, x, jnp.zeros((b,)), text=text, text_mask=mask))
        opt = optax.adam(1e-4)

        def loss_fn(p, x, text, k):
            k1, k2 = jax.random.split(k)
            t = jax.random.uniform(k1, (x.shape[0],))
            eps = jax.random.normal(k2, x.shape)
            x_t = diffusion.q_sample(sched, x, t, eps)
            pred = model.apply(p, x_t, t, text=text, text_mask=mask)
            return diffusion.diffusion_loss(sched, pred, x, eps, t, "v").mean()

        def step(p, s, x, text, k):
            loss, g = jax.value_and_grad(loss_fn)(p, x, text, k)
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s, loss

        return params, opt.init(params), loss_fn, step

    model = net()
    params, state, loss_fn, step = build(model)
    train = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, x, text, key).compile()
    train_flops = flops(train)
    holder = {"p": params, "s": state}

    def run_train():
        holder["p"], holder["s"], loss = train(holder["p"], holder["s"], x, text, key)
        loss.block_until_ready()

    t_train = median_seconds(run_train, args.repeats)
    params = holder["p"]

    fwd = jax.jit(loss_fn).lower(params, x, text, key).compile()
    t_fwd = median_seconds(lambda: fwd(params, x, text, key).block_until_ready(), args.repeats)
    model_na = net(attn=False)
    p_na, s_na, _, step_na = build(model_na)
    train_na = jax.jit(step_na).lower(p_na, s_na, x, text, key).compile()
    t_na = median_seconds(lambda: train_na(p_na, s_na, x, text, key)[2].block_until_ready(), args.repeats)

    def sample_step(p, x_t, t, s, text, k, guided: bool):
        tb = jnp.full((x_t.shape[0],), t)
        if guided:
            both = model.apply(p, jnp.concatenate([x_t, x_t]), jnp.concatenate([tb, tb]),
                               text=jnp.concatenate([text, text]), text_mask=jnp.ones((2, 64), jnp.int32),
                               drop_text=jnp.array([0, 1]))
            pred = diffusion.guided(both[:1], both[1:], 3.0)
        else:
            pred = model.apply(p, x_t, tb, text=text, text_mask=jnp.ones((1, 64), jnp.int32))
        eps, x0 = diffusion.to_eps_x0(sched, pred, x_t, tb, "v")
        return diffusion.ancestral_step(sched, x_t, t, s, eps, x0, k, 0.0)

    x1, text1 = x[:1], text[:1]
    out = {}
    for guided in (False, True):
        f = jax.jit(lambda p, xt, tx, k, g=guided: sample_step(p, xt, 0.5, 0.49, tx, k, g))
        f = f.lower(params, x1, text1, key).compile()
        out[guided] = median_seconds(lambda: f(params, x1, text1, key).block_until_ready(), args.repeats)

    n_params = sum(int(p.size) for p in jax.tree.leaves(params))
    res = {
        "config": {"length": n, "batch_size": b, "channels": [128, 256, 512, 512], "strides": [4, 4, 4, 2],
                   "blocks": 2, "attention_levels": "last 2", "heads": 8, "kernel": args.kernel,
                   "params_m": round(n_params / 1e6, 2), "devices": jax.device_count()},
        "machine": timing.machine(),
        "train_step_s": round(t_train, 4),
        "train_samples_per_s": round(b / t_train, 3),
        "train_gflops_per_s": round(train_flops / t_train / 1e9, 1),
        "sampling_step_s": round(out[False], 4),
        "sampling_step_guided_s": round(out[True], 4),
        "breakdown": {"forward_share": round(t_fwd / t_train, 3),
                      "attention_share": round(max(0.0, 1 - t_na / t_train), 3)},
    }
    print(f"U-Net {res['config']['params_m']}M params, length {n}; {timing.machine_line(res['machine'])}",
          file=sys.stderr)
    line = {"train": f"train step, batch {b}: {res['train_samples_per_s']} samples/s ({res['train_gflops_per_s']} GFLOP/s)",
            "sampling": f"sampling step, batch 1: {res['sampling_step_s']} s",
            "sampling_guided": f"sampling step with guidance (batch 2): {res['sampling_step_guided_s']} s"}
    if peer is not None:
        sampling = timing.peer_figure(peer, "sampling")
        guided = [k for k in sampling if k != "cfg_scale=1"]
        theirs = {"train_samples_per_s": timing.peer_figure(peer, "train", "samples_per_s"),
                  "sampling_step_s": timing.peer_figure(peer, "sampling", "cfg_scale=1", "s_per_step")}
        if guided:
            theirs["sampling_step_guided_s"] = sampling[guided[0]]["s_per_step"]
        cfg = timing.peer_figure(peer, "config")
        res["peer"] = {"file": peer["_path"], "cpu": peer["env"].get("cpu"), "batch_size": cfg.get("batch"),
                       "length": cfg.get("length"), **{k: round(v, 4) for k, v in theirs.items()}}
        res["ratio_vs_peer"] = {"train": round(res["train_samples_per_s"] / theirs["train_samples_per_s"], 2),
                                "sampling": round(theirs["sampling_step_s"] / res["sampling_step_s"], 2)}
        if "sampling_step_guided_s" in theirs:
            res["ratio_vs_peer"]["sampling_guided"] = round(
                theirs["sampling_step_guided_s"] / res["sampling_step_guided_s"], 2)
        if (cfg.get("batch"), cfg.get("length")) != (b, n):
            print(f"note: the peer ran batch {cfg.get('batch')} at length {cfg.get('length')}, this run batch {b} "
                  f"at length {n}", file=sys.stderr)
        line["train"] += f"; the peer {theirs['train_samples_per_s']:.3f}: {res['ratio_vs_peer']['train']}x"
        line["sampling"] += f"; the peer {theirs['sampling_step_s']:.3f} s: {res['ratio_vs_peer']['sampling']}x faster"
        if "sampling_guided" in res["ratio_vs_peer"]:
            line["sampling_guided"] += (f"; the peer {theirs['sampling_step_guided_s']:.3f} s: "
                                        f"{res['ratio_vs_peer']['sampling_guided']}x faster")
    ceiling = timing.matmul_ceiling(args)
    if ceiling:
        res["torch_matmul_ceiling_gflops"] = round(ceiling, 1)
        line["train"] += f"; {res['train_gflops_per_s'] / ceiling:.0%} of torch's matmul ceiling ({ceiling:.0f})"
    for v in line.values():
        print(v, file=sys.stderr)
    if peer is None:
        print("(no peer figures: pass --peers=DIR from benchmarks/peers/run_all.sh for the ratios)", file=sys.stderr)
    print(f"breakdown: forward {res['breakdown']['forward_share']:.0%} of the step, attention "
          f"{res['breakdown']['attention_share']:.0%}", file=sys.stderr)
    print(json.dumps(res), flush=True)
    return res


if __name__ == "__main__":
    main()
