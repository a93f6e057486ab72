"""Hooks the train loop calls every few steps (the role of t5x's actions), bound in gin:

    train.hooks = [@SampleSummaries()]          # noise2music: audio + spectrograms of quick samples
    SampleSummaries.period = %CHECKPOINT_PERIOD

A `MediaHook` turns the (EMA) parameters and the current global batch into TensorBoard media;
the loop calls it every `period` steps and at the last step, and writes what it returns.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np


class MediaHook(abc.ABC):
    """Returns `{'audio': {name: ([N, T] floats in [-1, 1], rate)}, 'images': {name: uint8
    [N, H, W, 3]}, 'texts': {name: str}}` (any part may be missing)."""

    period: int = 0

    def due(self, step: int, last_step: int) -> bool:
        return bool(self.period) and (step % self.period == 0 or step == last_step)

    @abc.abstractmethod
    def __call__(self, model: Any, params: Any, batch: dict, partitioner: Any) -> dict[str, dict]:
        ...


def write_media(writer: Any, step: int, media: dict[str, dict]) -> list[str]:
    """Writes a hook's media with a clu writer; returns the names written."""
    for name, (audio, rate) in media.get("audio", {}).items():
        writer.write_audios(step, {name: np.asarray(audio, np.float32)[..., None]}, sample_rate=int(rate))
    if media.get("images"):
        writer.write_images(step, {k: np.asarray(v) for k, v in media["images"].items()})
    if media.get("texts"):
        writer.write_texts(step, media["texts"])
    writer.flush()
    return [*media.get("audio", {}), *media.get("images", {})]
