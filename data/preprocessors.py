"""seqio preprocessors for audio/text records (TensorFlow; stateless seeds throughout).

Randomness comes from `seeded_map`: an example read by the trainer's order (common/order.py)
carries its own stateless seed, a function of the run's seed and its global index, so its crop and
text do not depend on which host read it or where a restart began; other examples get seqio's
`map_over_dataset(num_seeds=...)` seeds (the task seed and the example's place in the stream).
"""
from __future__ import annotations

import dataclasses
import functools

import gin
import numpy as np
import seqio
import tensorflow as tf

from common import order
from data import weak_text

SOURCES = weak_text.SOURCES
# MuLan mixes short-form : long-form : playlist : class-label text 2 : 2 : 1 : 1 (docs/PAPERS.md §1).
DEFAULT_TEXT_WEIGHTS = (2.0, 2.0, 1.0, 1.0)


def seeded_map(num_seeds: int, salt: int):
    """`seqio.map_over_dataset(num_seeds=num_seeds)`, except that examples with `order.SEED_KEY`
    draw from their own seed (`salt` tells the preprocessors apart): `fn(ex, seed=...)` for one
    seed, `fn(ex, seeds=[...])` for several."""

    def decorate(fn):
        stream_seeded = seqio.map_over_dataset(num_seeds=num_seeds)(fn)

        def own(ex):
            key = ex[order.SEED_KEY]
            seeds = tf.random.stateless_uniform([num_seeds, 2], tf.stack([key[0] + (salt << 40), key[1]]),
                                                minval=None, maxval=None, dtype=tf.int64)
            return fn(ex, seed=seeds[0]) if num_seeds == 1 else fn(ex, seeds=tf.unstack(seeds))

        @functools.wraps(fn)
        def transform(dataset):
            if order.SEED_KEY not in dataset.element_spec:
                return stream_seeded(dataset)
            return dataset.map(own, num_parallel_calls=tf.data.AUTOTUNE)

        return transform

    return decorate


def densify(ex):
    """VarLen (sparse) features -> dense 1-D tensors; PCM bytes -> float32 `audio`."""
    out = {}
    for k, v in ex.items():
        out[k] = tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v
    pcm = tf.io.decode_raw(out["audio"], tf.int16, little_endian=True)
    out["audio"] = tf.cast(pcm, tf.float32) / 32767.0
    out["sample_rate"] = tf.cast(out["sample_rate"], tf.int32)
    return out


densify_dataset = seqio.map_over_dataset(densify)


def fft_resample(x, n_out: int):
    """Band-limited resampling by zero-extending / truncating the spectrum (as Noise2Music
    upsamples its low-fi audio) to `n_out` samples."""
    n = tf.shape(x)[0]
    spec = tf.signal.rfft(x)
    bins_out = n_out // 2 + 1
    nb = tf.shape(spec)[0]
    spec = tf.cond(nb >= bins_out, lambda: spec[:bins_out],
                   lambda: tf.concat([spec, tf.zeros([bins_out - nb], spec.dtype)], 0))
    y = tf.signal.irfft(spec, fft_length=[n_out]) * tf.cast(n_out, tf.float32) / tf.cast(n, tf.float32)
    return y


def crop_and_resample(x, sr, *, seconds: float, model_rate: int, start):
    """`seconds` of `x` from sample `start` (zero-padded at the end), resampled to `model_rate`."""
    n_in = tf.cast(tf.math.round(seconds * tf.cast(sr, tf.float32)), tf.int32)
    x = tf.pad(x, [[0, tf.maximum(n_in + start - tf.shape(x)[0], 0)]])[start:start + n_in]
    n_out = int(round(seconds * model_rate))
    y = tf.cond(tf.equal(sr, model_rate), lambda: tf.reshape(x, [n_out]),
                lambda: fft_resample(x, n_out))
    return tf.ensure_shape(y, [n_out])


def random_crop(seconds: float = 10.0, model_rate: int = 16000):
    """A random `seconds` window (stateless seed), resampled to `model_rate`: feature `audio`."""

    @seeded_map(num_seeds=1, salt=1)
    def fn(ex, seed):
        sr = ex["sample_rate"]
        n_in = tf.cast(tf.math.round(seconds * tf.cast(sr, tf.float32)), tf.int32)
        slack = tf.maximum(tf.shape(ex["audio"])[0] - n_in, 0)
        start = tf.random.stateless_uniform([], seed, 0, slack + 1, dtype=tf.int32)
        ex = dict(ex)
        ex["audio"] = crop_and_resample(ex["audio"], sr, seconds=seconds, model_rate=model_rate, start=start)
        return ex

    fn.audio_only = True   # changes no text (data.tasks.text_options skips it)
    return fn


def head_crop(seconds: float = 10.0, model_rate: int = 16000):
    """The first `seconds` (deterministic, for evaluation), resampled to `model_rate`."""

    @seqio.map_over_dataset
    def fn(ex):
        ex = dict(ex)
        ex["audio"] = crop_and_resample(ex["audio"], ex["sample_rate"], seconds=seconds,
                                        model_rate=model_rate, start=tf.constant(0))
        return ex

    return fn


def drop_silent(dataset, peak: float = 3e-5):
    """Drops zero-length or silent examples (after cropping)."""
    def keep(ex):
        x = ex["audio"]
        return tf.logical_and(tf.size(x) > 0, tf.reduce_max(tf.abs(tf.concat([x, [0.0]], 0))) > peak)

    return dataset.filter(keep)


drop_silent.audio_only = True


def text_pool(ex, filter_text: bool = True):
    """Every weak text of an example (after the filter when `filter_text`): (texts [M], sources [M])."""
    texts, srcs = [], []
    for i, s in enumerate(SOURCES):
        t = ex[f"text_{s}"]
        if filter_text:
            t = tf.boolean_mask(t, tf.cast(ex[f"ok_{s}"], tf.int64) > 0)
        texts.append(t)
        srcs.append(tf.fill(tf.shape(t), i))
    return tf.concat(texts, 0), tf.concat(srcs, 0)


def choose_text(weights=DEFAULT_TEXT_WEIGHTS, filter_text: bool = True, output_key: str = "text"):
    """Draws one text per example: a source with probability proportional to `weights` among
    the sources that have text (after the filter when `filter_text`), then a text of that source
    uniformly. Adds `text` (string) and `text_source` (index into `SOURCES`, -1 if none)."""
    if len(weights) != len(SOURCES):
        raise ValueError(f"choose_text.weights needs {len(SOURCES)} values for {SOURCES}, got {weights}")
    w = tf.constant([float(x) for x in weights], tf.float32)

    @seeded_map(num_seeds=2, salt=2)
    def fn(ex, seeds):
        texts, srcs = text_pool(ex, filter_text)
        counts = tf.math.bincount(srcs, minlength=len(SOURCES), maxlength=len(SOURCES))
        logits = tf.where((counts > 0) & (w > 0), tf.math.log(tf.maximum(w, 1e-9)), -1e9)
        src = tf.cast(tf.random.stateless_categorical(logits[None], 1, seeds[0])[0, 0], tf.int32)
        pool = tf.boolean_mask(texts, tf.equal(srcs, src))
        n = tf.shape(pool)[0]
        idx = tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(n, 1), dtype=tf.int32)
        ex = dict(ex)
        ex[output_key] = tf.cond(n > 0, lambda: pool[tf.minimum(idx, n - 1)], lambda: tf.constant(""))
        ex["text_source"] = tf.where(n > 0, src, -1)
        return ex

    def options(ex):   # every text `fn` can draw (data.tasks.text_options)
        texts, srcs = text_pool(ex, filter_text)
        return tf.boolean_mask(texts, tf.gather(w, srcs) > 0)

    fn.text_options = options
    return fn


def drop_empty_text(dataset, key: str = "text"):
    return dataset.filter(lambda ex: tf.strings.length(tf.strings.strip(ex[key])) > 0)


def tokenize(key: str = "text", out_key: str = "text_tokens"):
    """Tokenizes `key` with the output feature's vocabulary, prepending its `[CLS]` where it has one
    (WordPiece; T5's SentencePiece has none); the EOS (`[SEP]`, or SentencePiece's 1) is appended
    after trimming by `seqio.preprocessors.append_eos_after_trim`."""

    def fn(dataset, output_features):
        vocab = output_features[out_key].vocabulary
        _ = vocab.vocab_size   # find and load the files here (a missing one is named), not in the traced map
        if hasattr(vocab, "_tf_tokenizer"):
            vocab._tf_tokenizer()
        head = getattr(vocab, "cls_id", None)

        def tok(ex):
            ex = dict(ex)
            ids = tf.cast(vocab.encode_tf(ex[key]), tf.int32)
            ex[out_key] = ids if head is None else tf.concat([[tf.constant(head, tf.int32)], ids], 0)
            return ex

        return dataset.map(tok, num_parallel_calls=tf.data.AUTOTUNE)

    return fn


def select(keys):
    """Keeps only `keys` (what the model and its metrics need) and the example's place in the
    trainer's order (`order.INDEX_KEY`), if it has one."""

    @seqio.map_over_dataset
    def fn(ex):
        out = {k: ex[k] for k in keys}
        if order.INDEX_KEY in ex:
            out[order.INDEX_KEY] = ex[order.INDEX_KEY]
        return out

    return fn


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PseudoLabelMatching:
    """The settings of the inline matcher (gin: `PseudoLabelMatching.*`; `labels_dir` is the
    macro PSEUDO_LABELS_DIR, a folder built by `python -m pseudo_labels.label`).  `k_prime`,
    `tag_k_prime`, `seed`: None = as built (the top-K size K is fixed by the folder's counting
    pass).  `metadata_sources`: weak-text sources whose (filtered) texts, joined, are one more
    text option per clip."""

    labels_dir: str | None = None
    dtype: str = "float32"
    batch_size: int = 128
    k_prime: int | None = None
    tag_k_prime: int | None = None
    seed: int | None = None
    metadata_sources: tuple[str, ...] = ("short",)

    def __post_init__(self):
        object.__setattr__(self, "metadata_sources", tuple(self.metadata_sources))
        bad = [s for s in self.metadata_sources if s not in SOURCES]
        if bad:
            raise ValueError(f"PseudoLabelMatching.metadata_sources: unknown {bad}; choose from {SOURCES}")


class MatchPseudoLabels:
    """seqio preprocessor: MuLan pseudo-labels for each clip, computed inline.

    Examples are grouped `batch_size` at a time (`ragged_batch`: audio of any length), their clip
    embeddings matched against the in-memory bank in one exact top-K search, K' captions and tags
    drawn by inverse selection frequency, and the batch split again.  Adds `pl_options` (string
    [M]: each drawn caption, the drawn tags joined and chunked to the text length, and the
    metadata option) and `pl_caption_ids` / `pl_tag_ids` (bank rows)."""

    __name__ = "match_pseudo_labels"

    def __init__(self, settings: PseudoLabelMatching):
        self.settings = settings

    def __call__(self, dataset, sequence_length=None, output_features=None):
        from data.pseudo_label_index import PseudoLabeler

        cfg = self.settings
        lab = PseudoLabeler.get(cfg.labels_dir, cfg.dtype)
        max_tokens, count = None, None
        if sequence_length and sequence_length.get("text_tokens") and output_features:
            vocab = output_features["text_tokens"].vocabulary
            max_tokens = int(sequence_length["text_tokens"]) - 2  # [CLS] ... [SEP]
            count = lambda s: len(vocab.encode(s))
        draw = {k: getattr(cfg, k) for k in ("k_prime", "tag_k_prime", "seed")}

        def py(clip_ids):
            opts, lab_out = lab.options([c.decode() for c in clip_ids], max_tokens, count, **draw)
            m = max(len(o) for o in opts)
            arr = np.array([[o.encode() for o in row] + [b""] * (m - len(row)) for row in opts], dtype=object)
            return arr, lab_out["caption_pick"].astype(np.int64), lab_out["tag_pick"].astype(np.int64)

        def match(batch):
            opts, caps, tags = tf.numpy_function(py, [batch["clip_id"]], [tf.string, tf.int64, tf.int64],
                                                 stateful=False)
            batch = dict(batch)
            batch["pl_options"] = tf.ensure_shape(opts, [None, None])
            batch["pl_caption_ids"] = tf.ensure_shape(caps, [None, None])
            batch["pl_tag_ids"] = tf.ensure_shape(tags, [None, None])
            return batch

        sources = cfg.metadata_sources

        def add_metadata(ex):
            ex = dict(ex)
            opts = tf.boolean_mask(ex["pl_options"], tf.strings.length(ex["pl_options"]) > 0)
            for s in sources:
                t = tf.boolean_mask(ex[f"text_{s}"], tf.cast(ex[f"ok_{s}"], tf.int64) > 0)
                joined = tf.strings.reduce_join(t, separator=", ")
                opts = tf.cond(tf.size(t) > 0, lambda: tf.concat([opts, [joined]], 0), lambda: opts)
            ex["pl_options"] = opts
            return ex

        ds = dataset.ragged_batch(cfg.batch_size).map(match, num_parallel_calls=2).unbatch()
        return ds.map(add_metadata, num_parallel_calls=tf.data.AUTOTUNE)


def choose_pseudo_label_text(output_key: str = "text"):
    """One of the clip's `pl_options` per step, uniformly (stateless seed: deterministic for a seed)."""

    @seeded_map(num_seeds=1, salt=3)
    def fn(ex, seed):
        opts = ex["pl_options"]
        n = tf.shape(opts)[0]
        i = tf.random.stateless_uniform([], seed, 0, tf.maximum(n, 1), dtype=tf.int32)
        ex = dict(ex)
        ex[output_key] = tf.cond(n > 0, lambda: opts[tf.minimum(i, n - 1)], lambda: tf.constant(""))
        return ex

    fn.text_options = lambda ex: ex["pl_options"]   # every text `fn` can draw (data.tasks.text_options)
    return fn
