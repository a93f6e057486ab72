"""Pictures of spectrograms (numpy + matplotlib, imported when drawn): PNG files people read, and
RGB arrays for TensorBoard and the evaluation report.

    spectrogram_png(spec, "a.png", seconds=10.0, ylabel="mel bin (0-8 kHz)", title=prompt)
    rgb = spectrogram_rgb(spec)            # uint8 [bins, frames, 3], low frequencies at the bottom

`spec` is [frames, bins] in [-1, 1] (e.g. `layers.audio_frontend.MelSpec`).
"""
from __future__ import annotations

import numpy as np


def spectrogram_png(spec, path: str, seconds: float, ylabel: str, title: str = "") -> str:
    """One [frames, bins] spectrogram in [-1, 1] -> a PNG (time across, bins up); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = np.asarray(spec, np.float32)
    fig, ax = plt.subplots(figsize=(max(4.0, min(12.0, 1.2 * seconds)), 3.0), dpi=100)
    im = ax.imshow(spec.T, origin="lower", aspect="auto", cmap="magma", vmin=-1.0, vmax=1.0,
                   extent=(0.0, seconds, 0, spec.shape[1]))
    ax.set_xlabel("seconds")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title[:90], fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def spectrogram_rgb(spec) -> np.ndarray:
    """[frames, bins] in [-1, 1] -> a uint8 RGB image [bins, frames, 3] (low frequencies at the bottom)."""
    import matplotlib

    v = (np.asarray(spec, np.float32).T[::-1] + 1.0) / 2.0
    rgb = matplotlib.colormaps["magma"](np.clip(v, 0.0, 1.0))[..., :3]
    return (255 * rgb).astype(np.uint8)
