"""Noise2Music (docs/PAPERS.md §2): the cascade of 1-D U-Net diffusion models.

`stages.py` (the five stages as data), `model.py` (`Noise2MusicModel`: one stage's diffusion loss
for the trainer), `unet.py` (the 1-D Efficient U-Net), `diffusion.py` (schedules, losses, step
schedules, guidance and the ancestral step), `conditioning.py` (FFT resampling, blur and noise
augmentation of the low-fi input), `t5.py` (the frozen T5 encoder and its HF converter),
`sampler.py` (the one sampler), `cascade.py` (trained stages, chained), `generation.py` (a prompt
file's samples into a folder), `summaries.py` (TensorBoard samples during training, a trainer hook).
Binaries: `train`, `sample`.  Evaluation of the generated music is `music_eval/`.
"""
