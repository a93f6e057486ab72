"""Test set-up: 8 fake CPU devices, set before anything imports JAX; the cost markers.

    python -m pytest tests/unit            # fast: no subprocess, no corpus, no training binary (~2 min)
    bash run.sh test                       # everything (unit + integration), what CI runs

Tests under tests/unit are marked `unit`, those under tests/integration `integration` (they build
the tiny corpus, run the binaries in subprocesses, or compile paper-size steps): `-m unit` /
`-m integration` select them.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import helpers  # noqa: E402

os.environ.update(helpers.env(devices=8, base={}))

import gin  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: fast, in-process (tests/unit)")
    config.addinivalue_line("markers", "integration: corpus, binaries or paper-size compiles (tests/integration)")


# The longest tests start first, so that with `-n 2 --dist worksteal` the short ones fill the gaps at
# the end instead of one worker finishing a long compile alone (longest-processing-time-first).
LONGEST_FIRST = ("test_paper_configs.py", "test_n2m_train.py", "test_resume.py", "test_mulan_train.py",
                 "test_n2m_sample.py", "test_gcs.py", "test_n2m_evaluate.py", "test_multiprocess.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = os.path.basename(os.path.dirname(str(item.fspath)))
        if kind in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, kind))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: (rank.get(os.path.basename(str(item.fspath)), len(rank)),
                                 "integration" not in str(item.fspath)))


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The `tiny` corpus preset (18 clips of real rendered music, a third held out), plus one
    broken user MIDI file that must be skipped and reported; audio and records at 16 and 24 kHz.
    Built once per test run (~30 s), whatever the number of workers.

    Returns (corpus dir, build report, manifest rows)."""
    import json

    def build(out):
        from data import corpus

        midi_dir = os.path.join(out, "user_midi")
        os.makedirs(midi_dir, exist_ok=True)
        with open(os.path.join(midi_dir, "broken.mid"), "wb") as f:
            f.write(b"MThd\x00\x00\x00\x06 this is not a MIDI file")
        corpus_dir = os.path.join(out, "corpus")
        report = corpus.build("tiny", corpus_dir, seed=0, workers=2, test_fraction=0.35, midi_dirs=[midi_dir],
                              sample_rates=(16000, 24000), records_per_shard=4, progress=False)
        return corpus_dir, report

    corpus_dir, report = helpers.once(tmp_path_factory, "tiny_corpus", build)
    rows = [json.loads(line) for line in open(os.path.join(corpus_dir, "manifest.jsonl"))]
    return corpus_dir, report, rows


TINY_MULAN_ARGS = [
    "--gin_file=mulan/tiny_cpu.gin",
    "--gin.MulanModel.text_checkpoint=None",   # tiny random towers, no MiniLM
    "--gin.ast_tower.dim=32", "--gin.ast_tower.depth=1", "--gin.ast_tower.num_heads=2",
    "--gin.bert_tower.hidden=32", "--gin.bert_tower.num_layers=1", "--gin.bert_tower.num_heads=2",
    "--gin.bert_tower.mlp_dim=64", "--gin.TEXT_LENGTH=16",
    "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=2",
    "--gin.train.log_period=1", "--gin.CheckpointConfig.keep=None",
    "--gin.warmup_cosine.decay_steps=1000"]


@pytest.fixture(scope="session")
def tiny_mulan(tiny_corpus, tmp_path_factory):
    """A tiny MuLan trained 6 steps on the tiny corpus by the real binary, once per test run:
    (model dir, corpus dir)."""
    import subprocess

    corpus_dir = tiny_corpus[0]

    def train(d):
        cmd = [sys.executable, "-m", "mulan.train", *TINY_MULAN_ARGS, "--gin.TRAIN_STEPS=6",
               f"--gin.CORPUS_DIR='{corpus_dir}'", f"--model_dir={d}"]
        p = subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=400)
        assert p.returncode == 0, p.stderr[-4000:]
        out = helpers.last_json(p.stdout)
        assert out["status"] == "completed" and out["step"] == 6
        return d

    return helpers.once(tmp_path_factory, "tiny_mulan", train), corpus_dir
