"""Every seqio task of the project, registered explicitly here (import this module to get them).

MuLan on the weakly associated text of a corpus (the corpus folder is the gin macro `CORPUS_DIR`,
resolved when a dataset is built, not at import):

* `mulan_weak_text`: train split; a random 10 s crop (stateless seed) resampled to 16 kHz as a
  `ContinuousFeature` `audio`; one text per clip per epoch drawn from short-form : long-form :
  playlist : class-label text at 2 : 2 : 1 : 1 (`choose_text.weights`, a gin setting), with the
  text filter applied; `text_tokens` = [CLS] WordPiece... [SEP].
* `mulan_weak_text_unfiltered`: the same without the text filter (the paper found it often does
  as well).
* `mulan_eval`: the held-out works (test split): the first 10 s, every text source and the
  ground-truth tags (`tag_instrument`, `tag_genre`, `tag_style`, ...) as string features, and
  the clip id, for zero-shot tagging and retrieval.

Noise2Music on pseudo-labels (SPEC §3; the folder of `python -m data.pseudo_labels` is the gin
macro `PSEUDO_LABELS_DIR`, bound in configs/datasets/pseudo_labels.gin):

* `n2m_pseudo_labels`: train split; a random crop of `n2m_crop.seconds` at `n2m_crop.sample_rate`
  (16 kHz; 24 kHz reads the corpus's `records_24000/`); the clip's
  MuLan pseudo-labels matched inline (`preprocessors.MatchPseudoLabels`: exact top-K of the
  in-memory bank, K' drawn by inverse selection frequency) and one text option per clip per step
  (`choose_pseudo_label_text`); features `audio`, `text_tokens`, and `text`, `clip_id`.
* `n2m_weak_text`: the same crop with the weak text of `mulan_weak_text` (same features).
* `n2m_pseudo_labels_and_weak_text`: a mixture of the two, rates `n2m_mixture_rates` (gin).

Per-host sharding is the trainer's (`SeqioData` passes the partitioner's `ShardInfo`; seqio
shards record files across hosts).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import gin
import seqio
import tensorflow as tf

from data import paths, preprocessors, records
from data.vocab import BertWordPieceVocabulary

MODEL_RATE = 16000
CROP_SECONDS = 10.0
TEXT_VOCAB = BertWordPieceVocabulary()  # path from gin `bert_vocab_path.path` (MiniLM by default)


class _CorpusPatterns(Mapping):
    """split -> record file pattern under the current `CORPUS_DIR`, looked up when read: the 16 kHz
    records (`records/`), or those at `rate()` Hz (`records_<rate>/`, written when the corpus was
    built with that rate in `--sample_rates`)."""

    SPLITS = ("train", "test")

    def __init__(self, rate=lambda: MODEL_RATE):
        self.rate = rate

    def __getitem__(self, split):
        if split not in self.SPLITS:
            raise KeyError(split)
        root, rate = paths.corpus_dir(), self.rate()
        sub = records.records_dir_name(rate)
        if not os.path.isdir(os.path.join(root, sub)):
            raise FileNotFoundError(f"{root}/{sub}: the corpus has no records at {rate} Hz (wanted by "
                                    f"data.tasks.n2m_crop.sample_rate); rebuild it with "
                                    f"`python -m data.build_corpus ... --sample_rates=16000,{rate}`")
        return os.path.join(root, sub, f"{split}-*.tfrecord")

    def __iter__(self):
        return iter(self.SPLITS)

    def __len__(self):
        return len(self.SPLITS)


def corpus_source(rate=lambda: MODEL_RATE) -> seqio.TFExampleDataSource:
    return seqio.TFExampleDataSource(_CorpusPatterns(rate), feature_description=records.feature_spec())


@gin.configurable
def text_mixture(weights=preprocessors.DEFAULT_TEXT_WEIGHTS):
    """The per-source text weights of the MuLan tasks (short, long, playlist, label)."""
    return tuple(weights)


class _LazyChooseText:
    """`choose_text` with weights read from gin when the dataset is built, not at import."""

    def __init__(self, filter_text: bool):
        self.filter_text = filter_text
        self.__name__ = f"choose_text(filter_text={filter_text})"

    def __call__(self, dataset):
        # Seeds come from seqio's map-seed context, which is active while this runs.
        return preprocessors.choose_text(text_mixture(), filter_text=self.filter_text)(dataset)


MULAN_FEATURES = {
    "audio": seqio.ContinuousFeature(dtype=tf.float32, rank=1),
    "text_tokens": seqio.Feature(TEXT_VOCAB, add_eos=True, dtype=tf.int32),
}


def _register_audio_text(name: str, crop, choose: list, keys: list[str], rate=lambda: MODEL_RATE):
    """A train task on the corpus: crop, one text per clip per step, WordPiece tokens."""
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=corpus_source(rate),
        preprocessors=[
            preprocessors.densify_dataset,
            crop,
            preprocessors.drop_silent,
            *choose,
            preprocessors.drop_empty_text,
            preprocessors.tokenize_bert("text", "text_tokens"),
            seqio.preprocessors.append_eos_after_trim,
            preprocessors.select(keys),
        ],
        output_features=MULAN_FEATURES,
    )


def _register_mulan_train(name: str, filter_text: bool):
    _register_audio_text(name, preprocessors.random_crop(CROP_SECONDS, MODEL_RATE), [_LazyChooseText(filter_text)],
                         ["audio", "text_tokens"])


_register_mulan_train("mulan_weak_text", filter_text=True)
_register_mulan_train("mulan_weak_text_unfiltered", filter_text=False)

_EVAL_KEYS = ["audio", "clip_id", "work_id"] + [f"text_{s}" for s in preprocessors.SOURCES] + [
    f"tag_{a}" for a in records.TAG_ATTRIBUTES]
seqio.TaskRegistry.remove("mulan_eval")
seqio.TaskRegistry.add(
    "mulan_eval",
    source=corpus_source(),
    preprocessors=[
        preprocessors.densify_dataset,
        preprocessors.head_crop(CROP_SECONDS, MODEL_RATE),
        preprocessors.drop_silent,
        preprocessors.select(_EVAL_KEYS),
    ],
    output_features={"audio": seqio.ContinuousFeature(dtype=tf.float32, rank=1)},
)


# -- Noise2Music: pseudo-labels and weak text ---------------------------------------------------

@gin.configurable
def n2m_crop(seconds: float = 10.0, sample_rate: int = MODEL_RATE):
    """The audio crop of the Noise2Music tasks: (seconds, sample rate).  Super-resolution reads the
    corpus's 24 kHz records (`sample_rate = 24000`)."""
    return float(seconds), int(sample_rate)


@gin.configurable
def n2m_mixture_rates(pseudo_labels: float = 1.0, weak_text: float = 1.0):
    """Sampling rates of `n2m_pseudo_labels_and_weak_text`."""
    return {"n2m_pseudo_labels": float(pseudo_labels), "n2m_weak_text": float(weak_text)}


class _LazyRandomCrop:
    __name__ = "random_crop(n2m_crop)"

    def __call__(self, dataset):
        seconds, rate = n2m_crop()
        return preprocessors.random_crop(seconds, rate)(dataset)


_N2M_KEYS = ["audio", "text_tokens", "text", "clip_id"]


def _register_n2m(name: str, choose: list):
    _register_audio_text(name, _LazyRandomCrop(), choose, _N2M_KEYS, rate=lambda: n2m_crop()[1])


_register_n2m("n2m_pseudo_labels", [preprocessors.MatchPseudoLabels(), preprocessors.choose_pseudo_label_text()])
_register_n2m("n2m_weak_text", [_LazyChooseText(filter_text=True)])
seqio.MixtureRegistry.remove("n2m_pseudo_labels_and_weak_text")
seqio.MixtureRegistry.add("n2m_pseudo_labels_and_weak_text",
                          [("n2m_pseudo_labels", lambda t: n2m_mixture_rates()["n2m_pseudo_labels"]),
                           ("n2m_weak_text", lambda t: n2m_mixture_rates()["n2m_weak_text"])])
