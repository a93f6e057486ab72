"""The precomputed text-embedding store (data/text_embeddings.py) on its own: written whole and
replaced whole, read back memory-mapped, and a missing, damaged or mismatched store named."""
import os

import numpy as np
import pytest

from data import text_embeddings


def _write(path, n=5, length=6, width=4, **manifest):
    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(n)]
    tokens = rng.integers(3, 50, (n, length)).astype(np.int32)
    emb = rng.normal(size=(n, length, width)).astype(np.float32)
    return text_embeddings.write(str(path), texts, tokens, emb, manifest), texts, tokens, emb


def test_a_store_reads_back_what_was_written_and_a_rewrite_replaces_it_whole(tmp_path):
    path, texts, tokens, emb = _write(tmp_path / "s", fingerprint={"a": [1.0, 2.0]})
    s = text_embeddings.Store.open(path)
    assert s.texts == texts and s.manifest["count"] == 5 and s.manifest["d_model"] == 4
    np.testing.assert_array_equal(s.tokens, tokens)
    np.testing.assert_array_equal(s.embeddings, emb)
    _write(tmp_path / "s", n=3, dtype="float16")
    s = text_embeddings.Store.open(path)
    assert len(s.texts) == 3 and s.embeddings.dtype == np.float16
    assert sorted(os.listdir(tmp_path)) == ["s"]          # no temporary or old folder left


def test_a_missing_damaged_or_mismatched_store_is_named(tmp_path):
    with pytest.raises(ValueError, match="local"):
        text_embeddings.Store.open("gs://bucket/store")
    with pytest.raises(FileNotFoundError, match="noise2music.embed_texts"):
        text_embeddings.Store.open(str(tmp_path / "none"))
    path, *_ = _write(tmp_path / "s", fingerprint={"a": [1.0, 2.0]})
    s = text_embeddings.Store.open(path)
    with pytest.raises(ValueError, match="text_length=6, the model 8"):
        s.check(text_length=8, d_model=4, vocabulary_file=None)
    with pytest.raises(ValueError, match="other text-encoder parameters"):
        s.check(text_length=6, d_model=4, vocabulary_file=None, fingerprint={"a": [1.0, 2.5]})
    s.check(text_length=6, d_model=4, vocabulary_file=None, fingerprint={"a": [1.0, 2.0 + 1e-7]})
    with open(os.path.join(path, "embeddings.npy"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=f"{path}: the text-embedding store is unreadable"):
        text_embeddings.Store.open(path)
    with pytest.raises(ValueError, match="not distinct"):
        text_embeddings.write(str(tmp_path / "d"), ["a", "a"], np.zeros((2, 3)), np.zeros((2, 3, 2)), {})
    with pytest.raises(ValueError, match="not finite in float16"):
        text_embeddings.write(str(tmp_path / "f"), ["a"], np.zeros((1, 3)), np.full((1, 3, 2), 1e6), {"dtype": "float16"})
