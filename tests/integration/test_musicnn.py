"""The Flax musicnn (noise2music/musicnn.py) against the original: librosa's front end, and the
wheel's own TF1 network (`musicnn.models.define_model`, run by tests/musicnn_reference.py in a
subprocess with tf_keras's legacy layers) restored from the same checkpoint, on the same inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from music_eval.embedders import musicnn
from tests import helpers

pytestmark = pytest.mark.timeout(600)


def _music(seconds=7.0, sr=16000, seed=0):
    """Deterministic test audio: a chord of harmonic tones with a melody, clicks and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros_like(t)
    for f in (220.0, 277.2, 329.6):
        for h in range(1, 6):
            x += np.sin(2 * np.pi * f * h * t) / h ** 1.5
    mel = 440 * 2 ** (np.floor(t * 4) % 5 / 12)
    x += 0.7 * np.sin(2 * np.pi * np.cumsum(mel) / sr) * np.exp(-(t * 4 % 1) * 3)
    clicks = (np.arange(len(t)) % (sr // 2) < 200) * rng.standard_normal(len(t))
    x = x / np.abs(x).max() * 0.5 + 0.3 * clicks + 0.01 * rng.standard_normal(len(t))
    return np.clip(x, -1, 1).astype(np.float32)


def test_front_end_is_librosas_melspectrogram():
    librosa = pytest.importorskip("librosa")
    np.testing.assert_allclose(musicnn.slaney_mel_matrix().T, librosa.filters.mel(sr=16000, n_fft=512, n_mels=96),
                               rtol=1e-5, atol=1e-8)
    x = _music()
    ref = librosa.feature.melspectrogram(y=x, sr=16000, hop_length=256, n_fft=512, n_mels=96, pad_mode="reflect").T
    ours = musicnn.log_mel(x)
    assert ours.shape == ref.shape == (1 + len(x) // 256, 96)
    np.testing.assert_allclose(ours, np.log10(10000 * ref + 1), atol=2e-5)
    # Full-scale audio stays finite (the original's float16 cast overflows to inf on loud input).
    loud = np.sign(np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)).astype(np.float32)
    assert np.isfinite(musicnn.log_mel(loud)).all()
    # Patches: non-overlapping 187 frames; a short clip is repeat-padded to one patch.
    assert musicnn.patches(ours).shape == (2, 187, 96)
    short = musicnn.patches(musicnn.log_mel(x[:16000]))
    assert short.shape == (1, 187, 96) and np.array_equal(short[0, 63:126], short[0, :63])


@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_musicnn"])
def test_port_matches_the_original_tf_network(model, tmp_path):
    pytest.importorskip("tf_keras")
    x = _music(seconds=9.0)
    pats = np.concatenate([musicnn.patches(musicnn.log_mel(x)),
                           musicnn.patches(musicnn.log_mel(_music(4.0, seed=1) * 0.05)),  # quiet
                           np.random.default_rng(2).uniform(0, 3, (1, 187, 96)).astype(np.float32)])
    np.save(tmp_path / "in.npy", pats)
    p = subprocess.run([sys.executable, os.path.join(helpers.ROOT, "tests", "musicnn_reference.py"), model,
                        str(tmp_path / "in.npy"), str(tmp_path / "ref.npz")],
                       env=helpers.env(1, TF_USE_LEGACY_KERAS="1"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ref = np.load(tmp_path / "ref.npz")
    net = musicnn.Musicnn.load(model, batch_size=8)
    ours = net.apply_patches(pats)
    assert ours["tags"].shape == (len(pats), 50) and ours["penultimate"].shape == (len(pats), 200)
    np.testing.assert_allclose(ours["tags"], ref["tags"], atol=2e-5)
    for k in ("penultimate", "mean_pool", "max_pool"):
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-4, atol=1e-4 * np.abs(ref[k]).max(), err_msg=k)
    assert ref["tags"].std() > 0.01  # the reference is not trivially flat
    # A clip straight through: the same as its patches.
    clip = net.analyze(x)
    np.testing.assert_allclose(clip["tags"], ours["tags"][:len(clip["tags"])], atol=1e-6)


def test_wrong_checkpoint_is_named():
    vgg = musicnn.package_checkpoint("MTT_musicnn").replace("MTT_musicnn", "MTT_vgg")
    with pytest.raises(musicnn.MusicnnError, match="MTT_vgg.*do not fit"):
        musicnn.Musicnn.load("MTT_musicnn", checkpoint=vgg)
    with pytest.raises(musicnn.MusicnnError, match="unknown musicnn model"):
        musicnn.package_checkpoint("MSD_musicnn_big")
