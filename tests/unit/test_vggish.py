"""VGGish (music_eval/embedders/vggish.py): the converter reads a TF checkpoint written with the released
variable names, and the Flax network equals an independent TensorFlow graph of VGGish's layers on
the same weights (the released weights cannot be downloaded here)."""
import numpy as np
import pytest

from music_eval.embedders import base as embedders
from music_eval.embedders import vggish

SHAPES = {"vggish/conv1": (3, 3, 1, 64), "vggish/conv2": (3, 3, 64, 128), "vggish/conv3/conv3_1": (3, 3, 128, 256),
          "vggish/conv3/conv3_2": (3, 3, 256, 256), "vggish/conv4/conv4_1": (3, 3, 256, 512),
          "vggish/conv4/conv4_2": (3, 3, 512, 512), "vggish/fc1/fc1_1": (12288, 4096),
          "vggish/fc1/fc1_2": (4096, 4096), "vggish/fc2": (4096, 128)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    flat = {}
    for scope, shape in SHAPES.items():
        flat[f"{scope}/weights"] = rng.standard_normal(shape, dtype=np.float32) * np.float32(
            np.sqrt(2.0 / np.prod(shape[:-1])))
        flat[f"{scope}/biases"] = (0.01 * rng.standard_normal(shape[-1])).astype(np.float32)
    prefix = str(tmp_path_factory.mktemp("vggish") / "vggish_model.ckpt")
    with tf.Graph().as_default():
        # Variables fed through placeholders: 72M weights as graph constants take ~20 s to build.
        values = {**flat, "vggish/unrelated/slot": np.zeros(3, np.float32)}  # ignored names are fine
        feeds, assigns = {}, []
        for name, v in values.items():
            var = tf.compat.v1.get_variable(name, v.shape, tf.float32, tf.compat.v1.zeros_initializer())
            ph = tf.compat.v1.placeholder(tf.float32, v.shape)
            feeds[ph] = v
            assigns.append(var.assign(ph))
        with tf.compat.v1.Session() as sess:
            sess.run(assigns, feeds)
            tf.compat.v1.train.Saver().save(sess, prefix)
    return prefix, flat


def _tf_vggish(x, flat):
    """VGGish's layers written directly in TF ops (NHWC), from the released variable names."""
    import tensorflow as tf

    h = tf.constant(x[..., None])
    for block in (["vggish/conv1"], ["vggish/conv2"], ["vggish/conv3/conv3_1", "vggish/conv3/conv3_2"],
                  ["vggish/conv4/conv4_1", "vggish/conv4/conv4_2"]):
        for s in block:
            h = tf.nn.relu(tf.nn.conv2d(h, flat[f"{s}/weights"], 1, "SAME") + flat[f"{s}/biases"])
        h = tf.nn.max_pool2d(h, 2, 2, "SAME")
    h = tf.reshape(h, [h.shape[0], -1])
    for s in ("vggish/fc1/fc1_1", "vggish/fc1/fc1_2"):
        h = tf.nn.relu(tf.matmul(h, flat[f"{s}/weights"]) + flat[f"{s}/biases"])
    return (tf.matmul(h, flat["vggish/fc2/weights"]) + flat["vggish/fc2/biases"]).numpy()


def test_front_end_frames_and_examples():
    t = np.arange(3 * 16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # 1 kHz = FFT bin 32 exactly
    spec = vggish.log_mel(x)
    assert spec.shape == (1 + (len(x) - 400) // 160, 64)
    assert vggish.examples(spec).shape == (3, 96, 64)
    assert vggish.examples(vggish.log_mel(x[:8000])).shape == (1, 96, 64)  # short: padded to one example
    # Magnitude (as mel_features), not power: twice the amplitude gives twice the mel energy.
    louder = vggish.log_mel(2 * x)
    np.testing.assert_allclose(np.exp(louder) - 0.01, 2 * (np.exp(spec) - 0.01), rtol=1e-4, atol=1e-6)
    assert int(np.argmax(spec[10])) == int(np.argmax(np.exp(louder[10])))


def test_converted_network_equals_a_tensorflow_graph_of_vggish(checkpoint):
    prefix, flat = checkpoint
    emb = embedders.make(f"vggish:{prefix}")
    assert (emb.info.name, emb.info.level, emb.info.dim, emb.info.window) == ("vggish", "frame", 128, 15360)
    rng = np.random.default_rng(1)
    waves = [rng.uniform(-0.3, 0.3, 16000 * 2).astype(np.float32), rng.uniform(-0.1, 0.1, 16000).astype(np.float32)]
    outs = emb.embed_many(waves)
    assert [o["embeddings"].shape for o in outs] == [(2, 128), (1, 128)]
    x = np.concatenate([vggish.examples(vggish.log_mel(w)) for w in waves])
    ref = _tf_vggish(x, flat)
    np.testing.assert_allclose(np.concatenate([o["embeddings"] for o in outs]), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    # The same weights from an .npz of the released names.
    npz = prefix + ".npz"
    np.savez(npz, **flat)
    again = embedders.make(f"vggish:{npz}").embed_many(waves[:1])[0]["embeddings"]
    np.testing.assert_allclose(again, outs[0]["embeddings"], rtol=1e-6)


def test_wrong_or_missing_weights_are_named(tmp_path):
    from music_eval.embedders import musicnn

    with pytest.raises(ValueError, match="needs the weights"):
        embedders.make("vggish")
    with pytest.raises(ValueError, match="no such checkpoint"):
        embedders.make(f"vggish:{tmp_path / 'nothing.ckpt'}")
    with pytest.raises(ValueError, match="no variable 'vggish/conv1/weights'"):
        embedders.make(f"vggish:{musicnn.package_checkpoint('MTT_musicnn')}")
