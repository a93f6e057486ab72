"""The BERT text tower loads a real pretrained checkpoint (all-MiniLM-L6-v2) and matches an
independent numpy forward pass of it; mismatched checkpoints fail naming the parameter."""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy.special import erf

from mulan import pretrained
from layers import pretrained as layers_pretrained
from mulan.text_tower import bert_tower, installed_minilm

SENTENCES = ["A mellow jazz trio with upright bass and brushed drums.",
             "Bach chorale sung by a four-part choir", "fast celtic fiddle tune", "piano"]


def _numpy_bert(state, ids, mask, heads=12, eps=1e-12):
    """BERT straight from the HF tensor names, in float64 numpy: the reference."""
    g = lambda k: state[k].astype(np.float64)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g(p + ".weight") + g(p + ".bias")

    lin = lambda x, p: x @ g(p + ".weight").T + g(p + ".bias")
    b, length = ids.shape
    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[:length] \
        + g("embeddings.token_type_embeddings.weight")[0]
    x = ln(x, "embeddings.LayerNorm")
    i = 0
    while f"encoder.layer.{i}.attention.self.query.weight" in state:
        p = f"encoder.layer.{i}"
        split = lambda y: y.reshape(b, length, heads, -1).transpose(0, 2, 1, 3)
        q, k, v = (split(lin(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + np.where(mask[:, None, None, :] > 0, 0, -1e9)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = ln(x + lin(a.transpose(0, 2, 1, 3).reshape(b, length, -1), f"{p}.attention.output.dense"),
               f"{p}.attention.output.LayerNorm")
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = ln(x + lin(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        i += 1
    return x


@pytest.fixture(scope="module")
def minilm():
    from tokenizers import Tokenizer

    path = installed_minilm()
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    enc = [tok.encode(s).ids for s in SENTENCES]  # [CLS] ... [SEP]
    length = 24
    ids = np.zeros((len(enc), length), np.int32)
    mask = np.zeros((len(enc), length), np.int32)
    for i, e in enumerate(enc):
        ids[i, :len(e)], mask[i, :len(e)] = e, 1
    return path, ids, mask


def test_minilm_loads_and_matches_numpy_reference(minilm):
    path, ids, mask = minilm
    tower = bert_tower(hidden=384, num_layers=6, num_heads=12, mlp_dim=1536, pooling="mean")
    params = nn.meta.unbox(tower.init(jax.random.PRNGKey(0), ids, mask))["params"]
    params["encoder"] = pretrained.bert_params_from_hf(path)
    hidden = np.asarray(tower.encoder.apply({"params": params["encoder"]}, ids, mask))
    ref = _numpy_bert(pretrained.read_tensors(path), ids, mask)
    m = mask.astype(bool)
    # float32 JAX vs float64 numpy, 6 post-LN layers: agree to 1e-4 on every real token.
    np.testing.assert_allclose(hidden[m], ref[m], atol=1e-4, rtol=0)
    # The sentence embedding sentence-transformers defines (mean pool, L2 norm), and the CLS vector.
    pooled = lambda h: (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    ours = pooled(hidden) / np.linalg.norm(pooled(hidden), axis=-1, keepdims=True)
    want = pooled(ref) / np.linalg.norm(pooled(ref), axis=-1, keepdims=True)
    np.testing.assert_allclose(ours, want, atol=1e-5)
    np.testing.assert_allclose(hidden[:, 0], ref[:, 0], atol=1e-4)
    # The tower's projection makes the [B, 128] MuLan embedding.
    assert tower.apply({"params": params}, ids, mask).shape == (len(SENTENCES), 128)


def test_minilm_loads_into_a_scanned_tower(minilm):
    """The per-layer checkpoint stacked into `layers` (layers/scan.py): the same hidden states as
    the unrolled tower, and a checkpoint with another depth named by its layer counts."""
    path, ids, mask = minilm
    loaded = pretrained.bert_params_from_hf(path)
    hidden = {}
    for scan_layers in (False, True):
        tower = bert_tower(hidden=384, num_layers=6, num_heads=12, mlp_dim=1536, scan_layers=scan_layers)
        params = nn.meta.unbox(jax.eval_shape(lambda: tower.init(jax.random.PRNGKey(0), ids, mask)))["params"]
        sh = jax.tree.map(lambda x: jax.sharding.SingleDeviceSharding(jax.devices()[0]), params)
        enc = layers_pretrained.place(loaded, params["encoder"], sh["encoder"], what="text_checkpoint")
        assert ("layers" in enc) == scan_layers
        hidden[scan_layers] = np.asarray(jax.jit(tower.encoder.apply)({"params": enc}, ids, mask))
    m = mask.astype(bool)
    np.testing.assert_allclose(hidden[True][m], hidden[False][m], atol=2e-5, rtol=0)
    shallow = bert_tower(hidden=384, num_layers=4, num_heads=12, mlp_dim=1536, scan_layers=True)
    params = nn.meta.unbox(jax.eval_shape(lambda: shallow.init(jax.random.PRNGKey(0), ids, mask)))["params"]
    sh = jax.tree.map(lambda x: jax.sharding.SingleDeviceSharding(jax.devices()[0]), params)
    with pytest.raises(layers_pretrained.CheckpointMismatchError, match="4 transformer layers in the model but 6"):
        layers_pretrained.place(loaded, params["encoder"], sh["encoder"], what="text_checkpoint")


def test_checkpoint_from_another_config_names_the_parameter(minilm):
    path, ids, mask = minilm
    loaded = pretrained.bert_params_from_hf(path)
    for kwargs, match in [(dict(hidden=384, num_layers=4, num_heads=12, mlp_dim=1536), "layer_4"),
                          (dict(hidden=384, num_layers=6, num_heads=12, mlp_dim=1024), r"layer_0/mlp_in/(bias|kernel) has shape \((384, )?1024,?\)")]:
        tower = bert_tower(**kwargs)
        boxed = tower.init(jax.random.PRNGKey(0), ids, mask)
        params = nn.meta.unbox(boxed)["params"]
        sh = jax.tree.map(lambda x: jax.sharding.SingleDeviceSharding(jax.devices()[0]), params)
        with pytest.raises(layers_pretrained.CheckpointMismatchError, match=match):
            layers_pretrained.place(loaded, params["encoder"], sh["encoder"], what="text_checkpoint")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        pretrained.read_tensors(os.path.dirname(path))


def test_text_longer_than_positions_is_a_clear_error():
    tower = bert_tower(hidden=32, num_layers=1, num_heads=2, mlp_dim=64, max_positions=8)
    with pytest.raises(ValueError, match="max_positions=8"):
        tower.init(jax.random.PRNGKey(0), np.zeros((1, 16), np.int32), np.ones((1, 16), np.int32))
