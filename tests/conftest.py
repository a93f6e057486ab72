"""Test set-up: 8 fake CPU devices, set before anything imports JAX."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The `tiny` corpus preset (18 clips of real rendered music, a third held out), plus one
    broken user MIDI file that must be skipped and reported.  Built once per session (~20 s).

    Returns (corpus dir, build report, manifest rows)."""
    import json

    from data import build_corpus

    out = str(tmp_path_factory.mktemp("corpus"))
    midi_dir = tmp_path_factory.mktemp("user_midi")
    (midi_dir / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06 this is not a MIDI file")
    report = build_corpus.build("tiny", out, seed=0, workers=2, test_fraction=0.35, midi_dirs=[str(midi_dir)],
                                records_per_shard=4, progress=False)
    rows = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    return out, report, rows
