"""Noise2Music (SPEC.md §2) and the evaluation of generated music (SPEC.md §4).

Generation: `unet.py`, `diffusion.py`, `conditioning.py`, `spectrogram.py`, `t5.py`, `model.py`
(the five stages), `train.py`, `sampling.py` + `sample.py` (the cascade and its binary).
Evaluation: `embedders.py` (the interface: musicnn, MuLan, plug-ins), `musicnn.py` (the tagger in
Flax), `metrics.py` (FAD, FAD-infinity, similarity, tag agreement), `evaluate.py` (the binary),
`report.py` (the HTML page), `browser.py` (a headless-Chromium check and screenshot).
"""
