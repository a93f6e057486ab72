"""Runs the original musicnn TF graph (`musicnn.models.define_model`) on log-mel patches.

    TF_USE_LEGACY_KERAS=1 python tests/musicnn_reference.py MODEL IN.npy OUT.npz

The reference for `tests/test_musicnn.py`: the wheel's own network code, in TF1 graph mode with
tf_keras's legacy layers, restored with `tf.compat.v1.train.Saver` exactly as musicnn's extractor
does.  A separate process, because the legacy-Keras switch must be set before TensorFlow loads.
"""
import os
import sys

import numpy as np


def main(model: str, inp: str, out: str):
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    import musicnn
    from musicnn import models

    x_np = np.load(inp).astype(np.float32)
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, x_np.shape[1], x_np.shape[2]])
        is_training = tf.compat.v1.placeholder(tf.bool)
        (logits, timbral, temporal, cnn1, cnn2, cnn3, mean_pool, max_pool,
         penultimate) = models.define_model(x, is_training, model, 50)
    sess = tf.compat.v1.Session()
    sess.run(tf.compat.v1.global_variables_initializer())
    tf.compat.v1.train.Saver().restore(sess, os.path.dirname(musicnn.__file__) + "/" + model + "/")
    tags, pen, mean, mx = sess.run([tf.nn.sigmoid(logits), penultimate, mean_pool, max_pool],
                                   feed_dict={x: x_np, is_training: False})
    np.savez(out, tags=tags, penultimate=pen, mean_pool=mean, max_pool=mx)


if __name__ == "__main__":
    main(*sys.argv[1:4])
