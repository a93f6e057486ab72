"""The Noise2Music text path with T5's own tokens: the tiny corpus's SentencePiece model (trained
on its text by the corpus build), the text stage's task tokenizing with it, and an HF-named T5
checkpoint loaded by `Noise2MusicModel.text_checkpoint` giving the embeddings of a float64 numpy
T5 (tests/t5_reference.py) on the ids the `sentencepiece` library gives the same texts."""
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import seqio

from tests.t5_reference import hf_state, reference


@pytest.fixture
def t5_stage(tiny_corpus, tmp_path):
    """(model, the task's examples, the HF T5 state, its config) for the tiny generator config with
    the corpus's SentencePiece vocabulary and a random HF T5 saved beside a copy of that model."""
    import dataclasses

    from safetensors.numpy import save_file

    from trainer import flags

    corpus_dir = tiny_corpus[0]
    flags.parse_and_apply(["--gin_file=noise2music/tiny_generator.gin", f"--gin.CORPUS_DIR='{corpus_dir}'",
                           "--gin.TEXT_LENGTH=24", "--model_dir=/tmp/unused"], "")
    vocab = flags.bound("Noise2MusicModel.vocabulary")
    assert vocab.sentencepiece_model_file == os.path.join(corpus_dir, "spiece.model")
    rows = -(-vocab.vocab_size // 128) * 128     # T5's padding of the embedding
    cfg = dataclasses.replace(flags.bound("Noise2MusicModel.text_encoder"), vocab_size=rows)
    folder = tmp_path / "t5"
    folder.mkdir()
    state = hf_state(cfg, seed=1)
    save_file(state, str(folder / "model.safetensors"))
    shutil.copy(vocab.sentencepiece_model_file, folder / "spiece.model")
    flags.parse_and_apply(["--gin_file=noise2music/tiny_generator.gin", f"--gin.CORPUS_DIR='{corpus_dir}'",
                           "--gin.TEXT_LENGTH=24", f"--gin.T5Config.vocab_size={rows}",
                           f"--gin.Noise2MusicModel.text_checkpoint='{folder}'", "--model_dir=/tmp/unused"], "")
    task = flags.bound("SeqioData.mixture_or_task_name")
    ds = seqio.get_mixture_or_task(task).get_dataset({"audio": 16000, "text_tokens": 24}, split="train",
                                                     shuffle=False)
    examples = list(ds.take(6).as_numpy_iterator())
    return flags.bound("train.model"), examples, state, cfg, folder


def test_a_hf_t5_checkpoint_gives_the_reference_embeddings_on_sentencepiece_ids(t5_stage):
    import sentencepiece as spm

    model, examples, state, cfg, folder = t5_stage
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    texts = [e["text"].decode() for e in examples]
    ids = np.zeros((len(texts), 24), np.int32)
    mask = np.zeros_like(ids)
    for i, (text, e) in enumerate(zip(texts, examples)):
        want = sp.encode(text)[:23] + [1]                 # pieces, then T5's EOS; no [CLS]
        np.testing.assert_array_equal(e["text_tokens"], want, err_msg=text)
        ids[i, :len(want)], mask[i, :len(want)] = want, 1
    assert any(len(t.split()) > 1 for t in texts) and (ids > 2).any()

    batch = model.dummy_batch(len(texts))
    params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(0), batch))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = model.load_pretrained(params, jax.tree.map(lambda _: sharding, params))
    got = np.asarray(model.encode_text(params, ids, mask))
    want = reference(state, cfg, ids, mask)
    np.testing.assert_allclose(got[mask > 0], want[mask > 0], rtol=2e-4, atol=2e-4)

    # The prompt tokenizer of the sampler makes the same ids.
    from noise2music.cascade import tokenize

    toks, m = tokenize(model, texts)
    np.testing.assert_array_equal(toks, ids)
    np.testing.assert_array_equal(m, mask)
