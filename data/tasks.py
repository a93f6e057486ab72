"""Every seqio task of the project, registered from frozen settings when a config asks for one.

A run's gin config names its task (the `TASK` macro) and the settings it is built from; the
configurable `corpus_task` registers it and returns its name, when the config is evaluated:

    SeqioData.mixture_or_task_name = @corpus_task()         # configs/datasets/corpus.gin
    corpus_task.name = %TASK
    corpus_task.corpus_dir = %CORPUS_DIR                    # None: the demo corpus in the cache
    corpus_task.audio_samples = %AUDIO_SAMPLES              # the crop, at sample_rate = %SOURCE_RATE
    corpus_task.vocabulary = %TEXT_VOCAB

Every setting is fixed when the task is registered (mt3's way), so nothing reads gin while tf.data
builds or iterates a dataset, and the crop is the model's `AUDIO_SAMPLES` by construction.  The
corpus must be built already (`python -m data.build_corpus`); a missing one is a
`FileNotFoundError` naming that command.

Tasks (`TASKS`), on the weakly associated text or the MuLan pseudo-labels of a corpus:

* `mulan_weak_text`: train split; a random crop (stateless seed) as a `ContinuousFeature`
  `audio`; one text per clip per epoch drawn from short-form : long-form : playlist : class-label
  text at `text_weights` (2 : 2 : 1 : 1, docs/PAPERS.md §1), with the text filter applied;
  `text_tokens` = [CLS] WordPiece... [SEP].
* `mulan_weak_text_unfiltered`: the same without the text filter (the paper found it often does
  as well).
* `mulan_eval`: the held-out works (test split): the first 10 s, every text source and the
  ground-truth tags (`tag_instrument`, `tag_genre`, ...) as string features, and the clip id.
* `n2m_weak_text`: Noise2Music's crop with the weak text of `mulan_weak_text` (features `audio`,
  `text_tokens`, `text`, `clip_id`); its configs tokenize with T5's SentencePiece (pieces... EOS,
  `data.vocab.T5SentencePieceVocabulary`).
* `n2m_pseudo_labels`: the clip's MuLan pseudo-labels matched inline (docs/PAPERS.md §3;
  `preprocessors.MatchPseudoLabels` with the frozen `PseudoLabelMatching` settings: exact top-K
  of the in-memory bank, K' drawn by inverse selection frequency) and one text option per clip per
  step (`choose_pseudo_label_text`); same features.
* `n2m_pseudo_labels_and_weak_text`: a mixture of the two at `mixture_rates`.

With `text_embeddings` (a store built by `python -m noise2music.embed_texts`, the macro
TEXT_EMBEDDINGS) the `n2m_` tasks also give each example its text's precomputed encoder output
`text_embeddings` [L, D] (`data.text_embeddings.lookup`).  `text_options` lists every text a
task can draw for a clip: what that store must hold.

A crop at a rate other than 16 kHz reads the corpus's `records_<rate>/` (super-resolution's 24 kHz).
The train tasks read the records by number (`data.indexed_records`): under the trainer's
`SeqioData` their order is a pure function of (seed, global example index) and each host reads
its slice of every global batch (common/order.py); `mulan_eval` reads them in order.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import gin
import seqio
import tensorflow as tf

from data import paths, preprocessors, records, text_embeddings as text_embeddings_lib
from data.indexed_records import IndexedTFRecordSource
from data.preprocessors import MatchPseudoLabels, PseudoLabelMatching
from data.vocab import BertWordPieceVocabulary

MODEL_RATE = 16000
EVAL_SECONDS = 10.0
TASKS = ("mulan_weak_text", "mulan_weak_text_unfiltered", "mulan_eval", "n2m_weak_text", "n2m_pseudo_labels",
         "n2m_pseudo_labels_and_weak_text")
_TRAIN_KEYS = {"mulan": ["audio", "text_tokens"], "n2m": ["audio", "text_tokens", "text", "clip_id"]}
_EVAL_KEYS = ["audio", "clip_id", "work_id"] + [f"text_{s}" for s in preprocessors.SOURCES] + [
    f"tag_{a}" for a in records.TAG_ATTRIBUTES]


def corpus_source(corpus_dir: str, rate: int = MODEL_RATE, indexed: bool = True,
                  on_bad_record: str = "stop") -> seqio.DataSource:
    """The corpus's records at `rate` (`records/` for 16 kHz, `records_<rate>/` otherwise): read by
    record number in the trainer's order (`data.indexed_records`, which stops at a damaged record
    or with `on_bad_record='skip'` skips and counts it), or with `indexed=False` as seqio's
    sequential `TFExampleDataSource` (the evaluation task)."""
    sub = os.path.join(corpus_dir, records.records_dir_name(rate))
    if not os.path.isdir(sub):
        raise FileNotFoundError(f"{sub}: the corpus has no records at {rate} Hz (the crop's sample rate); rebuild "
                                f"it with `python -m data.build_corpus ... --sample_rates=16000,{rate}`")
    patterns = {split: os.path.join(sub, f"{split}-*.tfrecord") for split in ("train", "test")}
    if indexed:
        return IndexedTFRecordSource(patterns, records.feature_spec(), on_bad_record=on_bad_record)
    return seqio.TFExampleDataSource(patterns, feature_description=records.feature_spec())


def _features(vocabulary: seqio.Vocabulary) -> dict:
    return {"audio": seqio.ContinuousFeature(dtype=tf.float32, rank=1),
            "text_tokens": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)}


def _add(name: str, source, preprocessors_: list, output_features: dict) -> str:
    seqio.TaskRegistry.remove(name)
    # An indexed source orders and shuffles itself (no shuffle buffer: common/order.py).
    own_order = {"shuffle_buffer_size": None} if getattr(source, "reads_streams", False) else {}
    seqio.TaskRegistry.add(name, source=source, preprocessors=preprocessors_, output_features=output_features,
                           **own_order)
    return name


def register_audio_text(name: str, source, crop, choose: list, keys: Sequence[str],
                        vocabulary: seqio.Vocabulary, text_embeddings: str | None = None) -> str:
    """A train task: crop, drop silence, one text per clip per step (`choose`), the vocabulary's
    tokens, and with `text_embeddings` (a store folder) the text's precomputed encoder output."""
    lookup = [text_embeddings_lib.lookup(text_embeddings)] if text_embeddings else []
    keys = list(keys) + (["text_embeddings"] if text_embeddings else [])
    return _add(name, source, [
        preprocessors.densify_dataset,
        crop,
        preprocessors.drop_silent,
        *choose,
        preprocessors.drop_empty_text,
        preprocessors.tokenize("text", "text_tokens"),
        seqio.preprocessors.append_eos_after_trim,
        *lookup,
        preprocessors.select(keys),
    ], _features(vocabulary))


def text_options(task_name: str, split: str = "train", sequence_length: dict | None = None) -> tf.data.Dataset:
    """Every text the registered task (or each task of the mixture) `task_name` can draw, with its
    tokens: a dataset of {'text', 'text_tokens'}, a clip's options in turn (repeats included).

    The task's own preprocessors make them: those before its text choice (the crop and the silence
    filter, which only drop clips, are skipped), then instead of the choice every option the choice
    draws from (its `text_options`), then the task's own filter, tokenizer and EOS."""
    mot = seqio.get_mixture_or_task(task_name)
    tasks = mot.tasks if isinstance(mot, seqio.Mixture) else [mot]
    parts = []
    for task in tasks:
        preps = list(task.preprocessors)
        pick = [i for i, p in enumerate(preps) if hasattr(p, "text_options")]
        if not pick:
            raise ValueError(f"task {task.name!r} has no text choice with `text_options` (data.preprocessors)")
        kw = dict(sequence_length=sequence_length, output_features=task.output_features)
        ds = task.source.get_dataset(split, shuffle=False)
        for p in preps[:pick[0]]:
            if not getattr(p, "audio_only", False):
                ds = seqio.utils.add_kwargs_to_transform(p, **kw)(ds)
        ds = ds.flat_map(lambda ex, f=preps[pick[0]].text_options: tf.data.Dataset.from_tensor_slices(
            {"text": f(ex)}))
        for p in preps[pick[0] + 1:]:
            ds = seqio.utils.add_kwargs_to_transform(p, **kw)(ds)
            if p is seqio.preprocessors.append_eos_after_trim:
                break
        parts.append(ds)
    out = parts[0]
    for p in parts[1:]:
        out = out.concatenate(p)
    return out


def register_eval(name: str, corpus_dir: str) -> str:
    """`mulan_eval`: the test split's first 10 s, texts, tags and ids."""
    return _add(name, corpus_source(corpus_dir, indexed=False), [
        preprocessors.densify_dataset,
        preprocessors.head_crop(EVAL_SECONDS, MODEL_RATE),
        preprocessors.drop_silent,
        preprocessors.select(_EVAL_KEYS),
    ], {"audio": seqio.ContinuousFeature(dtype=tf.float32, rank=1)})


@gin.configurable
def corpus_task(name: str = "mulan_weak_text", *, corpus_dir: str | None = None, audio_samples: int = 160000,
                sample_rate: int = MODEL_RATE, text_weights: Sequence[float] = preprocessors.DEFAULT_TEXT_WEIGHTS,
                vocabulary: seqio.Vocabulary | None = None, pseudo_labels: PseudoLabelMatching | None = None,
                mixture_rates: tuple[float, float] = (1.0, 1.0), text_embeddings: str | None = None,
                on_bad_record: str = "stop") -> str:
    """Registers the task (or mixture) `name` of `TASKS` on the corpus at `corpus_dir` from these
    settings, and returns `name` (see the module doc).

    Args:
      audio_samples / sample_rate: the crop (`audio_samples / sample_rate` seconds at `sample_rate`).
      text_weights: short : long : playlist : label text (the weak-text tasks).
      vocabulary: the text tokens' vocabulary (default: the installed MiniLM WordPiece).
      pseudo_labels: the inline matcher's settings (the pseudo-label tasks; gin
        `datasets/pseudo_labels.gin`).
      mixture_rates: (pseudo-labels, weak text) of `n2m_pseudo_labels_and_weak_text`.
      text_embeddings: a store of precomputed text-encoder outputs for the `n2m_` tasks (the macro
        TEXT_EMBEDDINGS; `data.text_embeddings`).
      on_bad_record: a damaged record of the train records (a CRC mismatch, a truncated file) stops
        the run naming it ('stop'), or is skipped, logged and counted ('skip'; `data.indexed_records`).
    """
    if name not in TASKS:
        raise ValueError(f"corpus_task.name={name!r} (the TASK macro): one of {TASKS}, or name your own task "
                         f"with SeqioData.mixture_or_task_name and SeqioData.task_module")
    root = paths.corpus_dir(corpus_dir)
    if name == "mulan_eval":
        return register_eval(name, root)
    vocabulary = vocabulary or BertWordPieceVocabulary()
    source = corpus_source(root, sample_rate, on_bad_record=on_bad_record)
    crop = preprocessors.random_crop(audio_samples / sample_rate, sample_rate)
    weak = [preprocessors.choose_text(tuple(text_weights), filter_text=name != "mulan_weak_text_unfiltered")]
    if name.startswith("mulan_"):
        if text_embeddings:
            raise ValueError(f"corpus_task.text_embeddings (TEXT_EMBEDDINGS) is for the Noise2Music tasks, not {name!r}")
        return register_audio_text(name, source, crop, weak, _TRAIN_KEYS["mulan"], vocabulary)
    n2m = dict(keys=_TRAIN_KEYS["n2m"], vocabulary=vocabulary, text_embeddings=text_embeddings)
    if name == "n2m_weak_text":
        return register_audio_text(name, source, crop, weak, **n2m)
    if pseudo_labels is None or not pseudo_labels.labels_dir:
        raise ValueError(f"task {name!r} reads MuLan pseudo-labels: add --gin_file=datasets/pseudo_labels.gin and "
                         f"bind PSEUDO_LABELS_DIR to a folder built by `python -m pseudo_labels.label`")
    pl = [MatchPseudoLabels(pseudo_labels), preprocessors.choose_pseudo_label_text()]
    register_audio_text("n2m_pseudo_labels", source, crop, pl, **n2m)
    if name == "n2m_pseudo_labels":
        return name
    register_audio_text("n2m_weak_text", source, crop, weak, **n2m)
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, [("n2m_pseudo_labels", float(mixture_rates[0])),
                                     ("n2m_weak_text", float(mixture_rates[1]))])
    return name
