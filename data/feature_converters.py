"""Feature converters: task features -> fixed-shape model batches (MuLan and every Noise2Music stage)."""
from __future__ import annotations

import gin
import seqio
import tensorflow as tf

from common import order


@gin.register
class AudioTextFeatureConverter(seqio.FeatureConverter):
    """`audio` [T] float32 (T = `task_feature_lengths['audio']`, checked against the crop) and `text_tokens` padded with 0 ([PAD]) to
    `task_feature_lengths['text_tokens']`; a `text_mask` (1 = real token) is added; a task's
    precomputed `text_embeddings` [L, D] and the trainer's `order.INDEX_KEY` pass through. No packing."""

    TASK_FEATURES = {
        "audio": seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=1),
        "text_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        "audio": seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=1),
        "text_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "text_mask": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    PACKING_FEATURE_DTYPE = None

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("AudioTextFeatureConverter does not pack")
        super().__init__(pack=False, **kwargs)

    def __call__(self, ds, task_feature_lengths):
        spec, lengths = {}, dict(task_feature_lengths)
        if "text_embeddings" in ds.element_spec:   # a seqio pass-through feature of the text's length
            spec["text_embeddings"] = seqio.FeatureConverter.FeatureSpec(tf.float32, rank=2)
            lengths["text_embeddings"] = task_feature_lengths["text_tokens"]
        if order.INDEX_KEY in ds.element_spec:     # a scalar: seqio checks no length
            spec[order.INDEX_KEY] = seqio.FeatureConverter.FeatureSpec(tf.int64, rank=0)
            lengths[order.INDEX_KEY] = 0
        self._passthrough_features = spec
        return super().__call__(ds, lengths)

    def _convert_features(self, ds, task_feature_lengths):
        length = task_feature_lengths["text_tokens"]
        audio_len = task_feature_lengths["audio"]

        def conv(ex):
            tf.debugging.assert_equal(
                tf.shape(ex["audio"])[0], audio_len,
                message=f"task_feature_lengths['audio']={audio_len} differs from the task's audio crop length")
            tokens = ex["text_tokens"][:length]
            n = tf.shape(tokens)[0]
            out = {"audio": ex["audio"],
                   "text_tokens": tf.pad(tokens, [[0, length - n]]),
                   "text_mask": tf.pad(tf.ones([n], tf.int32), [[0, length - n]])}
            if "text_embeddings" in ex:   # precomputed, already [length, D] (data.text_embeddings)
                out["text_embeddings"] = ex["text_embeddings"]
            if order.INDEX_KEY in ex:     # the example's place in the trainer's order (common/order.py)
                out[order.INDEX_KEY] = ex[order.INDEX_KEY]
            return out

        return ds.map(conv, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths):
        return {"audio": task_feature_lengths.get("audio"), "text_tokens": task_feature_lengths["text_tokens"],
                "text_mask": task_feature_lengths["text_tokens"],
                **{k: task_feature_lengths[k] for k in self._passthrough_features}}
