"""The on-device log-mel front end against tf.signal, and SpecAugment."""
import jax
import numpy as np
import pytest

from layers.audio_frontend import LogMel, SpecAugment, mel_matrix


def _tf_log_mel(wave: np.ndarray, fe: LogMel) -> np.ndarray:
    """The same features computed by TensorFlow's tf.signal (an independent implementation)."""
    import tensorflow as tf

    pad = (fe.window - fe.hop) // 2
    x = tf.constant(np.pad(wave, [(0, 0), (pad, fe.window - fe.hop - pad)]), tf.float32)
    stft = tf.signal.stft(x, frame_length=fe.window, frame_step=fe.hop, fft_length=fe.fft_size,
                          window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.real(stft) ** 2 + tf.math.imag(stft) ** 2
    mel_w = tf.signal.linear_to_mel_weight_matrix(fe.num_mels, fe.fft_size // 2 + 1, fe.sample_rate,
                                                  fe.fmin, fe.fmax)
    return np.log(np.maximum((power @ mel_w).numpy(), fe.log_floor))


@pytest.mark.parametrize("num_mels", [64, 128])
def test_mel_matrix_matches_tf_signal(num_mels):
    import tensorflow as tf

    ours = mel_matrix(num_mels, 257, 16000, 125.0, 7500.0)
    ref = tf.signal.linear_to_mel_weight_matrix(num_mels, 257, 16000, 125.0, 7500.0).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.parametrize("num_mels", [64, 128])
def test_log_mel_matches_tf_signal_on_real_shapes(num_mels):
    fe = LogMel(num_mels=num_mels)
    rng = np.random.default_rng(0)
    t = np.arange(160_000) / 16000
    # A chord plus noise at a realistic level, and a near-silent clip (exercises the floor).
    wave = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 659.3 * t)
                     + 0.01 * rng.normal(size=t.shape), 1e-4 * rng.normal(size=t.shape)]).astype(np.float32)
    ours = np.asarray(jax.jit(fe.log_mel)(wave))
    assert ours.shape == (2, 1000, num_mels)  # 10 s -> the papers' 1000 frames
    ref = _tf_log_mel(wave, fe)
    # Natural-log units; float32 FFTs of different libraries agree to ~1e-3 on loud bins.
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)
    # The A4 partial lands in the mel bin whose centre is nearest 440 Hz.
    peak = ours[0, 500].argmax()
    centres = mel_matrix(num_mels, 257, 16000, fe.fmin, fe.fmax).argmax(0) * 8000 / 256
    assert abs(centres[peak] - 440) < 40
    normed = np.asarray(fe(wave[:1]))
    np.testing.assert_allclose(normed, (ours[:1] - fe.norm_mean) / fe.norm_std, rtol=1e-5, atol=1e-5)


def test_short_clip_gives_frames_per_hop():
    fe = LogMel()
    assert fe(np.zeros((1, 16_000), np.float32)).shape == (1, 100, 64)
    with pytest.raises(ValueError, match="fmin"):
        mel_matrix(64, 257, 16000, 7000.0, 9000.0)


def test_spec_augment_masks_bands_per_example_and_is_deterministic():
    x = np.ones((4, 1000, 64), np.float32)
    aug = SpecAugment(num_time_masks=2, time_mask_max=100, num_freq_masks=2, freq_mask_max=8)
    y1 = np.asarray(aug(x, jax.random.PRNGKey(0)))
    y2 = np.asarray(aug(x, jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(y1, y2)
    masked = y1 == 0
    for b in range(4):
        full_t = masked[b].all(axis=1).sum()   # frames masked across all bins
        full_f = masked[b].all(axis=0).sum()   # bins masked across all frames
        assert 0 < full_t <= 200 and 0 < full_f <= 16
    assert not np.array_equal(masked[0], masked[1])  # each example draws its own masks
    assert np.all((y1 == 0) | (y1 == 1))
    none = SpecAugment(num_time_masks=0, num_freq_masks=0)
    np.testing.assert_array_equal(np.asarray(none(x, jax.random.PRNGKey(1))), x)
