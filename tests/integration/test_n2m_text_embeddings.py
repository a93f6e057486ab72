"""Precomputed T5 embeddings (data/text_embeddings.py, `python -m noise2music.embed_texts`): the
binary stores every text the tiny generator's task can draw, each row the encoder's output on the
task's own tokens; a batch of the task read through the store gives the loss of T5 run in the step;
a store made by another encoder, a text missing from it, or one tokenized otherwise is refused,
naming the store."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import helpers

TEXT_LENGTH = 24


def _bindings(corpus_dir, store=None):
    b = ["--gin_file=noise2music/tiny_generator.gin", f"--gin.CORPUS_DIR='{corpus_dir}'",
         f"--gin.TEXT_LENGTH={TEXT_LENGTH}", "--gin.BATCH_SIZE=8"]
    return b + ([f"--gin.TEXT_EMBEDDINGS='{store}'"] if store else [])


@pytest.fixture(scope="module")
def store(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5_texts") / "store"
    p = subprocess.run([sys.executable, "-m", "noise2music.embed_texts", *_bindings(tiny_corpus[0]), f"--out={out}"],
                       cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return helpers.last_json(p.stdout), str(out)


def _setup(corpus_dir, store_dir=None):
    import gin

    from trainer import flags

    gin.clear_config()
    flags.parse_and_apply(_bindings(corpus_dir, store_dir) + ["--model_dir=/tmp/unused"], "")
    return flags.bound("train.model"), flags


def _params(model, seed=0):
    from trainer.partitioning import Partitioner
    from trainer.train_state import abstract_state

    p = Partitioner()
    factory = abstract_state(model, p, batch_size=8)
    return factory.init(seed).params, factory.shardings.params, p


def test_the_store_holds_every_option_with_the_encoders_output_on_the_tasks_tokens(store, tiny_corpus):
    from data import tasks, text_embeddings

    result, path = store
    s = text_embeddings.Store.open(path)
    assert result["texts"] == len(s.texts) > 10 and result["options_seen"] >= len(s.texts)
    assert s.embeddings.shape[1] == TEXT_LENGTH and s.manifest["task"] == "n2m_weak_text"
    model, flags = _setup(tiny_corpus[0])
    flags.bound("train.train_data")       # registers the task
    options = {e["text"].decode(): e["text_tokens"] for e in tasks.text_options(
        "n2m_weak_text", "train", {"audio": 160000, "text_tokens": TEXT_LENGTH}).as_numpy_iterator()}
    assert sorted(options) == s.texts
    params, _, _ = _params(model)
    rows = [0, len(s.texts) // 2, len(s.texts) - 1]
    ids = s.tokens[rows]
    mask = (np.arange(TEXT_LENGTH)[None] < np.array([len(options[s.texts[r]]) for r in rows])[:, None])
    for r, i in zip(rows, ids):
        np.testing.assert_array_equal(i[:len(options[s.texts[r]])], options[s.texts[r]])
    want = np.asarray(jax.jit(model.encode_text)(params, ids, mask.astype(np.int32)))
    np.testing.assert_allclose(np.asarray(s.embeddings[rows]), want, rtol=1e-5, atol=1e-5)


def test_a_batch_read_through_the_store_gives_the_loss_of_t5_in_the_step(store, tiny_corpus):
    model_tok, _ = _setup(tiny_corpus[0])
    params, shardings, _ = _params(model_tok)
    model, flags = _setup(tiny_corpus[0], store[1])
    assert model.load_pretrained(params, shardings) is not None        # this encoder made the store
    data = flags.bound("train.train_data")
    from trainer.input_pipeline import DataLayout

    batch = next(data.make_iterator(DataLayout(8, 8, 0, 1), seed=0))
    assert batch["text_embeddings"].shape == (8, TEXT_LENGTH, model.net.text.d_model)
    rng = jax.random.PRNGKey(3)
    with_store, _ = jax.jit(model.loss)(params, batch, rng)
    in_step, _ = jax.jit(model_tok.loss)(params, {k: v for k, v in batch.items() if k != "text_embeddings"}, rng)
    np.testing.assert_allclose(float(with_store), float(in_step), rtol=1e-5)
    assert model.batch_spec(8)["text_embeddings"].shape == (8, TEXT_LENGTH, model.net.text.d_model)


def test_a_store_of_another_encoder_or_vocabulary_is_refused(store, tiny_corpus, tmp_path):
    model, _ = _setup(tiny_corpus[0], store[1])
    params, shardings, _ = _params(model, seed=1)
    with pytest.raises(ValueError, match=f"{store[1]} was built from other text-encoder parameters"):
        model.load_pretrained(params, shardings)
    other = tmp_path / "other"
    other.mkdir()
    for f in os.listdir(store[1]):
        os.link(os.path.join(store[1], f), other / f) if f != "manifest.json" else None
    man = json.load(open(os.path.join(store[1], "manifest.json")))
    json.dump({**man, "vocabulary_sha256": "0" * 64}, open(other / "manifest.json", "w"))
    model, _ = _setup(tiny_corpus[0], str(other))
    with pytest.raises(ValueError, match="was tokenized with"):
        model.load_pretrained(*_params(model)[:2])


def test_a_text_missing_from_the_store_or_tokenized_otherwise_stops_the_pipeline(store, tiny_corpus, tmp_path):
    import tensorflow as tf

    from data import text_embeddings

    s = text_embeddings.Store.open(store[1])
    half = tmp_path / "half"
    text_embeddings.write(str(half), s.texts[::2], s.tokens[::2], np.asarray(s.embeddings[::2]), s.manifest)
    model, flags = _setup(tiny_corpus[0], str(half))
    from trainer.input_pipeline import DataLayout

    it = flags.bound("train.train_data").make_iterator(DataLayout(8, 8, 0, 1), seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"not in the text-embedding store {half}"):
        for _ in range(20):
            next(it)
    shifted = tmp_path / "shifted"
    text_embeddings.write(str(shifted), s.texts, (s.tokens + 1) * (s.tokens > 0), np.asarray(s.embeddings),
                          s.manifest)
    model, flags = _setup(tiny_corpus[0], str(shifted))
    it = flags.bound("train.train_data").make_iterator(DataLayout(8, 8, 0, 1), seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="holds other tokens for this text"):
        next(it)
