"""Flax building blocks shared by the model families (MuLan's towers, the Noise2Music U-Net) and
the evaluation embedders: `attention` (multi-head self/cross-attention), `transformer` (the
encoder layer and its dense / LayerNorm helpers) and `audio_frontend` (log-mel, SpecAugment).

Parameters carry logical axis names; nothing here knows the mesh or imports another package of
the project.
"""
