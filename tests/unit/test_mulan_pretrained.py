"""Pretrained audio-tower converters: HF AST and torchvision ResNet layouts land in our towers so
the converted towers compute what the source models compute (checked on the layers whose layout
the converter changes; the shared encoder-layer mapping is checked against MiniLM in
test_mulan_text.py)."""
import flax.linen as nn
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from mulan import pretrained
from layers import pretrained as layers_pretrained
from mulan.audio_towers import Norm, PatchEmbed, ast_tower, conv, resnet_tower


def _hf_ast_state(rng, dim=32, heads=2, layers=1, nf=4, nt=6, mlp=128):
    r = lambda *s: rng.normal(size=s).astype(np.float32) * 0.05
    p = "audio_spectrogram_transformer."
    st = {p + "embeddings.cls_token": r(1, 1, dim), p + "embeddings.distillation_token": r(1, 1, dim),
          p + "embeddings.position_embeddings": r(1, 2 + nf * nt, dim),
          p + "embeddings.patch_embeddings.projection.weight": r(dim, 1, 16, 16),
          p + "embeddings.patch_embeddings.projection.bias": r(dim),
          p + "layernorm.weight": 1 + r(dim), p + "layernorm.bias": r(dim)}
    for i in range(layers):
        q = f"{p}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            st[q + f"attention.attention.{n}.weight"], st[q + f"attention.attention.{n}.bias"] = r(dim, dim), r(dim)
        st[q + "attention.output.dense.weight"], st[q + "attention.output.dense.bias"] = r(dim, dim), r(dim)
        st[q + "intermediate.dense.weight"], st[q + "intermediate.dense.bias"] = r(mlp, dim), r(mlp)
        st[q + "output.dense.weight"], st[q + "output.dense.bias"] = r(dim, mlp), r(dim)
        for n in ("layernorm_before", "layernorm_after"):
            st[q + n + ".weight"], st[q + n + ".bias"] = 1 + r(dim), r(dim)
    return st


def test_ast_from_hf_matches_hf_patch_layout(tmp_path):
    rng = np.random.default_rng(0)
    st = _hf_ast_state(rng)
    path = str(tmp_path / "ast.safetensors")
    save_file(st, path)
    params = pretrained.ast_params_from_hf(path, num_heads=2, src_grid=(6, 4))
    tower = ast_tower(dim=32, depth=1, num_heads=2, mlp_ratio=4, stride=(16, 16))
    feats = rng.normal(size=(2, 96, 64)).astype(np.float32)  # [B, T frames, F mels]
    template = nn.meta.unbox(tower.init(jax.random.PRNGKey(0), feats))["params"]
    params["projection"] = template["projection"]
    sh = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), template)
    placed = layers_pretrained.place(params, template, sh, what="audio_checkpoint")
    # HF: input [B, T, F] -> [B, 1, F, T], conv (OIHW), flatten -> patch index f * nt + t, + pos[2:].
    p = "audio_spectrogram_transformer.embeddings."
    x = np.transpose(feats, (0, 2, 1))[:, None]
    w, bias = st[p + "patch_embeddings.projection.weight"], st[p + "patch_embeddings.projection.bias"]
    hf = np.einsum("bcfitj,dcij->bdft", x.reshape(2, 1, 4, 16, 6, 16), w) + bias[None, :, None, None]
    hf = hf.reshape(2, 32, 24).transpose(0, 2, 1) + st[p + "position_embeddings"][0, 2:]
    # Ours: patches in (time, mel) order, + our pos[1:].
    ours = PatchEmbed(32, (16, 16), (16, 16)).apply({"params": placed["patch_embed"]}, feats)
    ours = np.asarray(ours) + np.asarray(placed["pos_embedding"])[1:]
    order = [f * 6 + t for t in range(6) for f in range(4)]  # ours[t * nf + f] == hf[f * nt + t]
    np.testing.assert_allclose(ours, hf[:, order], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(placed["cls_token"], st[p + "cls_token"].reshape(-1))
    assert tower.apply({"params": placed}, feats).shape == (2, 128)
    # A different target grid resizes the positional embeddings; a wrong source grid is named.
    resized = pretrained.ast_params_from_hf(path, 2, (6, 4), dst_grid=(12, 4))
    assert resized["pos_embedding"].shape == (1 + 48, 32)
    with pytest.raises(layers_pretrained.CheckpointMismatchError, match="not the 7 x 4 grid"):
        pretrained.ast_params_from_hf(path, 2, (7, 4))


def test_resnet_from_torchvision_folds_batchnorm_and_matches_torch_conv(tmp_path):
    rng = np.random.default_rng(1)
    tower = resnet_tower(stage_sizes=(1, 1), width=8, norm="affine")
    feats = rng.normal(size=(2, 40, 24)).astype(np.float32)
    template = nn.meta.unbox(tower.init(jax.random.PRNGKey(0), feats))["params"]
    # A torchvision-named state dict with the same shapes (3-channel stem, BatchNorm statistics).
    st = {}
    def bn(name, c):
        st[name + ".weight"], st[name + ".bias"] = 1 + 0.1 * rng.normal(size=c), 0.1 * rng.normal(size=c)
        st[name + ".running_mean"], st[name + ".running_var"] = 0.1 * rng.normal(size=c), 1 + rng.random(c)
    st["conv1.weight"] = rng.normal(size=(8, 3, 7, 7)) * 0.1
    bn("bn1", 8)
    cin = 8
    for stage, width in ((1, 8), (2, 16)):
        p = f"layer{stage}.0"
        for k, (o, i, ks) in enumerate([(width, cin, 1), (width, width, 3), (4 * width, width, 1)], 1):
            st[f"{p}.conv{k}.weight"] = rng.normal(size=(o, i, ks, ks)) * 0.1
            bn(f"{p}.bn{k}", o)
        st[f"{p}.downsample.0.weight"] = rng.normal(size=(4 * width, cin, 1, 1)) * 0.1
        bn(f"{p}.downsample.1", 4 * width)
        cin = 4 * width
    st = {k: np.asarray(v, np.float32) for k, v in st.items()}
    path = str(tmp_path / "resnet.safetensors")
    save_file(st, path)
    params = pretrained.resnet_params_from_torch(path)
    params["projection"] = template["projection"]
    sh = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), template)
    placed = layers_pretrained.place(params, template, sh, what="audio_checkpoint")
    # The stem as torch computes it: NCHW conv, padding 3, stride 2, the image's 3 channels all
    # equal to the log-mel, then inference BatchNorm.
    img = np.repeat(feats[:, None], 3, axis=1)
    ref = jax.lax.conv_general_dilated(img, st["conv1.weight"], (2, 2), [(3, 3), (3, 3)],
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"))
    g, b, m, v = (st["bn1." + k] for k in ("weight", "bias", "running_mean", "running_var"))
    ref = (np.asarray(ref) - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]

    class Stem(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = conv(8, (7, 7), (2, 2), "stem", np.float32)(x[..., None])
            return Norm("affine", name="stem_norm")(y)

    ours = Stem().apply({"params": {"stem": placed["stem"], "stem_norm": placed["stem_norm"]}}, feats)
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), ref, rtol=1e-4, atol=1e-4)
    assert tower.apply({"params": placed}, feats).shape == (2, 128)
    # Loading into a GroupNorm tower still fits by shape, but a deeper one names what is missing.
    deeper = resnet_tower(stage_sizes=(2, 1), width=8, norm="affine")
    tmpl2 = nn.meta.unbox(deeper.init(jax.random.PRNGKey(0), feats))["params"]
    sh2 = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), tmpl2)
    with pytest.raises(layers_pretrained.CheckpointMismatchError, match="stage1_block1"):
        layers_pretrained.place(params, tmpl2, sh2, what="audio_checkpoint")


def test_convert_cli_round_trips_through_a_file(tmp_path):
    rng = np.random.default_rng(2)
    src = str(tmp_path / "ast.safetensors")
    save_file(_hf_ast_state(rng), src)
    out = str(tmp_path / "audio.safetensors")
    from mulan import convert

    res = convert.main(["ast", "--src", src, "--out", out, "--num_heads", "2", "--src_grid", "6,4"])
    assert res["num_params"] > 0
    tree = pretrained.load_tree(out)
    assert tree["layer_0"]["attention"]["query_kernel"].shape == (32, 2, 16)
