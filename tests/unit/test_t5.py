"""The Flax T5 v1.1 encoder against a float64 numpy T5 written from HF's definitions, through
the HF-name converter; relative-position buckets; checkpoint errors name the tensor."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noise2music.t5 import T5CheckpointError, T5Config, T5Encoder, load_hf_t5, relative_position_bucket
from tests.t5_reference import bucket_ref, hf_state, reference

CFG = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_heads=3, num_layers=2)


def test_relative_position_buckets_match_t5():
    rel = np.arange(-300, 301)
    got = np.asarray(relative_position_bucket(jnp.asarray(rel)))
    np.testing.assert_array_equal(got, [bucket_ref(int(r)) for r in rel])


@pytest.mark.parametrize("scan_layers", [False, True])
def test_encoder_matches_a_numpy_t5_through_the_hf_converter(scan_layers):
    """Unrolled (`layer_{i}`) or scanned (`layers`, T5-XL's setting), the same embeddings."""
    import dataclasses

    from flax import linen as nn

    cfg = dataclasses.replace(CFG, scan_layers=scan_layers)
    state = hf_state(cfg)
    params = load_hf_t5(state, cfg)
    ids = np.array([[5, 9, 2, 41, 7, 0, 0], [3, 3, 1, 8, 20, 11, 4]])
    mask = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    got = T5Encoder(cfg).apply({"params": jax.tree.map(jnp.asarray, params)}, jnp.asarray(ids), jnp.asarray(mask))
    want = reference(state, cfg, ids, mask)
    np.testing.assert_allclose(np.asarray(got)[mask > 0], want[mask > 0], rtol=2e-4, atol=2e-4)
    # the converted tree is exactly the module's parameter tree
    init = jax.eval_shape(lambda: T5Encoder(cfg).init(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask)))
    assert jax.tree.structure(nn.meta.unbox(init)["params"]) == jax.tree.structure(params)
    assert ("layers" in params) == scan_layers and params.get("layers", params.get("layer_0"))["q"].shape[-3:] == (
        16, 3, 4)


def test_checkpoint_of_another_size_names_the_tensor():
    state = hf_state(CFG)
    with pytest.raises(T5CheckpointError, match="final_layer_norm.weight has shape"):
        load_hf_t5(dict(state, **{"encoder.final_layer_norm.weight": np.ones(8, np.float32)}), CFG)
    del state["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    with pytest.raises(T5CheckpointError, match="block.1.layer.1.DenseReluDense.wo.weight"):
        load_hf_t5(state, CFG)
    assert T5Config.v1_1("xl").d_model == 2048


def test_loads_a_safetensors_folder(tmp_path):
    from safetensors.numpy import save_file

    state = hf_state(CFG, seed=3)
    save_file(state, str(tmp_path / "model.safetensors"))
    a = load_hf_t5(str(tmp_path), CFG)
    b = load_hf_t5(state, CFG)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(T5CheckpointError, match="no such file"):
        load_hf_t5(str(tmp_path / "nowhere"), CFG)


def test_a_checkpoint_of_another_vocabulary_is_refused(tmp_path):
    """The SentencePiece model beside the checkpoint, or the embedding's size, must match the tokens'."""
    import sentencepiece as spm
    from safetensors.numpy import save_file

    from data.vocab import T5SentencePieceVocabulary

    texts = ["a slow piano ballad", "fast drums and bass", "strings over a choir"] * 5
    for name, extra in (("ours", ""), ("theirs", " with brass")):
        spm.SentencePieceTrainer.train(sentence_iterator=iter([t + extra for t in texts]), vocab_size=40,
                                       model_prefix=str(tmp_path / name), model_type="unigram", pad_id=0, eos_id=1,
                                       unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    ours = T5SentencePieceVocabulary(str(tmp_path / "ours.model"))
    cfg = T5Config(vocab_size=ours.vocab_size, d_model=16, d_kv=4, d_ff=24, num_heads=3, num_layers=2)
    folder = tmp_path / "t5"
    folder.mkdir()
    save_file(hf_state(cfg), str(folder / "model.safetensors"))
    assert load_hf_t5(str(folder), cfg, ours)["embedding"].shape == (ours.vocab_size, 16)
    (folder / "spiece.model").write_bytes((tmp_path / "theirs.model").read_bytes())
    with pytest.raises(T5CheckpointError, match=r"spiece.model, but the text is tokenized with .*ours.model"):
        load_hf_t5(str(folder), cfg, ours)
    big = T5Config(**{**cfg.__dict__, "vocab_size": 32128})
    with pytest.raises(T5CheckpointError, match=rf"32128 token embeddings, but .*ours.model\) has {ours.vocab_size}"):
        load_hf_t5(hf_state(big), big, ours)
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model' is not a SentencePiece model"):
        T5SentencePieceVocabulary(str(tmp_path / "junk.model")).vocab_size
    with pytest.raises(FileNotFoundError, match="T5SentencePieceVocabulary.path = .*nowhere.model': no such file"):
        T5SentencePieceVocabulary(str(tmp_path / "nowhere.model")).encode("piano")
