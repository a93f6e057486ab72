"""Real music and text, and the seqio tasks over them; no model package is imported here.

Corpus: `corpus.py` (the builder's plan, renderer and `build`), `sources/` (music21 works, MMA
grooves), `synth.py` (FluidSynth), `gm.py`, `audio.py` (decode / resample / write, clear errors),
`records.py` (TFRecord shards, texts rows), `ingest.py` (users' audio ingest, an Apache Beam
pipeline), `paths.py` (where corpora are), `manifest.py`.
Text: `weak_text.py` + `text_filter.py` (+ its labelled set), `vocab.py` (WordPiece, SentencePiece).
seqio: `tasks.py` (every task, registered from frozen settings), `preprocessors.py`,
`feature_converters.py`.  Pseudo-labels at training time: `embedding_store.py` (embedding shards),
`matching.py` (exact top-K, the inverse-frequency draw), `pseudo_label_index.py` (a built folder in
memory).  Noise2Music's precomputed T5 embeddings per text: `text_embeddings.py`.
Binaries: `build_corpus`, `ingest`, `train_vocab`, `evaluate_text_filter`.
"""
