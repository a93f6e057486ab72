"""Audio files (data/audio.py): long files streamed block by block give what reading them whole
gives; files cut short are caught from their containers, whose decoders read them as shorter clips."""
import numpy as np
import pytest
import soundfile as sf

from data import audio


@pytest.mark.parametrize("rate_in,rate_out,channels", [(44100, 16000, 2), (48000, 16000, 1), (16000, 24000, 1),
                                                       (16000, 16000, 1)])
def test_streamed_blocks_equal_the_whole_file(tmp_path, rate_in, rate_out, channels):
    x = (0.3 * np.random.default_rng(0).standard_normal((rate_in * 3 + 77, channels))).astype(np.float32)
    path = str(tmp_path / "x.wav")
    sf.write(path, x, rate_in, subtype="FLOAT")
    blocks = list(audio.stream_audio(path, rate_out, block_seconds=0.5))
    assert max(len(b) for b in blocks) <= 0.5 * rate_out + 1 and len(blocks) >= 6
    np.testing.assert_allclose(np.concatenate(blocks), audio.load_audio(path, rate_out)[0], atol=1e-6)


def test_streaming_names_silent_and_cut_files(tmp_path):
    sf.write(str(tmp_path / "silent.wav"), np.zeros(32000, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="silent"):
        list(audio.stream_audio(str(tmp_path / "silent.wav"), 16000, block_seconds=0.5))
    sf.write(str(tmp_path / "a.wav"), np.full(32000, 0.1, np.float32), 16000)
    raw = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(audio.AudioError, match="data chunk declares"):
        list(audio.stream_audio(str(tmp_path / "cut.wav"), 16000))


@pytest.mark.parametrize("ext,kw,says", [("wav", {}, "data chunk declares"),
                                         ("ogg", {"format": "OGG", "subtype": "VORBIS"}, "Ogg page"),
                                         ("mp3", {"format": "MP3"}, "MP3 frame")])
def test_truncated_files_are_named(tmp_path, ext, kw, says):
    x = (0.3 * np.sin(np.arange(16000 * 4) * 0.05)).astype(np.float32)
    whole = tmp_path / f"whole.{ext}"
    sf.write(str(whole), x, 16000, **kw)
    assert audio.truncation(str(whole)) is None
    raw = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(raw[: int(len(raw) * 0.97)])
    assert says in audio.truncation(str(cut))
    with pytest.raises(audio.AudioError, match="truncated"):
        audio.load_audio(str(cut))
