"""TensorBoard samples during training: a `trainer.hooks.MediaHook` bound in gin.

    train.hooks = [@SampleSummaries()]        # configs/noise2music/base.gin
    SampleSummaries.period = %CHECKPOINT_PERIOD

Every `period` steps (and at the last) the first `examples` clips of the batch are sampled from
the EMA parameters with the quick schedule `steps` and the paper's guidance and gamma; written
are the samples and their references (audio at the stage's rate, or the spectrogram generator's
log-mel as images), log-mel images of both, and the prompts.
"""
from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import numpy as np

from noise2music import conditioning
from noise2music.cascade import Stage, paper_settings, vocabulary
from noise2music.stages import MEL
from trainer.hooks import MediaHook


@gin.configurable
class SampleSummaries(MediaHook):
    def __init__(self, period: int = 0, steps: str = "uniform:25", examples: int = 2):
        self.period, self.steps, self.examples = period, steps, examples
        self._stage = None   # kept across summaries, so its compiled step is reused

    def __call__(self, model, params, batch, partitioner) -> dict[str, dict]:
        n = min(self.examples, batch["audio"].shape[0])
        host = {k: np.asarray(jax.device_get(v))[:n] for k, v in batch.items()}
        if self._stage is None or self._stage.model is not model or self._stage.partitioner is not partitioner:
            self._stage = Stage(model.stage, model, params, partitioner)
        stage = self._stage
        stage.params = params
        inputs = model.sampler_inputs(host["audio"])
        out = stage.sample(seeds=list(range(n)), tokens=(host["text_tokens"], host["text_mask"]),
                           inputs=None if inputs is None else np.asarray(inputs),
                           settings=paper_settings(model.stage, steps=self.steps))
        ref = np.asarray(model.target(jnp.asarray(host["audio"])))
        mel = model.mel
        prompts = {"prompts": _decode(model, host, n)} if model.has_text else {}
        if model.spec.output == MEL:
            return {"images": {"sample_mel": np.stack([mel.image(m) for m in out]),
                               "reference_mel": np.stack([mel.image(m) for m in ref])},
                    "texts": prompts}
        ref = ref[..., 0]

        def mel_images(x):  # log-mel of the audio at the spectrogram's 16 kHz
            x16 = conditioning.fft_resample(jnp.asarray(x)[..., None], x.shape[1] * mel.sample_rate // model.rate)
            return np.stack([mel.image(m) for m in np.asarray(mel(x16[..., 0]))])

        return {"audio": {"sample": (np.clip(out, -1, 1), model.rate), "reference": (np.clip(ref, -1, 1), model.rate)},
                "images": {"sample_mel": mel_images(out), "reference_mel": mel_images(ref)},
                "texts": prompts}


def _decode(model, host, n) -> str:
    v = vocabulary(model)
    return "\n".join(f"{i + 1}. {v.decode([t for t, m in zip(host['text_tokens'][i], host['text_mask'][i]) if m])}"
                     for i in range(n))
