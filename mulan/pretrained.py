"""Externally pretrained checkpoints -> MuLan tower parameters (and `python -m mulan.convert`).

    tree = bert_params_from_hf(folder)                     # HF BERT names -> the text encoder's tree
    params = layers.pretrained.place(tree, template, shardings, what=...)   # checked, put on device

BERT folders are used directly by `MulanModel.text_checkpoint` (no conversion step needed); audio
checkpoints are converted once with `python -m mulan.convert ast|resnet` and named by
`MulanModel.audio_checkpoint`.  Sources are `.safetensors` or `.npz` files of named tensors:

* BERT: HF `BertModel` / `BertFor*` names (`embeddings.word_embeddings.weight`,
  `encoder.layer.N.attention.self.query.weight`, ...; a `bert.` prefix is accepted).
* AST: HF `ASTModel` / `ASTForAudioClassification` names (`audio_spectrogram_transformer.` prefix
  accepted).  The distillation token is dropped (we pool [CLS] only); positional embeddings are
  reordered to our (time, mel) patch order and bilinearly resized when `--grid` differs from the
  checkpoint's.  The HF AST input is [time, mel] like ours.
* ResNet: torchvision `resnet50` names (`conv1.weight`, `bn1.*`, `layerI.J.convK.weight`,
  `layerI.J.downsample.{0,1}.*`).  BatchNorm statistics are folded into a per-channel affine, so
  the tower must use `resnet_tower.norm = 'affine'`; a 3-channel stem is summed to one channel.

The output file holds flat `module/.../param` keys; `load_tree` reads it back.  Every mismatch
names the parameter, the shape the model expects and the shape the checkpoint has.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from layers.pretrained import CheckpointMismatchError


# -- reading ------------------------------------------------------------------

def read_tensors(path: str) -> dict[str, np.ndarray]:
    """A `.safetensors` / `.npz` file, or an HF folder holding `model.safetensors`."""
    if os.path.isdir(path):
        cand = os.path.join(path, "model.safetensors")
        if not os.path.exists(cand):
            raise FileNotFoundError(f"{path}: no model.safetensors in this folder (an HF checkpoint folder is expected).")
        path = cand
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:  # safetensors raises several types for a corrupt header.
        raise CheckpointMismatchError(f"{path}: not a readable safetensors file ({e}).") from e


def _strip(state: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def _take(state: dict, key: str, src: str) -> np.ndarray:
    if key not in state:
        raise CheckpointMismatchError(f"{src}: missing tensor {key!r}.")
    return np.asarray(state[key], np.float32)


def _ln(state, prefix, src):
    return {"scale": _take(state, prefix + ".weight", src), "bias": _take(state, prefix + ".bias", src)}


def _attention(state, prefix, out_prefix, heads, src) -> dict:
    out = {}
    for name in ("query", "key", "value"):
        w = _take(state, f"{prefix}.{name}.weight", src)  # [heads*head_dim, embed] (torch: out x in)
        e = w.shape[1]
        if w.shape[0] % heads:
            raise CheckpointMismatchError(f"{src}: {prefix}.{name}.weight {w.shape} is not divisible by {heads} heads.")
        out[f"{name}_kernel"] = w.T.reshape(e, heads, -1)
        out[f"{name}_bias"] = _take(state, f"{prefix}.{name}.bias", src).reshape(heads, -1)
    w = _take(state, f"{out_prefix}.weight", src)  # [embed, heads*head_dim]
    out["out_kernel"] = w.T.reshape(heads, -1, w.shape[0])
    out["out_bias"] = _take(state, f"{out_prefix}.bias", src)
    return out


def _dense(state, prefix, src):
    return {"kernel": _take(state, prefix + ".weight", src).T, "bias": _take(state, prefix + ".bias", src)}


def _encoder_layers(state, num_heads, src, *, attn: str, ln_attn: str, ln_mlp: str) -> dict[str, Any]:
    """HF `encoder.layer.N.*` -> our `layer_N` (`TransformerBlock`) params.  BERT and AST share the
    attention-output / intermediate / output names and differ in the sub-module names given."""
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    out = {}
    for i in layers:
        p = f"encoder.layer.{i}"
        out[f"layer_{i}"] = {
            "attention": _attention(state, f"{p}.{attn}", f"{p}.attention.output.dense", num_heads, src),
            "ln_attn": _ln(state, f"{p}.{ln_attn}", src),
            "mlp_in": _dense(state, f"{p}.intermediate.dense", src),
            "mlp_out": _dense(state, f"{p}.output.dense", src),
            "ln_mlp": _ln(state, f"{p}.{ln_mlp}", src),
        }
    return out


# -- BERT -----------------------------------------------------------------------

def bert_params_from_hf(path: str, num_heads: int | None = None) -> dict[str, Any]:
    """HF BERT checkpoint -> `BertEncoder` params (numpy).  Heads come from config.json when present."""
    state = _strip(read_tensors(path), ("bert.", "model."))
    cfg_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), "config.json")
    if num_heads is None:
        if not os.path.exists(cfg_path):
            raise CheckpointMismatchError(f"{path}: no config.json beside it; pass num_heads.")
        with open(cfg_path, encoding="utf-8") as f:
            num_heads = int(json.load(f)["num_attention_heads"])
    params: dict[str, Any] = {
        "word_embeddings": _take(state, "embeddings.word_embeddings.weight", path),
        "position_embeddings": _take(state, "embeddings.position_embeddings.weight", path),
        "token_type_embeddings": _take(state, "embeddings.token_type_embeddings.weight", path),
        "ln_embed": _ln(state, "embeddings.LayerNorm", path),
    }
    params.update(_encoder_layers(state, num_heads, path, attn="attention.self",
                                  ln_attn="attention.output.LayerNorm", ln_mlp="output.LayerNorm"))
    return params


# -- AST ------------------------------------------------------------------------

def _resize_grid(pos: np.ndarray, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> np.ndarray:
    """[nt*nf, D] in (time, mel) order -> bilinearly resized to dst_grid."""
    if tuple(src_grid) == tuple(dst_grid):
        return pos
    import jax

    g = pos.reshape(*src_grid, -1)
    return np.asarray(jax.image.resize(g, (*dst_grid, g.shape[-1]), "bilinear")).reshape(-1, g.shape[-1])


def ast_params_from_hf(path: str, num_heads: int, src_grid: tuple[int, int],
                       dst_grid: tuple[int, int] | None = None) -> dict[str, Any]:
    """HF AST -> `ASTTower` params minus the projection.  Grids are (time patches, mel patches)."""
    state = _strip(read_tensors(path), ("audio_spectrogram_transformer.",))
    w = _take(state, "embeddings.patch_embeddings.projection.weight", path)  # [D, 1, kf, kt] over [mel, time]
    pos = _take(state, "embeddings.position_embeddings", path)[0]            # [2 + nf*nt, D], (mel, time) order
    nt, nf = src_grid
    if pos.shape[0] != 2 + nt * nf:
        raise CheckpointMismatchError(f"{path}: position_embeddings has {pos.shape[0] - 2} patches, "
                                      f"not the {nt} x {nf} grid given.")
    grid_pos = pos[2:].reshape(nf, nt, -1).transpose(1, 0, 2).reshape(nt * nf, -1)
    grid_pos = _resize_grid(grid_pos, src_grid, dst_grid or src_grid)
    params: dict[str, Any] = {
        "patch_embed": {"kernel": w.transpose(3, 2, 1, 0),
                        "bias": _take(state, "embeddings.patch_embeddings.projection.bias", path)},
        "cls_token": _take(state, "embeddings.cls_token", path).reshape(-1),
        "pos_embedding": np.concatenate([pos[:1], grid_pos], axis=0),
        "ln_out": _ln(state, "layernorm", path),
    }
    params.update(_encoder_layers(state, num_heads, path, attn="attention.attention",
                                  ln_attn="layernorm_before", ln_mlp="layernorm_after"))
    return params


# -- ResNet ---------------------------------------------------------------------

def _conv(state, key, src):
    w = _take(state, key, src)  # [out, in, kh, kw]
    return {"kernel": w.transpose(2, 3, 1, 0)}


def _folded_bn(state, prefix, src, eps=1e-5):
    gamma, beta = _take(state, prefix + ".weight", src), _take(state, prefix + ".bias", src)
    mean, var = _take(state, prefix + ".running_mean", src), _take(state, prefix + ".running_var", src)
    scale = gamma / np.sqrt(var + eps)
    return {"scale": scale, "bias": beta - mean * scale}


def resnet_params_from_torch(path: str) -> dict[str, Any]:
    """torchvision ResNet (bottleneck) -> `ResNetTower(norm='affine')` params minus the projection."""
    state = read_tensors(path)
    stem = _conv(state, "conv1.weight", path)
    stem["kernel"] = stem["kernel"].sum(axis=2, keepdims=True)  # RGB -> one log-mel channel
    params: dict[str, Any] = {"stem": stem, "stem_norm": _folded_bn(state, "bn1", path)}
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in state
                     if (m := re.match(r"layer(\d+)\.(\d+)\.", k))})
    for stage, j in blocks:
        p = f"layer{stage}.{j}"
        b = {f"conv{k}": _conv(state, f"{p}.conv{k}.weight", path) for k in (1, 2, 3)}
        b.update({f"norm{k}": _folded_bn(state, f"{p}.bn{k}", path) for k in (1, 2, 3)})
        if f"{p}.downsample.0.weight" in state:
            b["shortcut"] = _conv(state, f"{p}.downsample.0.weight", path)
            b["shortcut_norm"] = _folded_bn(state, f"{p}.downsample.1", path)
        params[f"stage{stage}_block{j}"] = b
    return params


# -- trees and files ------------------------------------------------------

def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def save_tree(tree: dict, path: str) -> None:
    from safetensors.numpy import save_file

    tmp = path + ".tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in flatten(tree).items()}, tmp)
    os.replace(tmp, path)


def load_tree(path: str) -> dict:
    return unflatten(read_tensors(path))
