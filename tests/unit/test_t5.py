"""The Flax T5 v1.1 encoder against a float64 numpy T5 written from HF's definitions, through
the HF-name converter; relative-position buckets; checkpoint errors name the tensor."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noise2music.t5 import T5CheckpointError, T5Config, T5Encoder, load_hf_t5, relative_position_bucket

CFG = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_heads=3, num_layers=2)


def _hf_state(cfg, seed=0):
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


def _bucket_ref(rel, num_buckets=32, max_distance=128):
    num_buckets //= 2
    ret = 0 if rel <= 0 else num_buckets
    n = abs(rel)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def _reference(t, cfg, ids, mask):
    t = {k: v.astype(np.float64) for k, v in t.items()}
    rms = lambda x, w: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.eps) * w
    gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    x = t["shared.weight"][ids]                                             # [B, T, D]
    n = ids.shape[1]
    rb = t["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    bias = np.array([[rb[_bucket_ref(m - q)] for m in range(n)] for q in range(n)]).transpose(2, 0, 1)
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


def test_relative_position_buckets_match_t5():
    rel = np.arange(-300, 301)
    got = np.asarray(relative_position_bucket(jnp.asarray(rel)))
    np.testing.assert_array_equal(got, [_bucket_ref(int(r)) for r in rel])


def test_encoder_matches_a_numpy_t5_through_the_hf_converter():
    state = _hf_state(CFG)
    params = load_hf_t5(state, CFG)
    ids = np.array([[5, 9, 2, 41, 7, 0, 0], [3, 3, 1, 8, 20, 11, 4]])
    mask = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    got = T5Encoder(CFG).apply({"params": jax.tree.map(jnp.asarray, params)}, jnp.asarray(ids), jnp.asarray(mask))
    want = _reference(state, CFG, ids, mask)
    np.testing.assert_allclose(np.asarray(got)[mask > 0], want[mask > 0], rtol=2e-4, atol=2e-4)
    # the converted tree is exactly the module's parameter tree
    init = jax.eval_shape(lambda: T5Encoder(CFG).init(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask)))
    from flax import linen as nn

    assert jax.tree.structure(nn.meta.unbox(init)["params"]) == jax.tree.structure(params)


def test_checkpoint_of_another_size_names_the_tensor():
    state = _hf_state(CFG)
    with pytest.raises(T5CheckpointError, match="final_layer_norm.weight has shape"):
        load_hf_t5(dict(state, **{"encoder.final_layer_norm.weight": np.ones(8, np.float32)}), CFG)
    del state["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    with pytest.raises(T5CheckpointError, match="block.1.layer.1.DenseReluDense.wo.weight"):
        load_hf_t5(state, CFG)
    assert T5Config.v1_1("xl").d_model == 2048


def test_loads_a_safetensors_folder(tmp_path):
    from safetensors.numpy import save_file

    state = _hf_state(CFG, seed=3)
    save_file(state, str(tmp_path / "model.safetensors"))
    a = load_hf_t5(str(tmp_path), CFG)
    b = load_hf_t5(state, CFG)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(T5CheckpointError, match="no such file"):
        load_hf_t5(str(tmp_path / "nowhere"), CFG)
