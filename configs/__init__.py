"""Gin files, shipped as package data (`trainer/flags.py` puts this folder on gin's search path).

What older runs' `config.gin` files name, for `trainer.restore` (a run keeps the config it was
trained with, `import` lines included, and must still load for inference after the code moved):

* `MOVED_MODULES`: old module -> new module (None: gone); `import` lines are rewritten.
* `RENAMED_CONFIGURABLES`: old name -> new name, in bindings and `@references`.
* `REMOVED_BINDINGS`: "configurable" (every parameter) or "configurable.parameter" bindings that
  no longer exist (settings of the data pipeline and of training, which inference never reads);
  they are dropped.
"""

MOVED_MODULES: dict[str, str | None] = {
    "mulan.frontend": "layers.audio_frontend",
}

RENAMED_CONFIGURABLES: dict[str, str] = {
    "MulanFeatureConverter": "AudioTextFeatureConverter",
}

REMOVED_BINDINGS: tuple[str, ...] = (
    "train.summary_period",             # now a hook: train.hooks = [@SampleSummaries()]
    "corpus_dir",                       # data.paths.corpus_dir.path: now corpus_task.corpus_dir
    "text_mixture",                     # now corpus_task.text_weights
    "n2m_crop",                         # the crop is AUDIO_SAMPLES at SOURCE_RATE
    "n2m_mixture_rates",                # now corpus_task.mixture_rates
    "pseudo_label_matching",            # now PseudoLabelMatching
    "bert_vocab_path",                  # now BertWordPieceVocabulary.path (TEXT_VOCAB)
)
