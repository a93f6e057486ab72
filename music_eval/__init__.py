"""Evaluation of generated music, for audio from any model (docs/PAPERS.md §4).

`embedders/` (the interface and registry; musicnn, VGGish and MuLan, one file each), `metrics.py`
(FAD, FAD-infinity, MuLan similarity, tag agreement), `inputs.py` (generated and reference sets),
`cache.py` (embeddings cached by model and audio content), `scoring.py` (every system's figures
beside the white-noise and ground-truth baselines), `report.py` (the HTML report), `browser.py`
(a headless-Chromium check), `eval_set.py` (a held-out split with a caption per clip).
Binaries: `evaluate`, `write_eval_set`, `check_report`.
"""
