"""The five stages of the Noise2Music cascade, as data (docs/PAPERS.md §2).

Each stage is one `StageSpec`: what it generates, what it is conditioned on, and the paper's
sampler settings.  The model (`noise2music.model`), the sampler's cascade
(`noise2music.cascade`) and the binary read these fields; nothing compares stage names.

| stage                 | generates               | conditioned on                          | steps     | w  | gamma |
|-----------------------|-------------------------|-----------------------------------------|-----------|----|-------|
| generator             | audio at `rate` (3.2k)  | text                                    | generator | 10 | 0     |
| cascader              | audio at `rate` (16k)   | text + audio at `low_rate` (stacked)    | cascader  | 5  | 1     |
| super_resolution      | audio at `rate` (24k)   | audio at `low_rate` (stacked)           | cascader  | 1  | 0     |
| spectrogram_generator | 80-bin log-mel          | text                                    | generator | 5  | 0     |
| vocoder               | audio at 16 kHz         | the log-mel, added at the bottom of the U | vocoder | 1  | 0     |

Whether a stage reads text is its config's (`Noise2MusicModel.text_encoder`: a `T5Config` or None).
"""
from __future__ import annotations

import dataclasses

from common.errors import ConfigError

AUDIO, MEL = "audio", "mel"            # what a stage generates
LOWFI, MEL_BOTTOM = "lowfi", "mel_bottom"  # what it is conditioned on (besides text)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """Args:
      name: the gin value of `Noise2MusicModel.stage`.
      output: AUDIO (at the model's `rate`) or MEL (frames of `Noise2MusicModel.mel`).
      conditioning: None; LOWFI (the clip at `low_rate`, FFT-resampled to `rate` and stacked with
        x_t as input channels); or MEL_BOTTOM (the clip's log-mel, added at the bottom of the U).
      starts_cascade: the first stage of a sampling path (reads no earlier stage's output).
      steps / guidance / gamma: the paper's sampler settings (docs/PAPERS.md §2.2).
    """

    name: str
    output: str
    conditioning: str | None
    starts_cascade: bool
    steps: str
    guidance: float
    gamma: float

    @property
    def pad_value(self) -> float:
        """What the padding to prod(strides) holds: silence (-1 in the log-mel's range, 0 audio)."""
        return -1.0 if self.output == MEL else 0.0

    @property
    def uses_mel(self) -> bool:
        return self.output == MEL or self.conditioning == MEL_BOTTOM


STAGES = {s.name: s for s in (
    StageSpec("generator", AUDIO, None, True, "generator", 10.0, 0.0),
    StageSpec("cascader", AUDIO, LOWFI, False, "cascader", 5.0, 1.0),
    StageSpec("super_resolution", AUDIO, LOWFI, False, "cascader", 1.0, 0.0),
    StageSpec("spectrogram_generator", MEL, None, True, "generator", 5.0, 0.0),
    StageSpec("vocoder", AUDIO, MEL_BOTTOM, False, "vocoder", 1.0, 0.0),
)}

# The two sampling paths (each may end in super-resolution, `FINAL`).
PATHS = {"waveform": ("generator", "cascader"), "spectrogram": ("spectrogram_generator", "vocoder")}
FINAL = "super_resolution"


def spec(name: str) -> StageSpec:
    if name not in STAGES:
        raise ConfigError(f"Noise2MusicModel.stage={name!r}: one of {tuple(STAGES)}")
    return STAGES[name]
