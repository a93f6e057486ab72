"""MuLan end to end on a real (tiny) corpus: the training binary through seqio, kill-and-resume
continuing exactly, then the evaluation and embedding binaries on the trained checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import helpers


def _args(corpus_dir, steps=6):
    from tests.conftest import TINY_MULAN_ARGS

    return [*TINY_MULAN_ARGS, f"--gin.TRAIN_STEPS={steps}", f"--gin.CORPUS_DIR='{corpus_dir}'"]


def _cmd(model_dir, corpus_dir, *extra):
    return [sys.executable, "-m", "mulan.train", *_args(corpus_dir), f"--model_dir={model_dir}", *extra]


def _run(cmd, timeout=400):
    p = subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


@pytest.fixture(scope="module")
def reference_run(tiny_mulan):
    return tiny_mulan


def test_train_logs_mulan_metrics(reference_run):
    d, _ = reference_run
    from trainer.metrics import read_jsonl

    rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert np.isfinite(r["loss"]) and 0 < r["temperature"] <= 1
        for k in ("acc_audio_to_text", "acc_text_to_audio", "audio_norm", "text_norm", "cos_positive"):
            assert k in r
    assert abs(rows[0]["loss"] - rows[0]["chance_loss"]) < 0.5  # untrained: near ln(2 (B - 1))
    cfg = open(os.path.join(d, "config.gin")).read()
    assert "MulanModel.loss_type = 'mulan'" in cfg and "mulan_weak_text" in cfg


def test_sigkill_then_resume_continues_exactly(reference_run, tmp_path):
    ref, corpus_dir = reference_run
    d = str(tmp_path)
    p = subprocess.Popen(_cmd(d, corpus_dir), cwd=helpers.ROOT, env=helpers.env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill as soon as the step-2 checkpoint is finalised (Orbax renames its temporary folder to
    # "2" when the async save commits), i.e. in the middle of the run.
    deadline = time.time() + 300
    while not os.path.isdir(os.path.join(d, "checkpoints", "2")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    out = helpers.last_json(_run(_cmd(d, corpus_dir)).stdout)
    assert out["start_step"] in (2, 4) and out["step"] == 6
    assert helpers.losses(d) == helpers.losses(ref)  # the same batches, the same numbers
    jax.tree.map(np.testing.assert_array_equal, helpers.final_params(d, 6), helpers.final_params(ref, 6))


def test_evaluate_reports_tagging_retrieval_and_probe(reference_run, tmp_path):
    d, corpus_dir = reference_run
    out_file = str(tmp_path / "eval.json")
    p = _run([sys.executable, "-m", "mulan.evaluate", f"--model_dir={d}", "--no_progress", f"--out={out_file}",
              "--min_positives=1"])
    summary = helpers.last_json(p.stdout)
    assert summary["step"] == 6 and summary["results_file"] == out_file
    full = json.load(open(out_file))
    rows = [json.loads(x) for x in open(os.path.join(corpus_dir, "manifest.jsonl"))]
    assert full["num_clips"] == sum(r["split"] == "test" for r in rows)
    inst = full["zero_shot"]["instrument"]
    assert inst["num_tags"] > 0 and 0.0 <= inst["macro_roc_auc"] <= 1.0
    for tag, v in inst["per_tag"].items():
        assert v["positives"] >= 1 and (np.isnan(v["roc_auc"]) or 0 <= v["roc_auc"] <= 1)
    t2a = full["retrieval"]["text_to_audio"]
    assert t2a["chance_r@10"] == min(1.0, 10 / full["num_clips"]) and 1 <= t2a["median_rank"] <= full["num_clips"]
    assert "instrument" in full["linear_probe"]
    assert "zero-shot tagging" in p.stderr and "retrieval" in p.stderr


def test_embed_writes_shards_and_index_and_skips_bad_audio(reference_run, tmp_path):
    d, corpus_dir = reference_run
    audio = tmp_path / "audio"
    audio.mkdir()
    import soundfile as sf

    src = sorted(os.listdir(os.path.join(corpus_dir, "audio")))[:2]
    for name in src:
        os.link(os.path.join(corpus_dir, "audio", name), audio / name)
    sf.write(str(audio / "short.flac"), np.sin(np.arange(24000) / 10.0).astype(np.float32) * 0.3, 16000)
    # A 65 s stereo 44.1 kHz file: longer than embed's 60 s, so read and embedded block by block.
    from data import audio as audio_lib

    x = np.concatenate([audio_lib.load_audio(os.path.join(corpus_dir, "audio", n), 44100)[0] for n in src] * 20)
    sf.write(str(audio / "long.wav"), np.stack([x[:65 * 44100], 0.5 * x[:65 * 44100]], 1), 44100)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    texts = tmp_path / "texts.txt"
    texts.write_text("solo piano\na jazz trio with drums\n" + "very long text " * 200 + "\n")
    out = tmp_path / "emb"
    p = _run([sys.executable, "-m", "mulan.embed", f"--model_dir={d}", f"--audio_dir={audio}",
              f"--texts={texts}", f"--out={out}", "--batch_size=8", "--shard_size=2", "--no_progress"])
    s = helpers.last_json(p.stdout)
    assert s["audio_clips"] == 4 and s["failures"] == 1 and s["texts"] == 3 and s["texts_truncated"] == 1
    fail = [json.loads(x) for x in open(out / "failures.jsonl")]
    assert fail[0]["id"] == "corrupt.wav" and "corrupt.wav" in fail[0]["reason"]
    index = [json.loads(x) for x in open(out / "audio_index.jsonl")]
    assert [r["id"] for r in index] == sorted(src + ["long.wav", "short.flac"])
    short = next(r for r in index if r["id"] == "short.flac")
    assert short["windows"] == 1 and short["seconds"] == 1.5  # padded to one 10 s window
    emb = np.concatenate([np.load(out / f"audio-{i:05d}-of-00002.npy") for i in range(2)])
    assert emb.shape == (4, 128)
    # The streamed file's embedding is the whole file's, read at once.
    from mulan.inference import Encoder

    enc = Encoder.from_run(d)
    whole = enc.embed_audio_clips([audio_lib.load_audio(str(audio / "long.wav"), 16000)[0]])[0]
    k = [r["id"] for r in index].index("long.wav")
    assert index[k]["windows"] == 65 * 16000 // enc.window
    np.testing.assert_allclose(emb[k], whole, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    t = np.load(out / "text-00000-of-00002.npy")
    assert t.shape == (2, 128) and [json.loads(x)["text"] for x in open(out / "text_index.jsonl")][0] == "solo piano"
    # A seqio task of data.tasks on the corpus (in-process: the binary's main).
    from mulan import embed

    s = embed.main([f"--model_dir={d}", "--task=mulan_eval", f"--corpus={corpus_dir}", "--limit=2",
                    f"--out={tmp_path / 'task'}", "--no_progress"])
    assert s["audio_clips"] == 2 and [json.loads(x)["source"] for x in open(tmp_path / "task" / "audio_index.jsonl")] \
        == ["mulan_eval:test"] * 2


def test_checkpoint_from_another_config_names_the_parameter(reference_run):
    from mulan.inference import Encoder
    from trainer.checkpoints import CheckpointRestoreError

    d, _ = reference_run
    with pytest.raises(CheckpointRestoreError, match=r"audio_tower/cls_token has shape \(32,\) in the checkpoint "
                                                     r"but \(48,\) in the model"):
        Encoder.from_run(d, bindings=["ast_tower.dim=48"])
    with pytest.raises(CheckpointRestoreError, match="text_tower/encoder/layer_1 is in the model but not"):
        Encoder.from_run(d, bindings=["bert_tower.num_layers=2"])
    enc = Encoder.from_run(d)
    assert enc.step == 6 and enc.dim == 128
