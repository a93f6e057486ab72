"""Precomputed T5 embeddings (data/text_embeddings.py, `python -m noise2music.embed_texts`), in one
test so the store is built once: the binary stores every text the tiny generator's task can draw;
a batch read through the store brings the encoder's output on the batch's own tokens and gives the
loss of T5 run in the step; a store made by another encoder or vocabulary, a text missing from
it, or one tokenized otherwise is refused, naming the store."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import helpers

TEXT_LENGTH = 24


def _setup(corpus_dir, store=None):
    import gin

    from trainer import flags

    gin.clear_config()
    flags.parse_and_apply(["--gin_file=noise2music/tiny_generator.gin", f"--gin.CORPUS_DIR='{corpus_dir}'",
                           f"--gin.TEXT_LENGTH={TEXT_LENGTH}", "--gin.BATCH_SIZE=8", "--model_dir=/tmp/unused"]
                          + ([f"--gin.TEXT_EMBEDDINGS='{store}'"] if store else []), "")
    return flags.bound("train.model"), flags.bound("train.train_data")


def _batch(data):
    from trainer.input_pipeline import DataLayout

    return next(data.make_iterator(DataLayout(8, 8, 0, 1), seed=0))


def test_embed_texts_stores_the_tasks_texts_and_a_run_reads_them_or_refuses_them(tiny_corpus, tmp_path):
    import tensorflow as tf

    from data import tasks, text_embeddings
    from trainer.input_pipeline import DataLayout
    from trainer.partitioning import Partitioner
    from trainer.train_state import abstract_state

    corpus_dir, store = tiny_corpus[0], str(tmp_path / "store")
    p = subprocess.run([sys.executable, "-m", "noise2music.embed_texts", "--gin_file=noise2music/tiny_generator.gin",
                        f"--gin.CORPUS_DIR='{corpus_dir}'", f"--gin.TEXT_LENGTH={TEXT_LENGTH}", f"--out={store}"],
                       cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    result, s = helpers.last_json(p.stdout), text_embeddings.Store.open(store)
    assert result["texts"] == len(s.texts) > 10 and result["options_seen"] >= len(s.texts)
    assert s.embeddings.shape[1] == TEXT_LENGTH and s.manifest["task"] == "n2m_weak_text"

    # Every text the task can draw, on its own tokens.
    model_tok, data = _setup(corpus_dir)
    options = {e["text"].decode(): e["text_tokens"] for e in tasks.text_options(
        data.name, "train", {"audio": 160000, "text_tokens": TEXT_LENGTH}).as_numpy_iterator()}
    assert sorted(options) == s.texts
    for text, ids in zip(s.texts, s.tokens):
        np.testing.assert_array_equal(ids[:len(options[text])], options[text])

    # The encoder a fresh run starts with made it; a batch brings its rows; the loss is T5's in the step.
    factory = abstract_state(model_tok, Partitioner(), batch_size=8)
    params = factory.init(0).params
    model, data = _setup(corpus_dir, store)
    model.load_pretrained(params, factory.shardings.params)
    batch = _batch(data)
    emb = jax.jit(model.encode_text)(params, batch["text_tokens"], batch["text_mask"])
    np.testing.assert_allclose(batch["text_embeddings"], np.asarray(emb), rtol=1e-5, atol=1e-5)
    assert model.batch_spec(8)["text_embeddings"].shape == batch["text_embeddings"].shape
    rng = jax.random.PRNGKey(3)
    with_store, _ = jax.jit(model.loss)(params, batch, rng)
    tokens_only = {k: v for k, v in batch.items() if k != "text_embeddings"}
    in_step, _ = jax.jit(model_tok.loss)(params, tokens_only, rng)
    np.testing.assert_allclose(float(with_store), float(in_step), rtol=1e-5)

    # Another encoder, another vocabulary.
    other_t5 = {**params, "text_encoder": jax.tree.map(lambda x: x * 1.01, params["text_encoder"])}
    with pytest.raises(ValueError, match=f"{store} was built from other text-encoder parameters"):
        model.load_pretrained(other_t5, factory.shardings.params)
    other = tmp_path / "other_vocab"
    other.mkdir()
    for f in os.listdir(store):
        if f != "manifest.json":
            os.link(os.path.join(store, f), other / f)
    json.dump({**s.manifest, "vocabulary_sha256": "0" * 64}, open(other / "manifest.json", "w"))
    model, _ = _setup(corpus_dir, str(other))
    with pytest.raises(ValueError, match="was tokenized with"):
        model.load_pretrained(params, factory.shardings.params)

    # A text the store lacks, tokens that differ: the input pipeline stops, naming the store.
    half = str(tmp_path / "half")
    text_embeddings.write(half, s.texts[::2], s.tokens[::2], np.asarray(s.embeddings[::2]), s.manifest)
    it = _setup(corpus_dir, half)[1].make_iterator(DataLayout(8, 8, 0, 1), seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"not in the text-embedding store {half}"):
        for _ in range(20):
            next(it)
    shifted = str(tmp_path / "shifted")
    text_embeddings.write(shifted, s.texts, (s.tokens + 1) * (s.tokens > 0), np.asarray(s.embeddings), s.manifest)
    with pytest.raises(tf.errors.InvalidArgumentError, match="holds other tokens for this text"):
        _batch(_setup(corpus_dir, shifted)[1])
