"""The seqio tasks on a fake corpus (tests.fakes): registered from frozen settings by
`data.tasks.corpus_task`, the crop is the model's AUDIO_SAMPLES, other rates read their records,
and what is missing is named with the command that makes it."""
import numpy as np
import pytest
import seqio

from data import tasks
from data.feature_converters import AudioTextFeatureConverter
from tests import fakes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return fakes.fake_corpus(tmp_path_factory.mktemp("corpus"), clips=6, seconds=3.0, rates=(16000, 24000))


def _batch(name, samples, text=12, split="train"):
    ds = seqio.get_dataset(name, task_feature_lengths={"audio": samples, "text_tokens": text}, dataset_split=split,
                           shuffle=False, feature_converter=AudioTextFeatureConverter())
    return next(ds.batch(2).as_numpy_iterator())


def test_the_crop_is_audio_samples_at_the_source_rate(corpus):
    b = _batch(tasks.corpus_task("mulan_weak_text", corpus_dir=corpus, audio_samples=32000), 32000)
    assert b["audio"].shape == (2, 32000) and b["text_tokens"].shape == (2, 12) and (b["text_mask"][:, 0] == 1).all()
    b = _batch(tasks.corpus_task("n2m_weak_text", corpus_dir=corpus, audio_samples=48000, sample_rate=24000), 48000)
    assert b["audio"].shape == (2, 48000)
    # 24 kHz records: energy at the tone's harmonics above 8 kHz would be gone in a 16 kHz resampling;
    # the fake corpus's tones are low, so check the rate by the tone's frequency instead.
    spec = np.abs(np.fft.rfft(b["audio"][0]))
    assert abs(np.argmax(spec) / len(b["audio"][0]) * 24000 - 220.0) < 5   # clip0's 220 Hz, at 24 kHz


def test_a_missing_rate_or_pseudo_label_settings_are_named(corpus):
    with pytest.raises(FileNotFoundError, match="records_32000.*--sample_rates=16000,32000"):
        tasks.corpus_task("n2m_weak_text", corpus_dir=corpus, sample_rate=32000)
    with pytest.raises(ValueError, match="datasets/pseudo_labels.gin.*PSEUDO_LABELS_DIR"):
        tasks.corpus_task("n2m_pseudo_labels", corpus_dir=corpus)
    with pytest.raises(ValueError, match="corpus_task.name='nope'"):
        tasks.corpus_task("nope", corpus_dir=corpus)


def test_eval_task_has_the_held_out_clips_and_tags(corpus):
    ds = seqio.get_mixture_or_task(tasks.corpus_task("mulan_eval", corpus_dir=corpus)).get_dataset(
        None, split="test", shuffle=False)
    exs = list(ds.as_numpy_iterator())
    assert {e["clip_id"].decode() for e in exs} == {"clip2", "clip5"}
    assert all([t.decode() for t in e["tag_instrument"]] == ["synth"] for e in exs)
