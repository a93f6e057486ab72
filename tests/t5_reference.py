"""A float64 numpy T5 v1.1 encoder written from Hugging Face's definitions, on HF-named tensors:
the reference the Flax encoder and its checkpoint converter are checked against."""
import math

import numpy as np


def hf_state(cfg, seed=0):
    rng = np.random.default_rng(seed)
    hk = cfg.num_heads * cfg.d_kv
    t = {"shared.weight": rng.normal(size=(cfg.vocab_size, cfg.d_model)),
         "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": rng.normal(
             size=(cfg.rel_buckets, cfg.num_heads)),
         "encoder.final_layer_norm.weight": 1 + 0.1 * rng.normal(size=cfg.d_model)}
    for i in range(cfg.num_layers):
        b = f"encoder.block.{i}.layer"
        for n in "qkv":
            t[f"{b}.0.SelfAttention.{n}.weight"] = 0.3 * rng.normal(size=(hk, cfg.d_model))
        t[f"{b}.0.SelfAttention.o.weight"] = 0.3 * rng.normal(size=(cfg.d_model, hk))
        t[f"{b}.1.DenseReluDense.wi_0.weight"] = 0.3 * rng.normal(size=(cfg.d_ff, cfg.d_model))
        t[f"{b}.1.DenseReluDense.wi_1.weight"] = 0.3 * rng.normal(size=(cfg.d_ff, cfg.d_model))
        t[f"{b}.1.DenseReluDense.wo.weight"] = 0.3 * rng.normal(size=(cfg.d_model, cfg.d_ff))
        t[f"{b}.0.layer_norm.weight"] = 1 + 0.1 * rng.normal(size=cfg.d_model)
        t[f"{b}.1.layer_norm.weight"] = 1 + 0.1 * rng.normal(size=cfg.d_model)
    return {k: v.astype(np.float32) for k, v in t.items()}


def bucket_ref(rel, num_buckets=32, max_distance=128):
    num_buckets //= 2
    ret = 0 if rel <= 0 else num_buckets
    n = abs(rel)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def reference(t, cfg, ids, mask):
    t = {k: v.astype(np.float64) for k, v in t.items()}
    rms = lambda x, w: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.eps) * w
    gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    x = t["shared.weight"][ids]                                             # [B, T, D]
    n = ids.shape[1]
    rb = t["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    bias = np.array([[rb[bucket_ref(m - q)] for m in range(n)] for q in range(n)]).transpose(2, 0, 1)
    bias = bias[None] + np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
    h_, dk = cfg.num_heads, cfg.d_kv
    for i in range(cfg.num_layers):
        b = f"encoder.block.{i}.layer"
        h = rms(x, t[f"{b}.0.layer_norm.weight"])
        q, k, v = (np.einsum("btd,ed->bte", h, t[f"{b}.0.SelfAttention.{c}.weight"]).reshape(*h.shape[:2], h_, dk)
                   for c in "qkv")
        s = np.einsum("bqhd,bkhd->bhqk", q, k) + bias
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        a = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(*h.shape[:2], h_ * dk)
        x = x + a @ t[f"{b}.0.SelfAttention.o.weight"].T
        h = rms(x, t[f"{b}.1.layer_norm.weight"])
        x = x + (gelu(h @ t[f"{b}.1.DenseReluDense.wi_0.weight"].T) * (h @ t[f"{b}.1.DenseReluDense.wi_1.weight"].T)) \
            @ t[f"{b}.1.DenseReluDense.wo.weight"].T
    return rms(x, t["encoder.final_layer_norm.weight"])
