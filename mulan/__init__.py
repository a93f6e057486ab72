"""MuLan (docs/PAPERS.md §1): the music-audio / text dual encoder.

`model.py` (`MulanModel` for the trainer: the two towers, the log-mel front end from `layers/`),
`audio_towers.py` (ResNet-50, AST), `text_tower.py` (BERT), `loss.py` (the MuLan and InfoNCE
losses on the global batch), `pretrained.py` (HF BERT / AST and torchvision ResNet converters),
`inference.py` (`Encoder`: a trained run's batched embedding), `embedding.py` (embeddings into an
embedding store), `evaluation.py` + `eval_metrics.py` (zero-shot tagging, retrieval, probes).
Binaries: `train`, `embed`, `evaluate`, `convert`.
"""
