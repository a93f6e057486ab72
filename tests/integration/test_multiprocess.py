"""Two real processes (jax.distributed over loopback, gloo CPU collectives,
2 x 4 devices) train the same global batch to the same losses as one process
with 8 devices."""
import json
import os
import socket
import subprocess

import jax
import numpy as np

from tests import helpers

STEPS = ["--gin.TRAIN_STEPS=8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    single = str(tmp_path / "single")
    helpers.run_train(single, *STEPS)

    multi = str(tmp_path / "multi")
    port = _free_port()
    procs = [
        subprocess.Popen(
            helpers.train_cmd(multi, *STEPS), cwd=helpers.ROOT,
            env=helpers.env(devices=4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                            JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "process 1 of 2, 4 local / 8 global devices" in outs[1][1]
    results = [helpers.last_json(out) for out, _ in outs]
    assert results[0]["step"] == results[1]["step"] == 8
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"])

    a, b = helpers.losses(multi), helpers.losses(single)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=1e-5)
    # Only process 0 wrote metrics; both wrote their input-pipeline position.
    assert os.path.exists(os.path.join(multi, "metrics.jsonl"))
    data_dir = os.path.join(multi, "checkpoints", "8", "data")
    assert sorted(os.listdir(data_dir))[-2:] == ["process_0.state", "process_1.state"]
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
                 helpers.final_params(multi, 8), helpers.final_params(single, 8))


def test_a_corpus_run_resumes_on_another_number_of_processes_and_devices(tiny_mulan, tmp_path):
    """Elastic resume (common/order.py): the tiny MuLan on the tiny corpus, 2 processes x 4 devices
    to the step-2 checkpoint, then 1 process x 4 devices to step 6, sees the global batches of the
    1 x 8 run and gives its losses; the input position saved per process is a few integers."""
    import json
    import sys

    from tests.conftest import TINY_MULAN_ARGS

    ref, corpus_dir = tiny_mulan
    d = str(tmp_path / "elastic")

    def cmd(steps):
        return [sys.executable, "-m", "mulan.train", *TINY_MULAN_ARGS, f"--gin.TRAIN_STEPS={steps}",
                f"--gin.CORPUS_DIR='{corpus_dir}'", f"--model_dir={d}"]

    port = _free_port()
    procs = [subprocess.Popen(cmd(2), cwd=helpers.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=helpers.env(devices=4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                              JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    states = [json.loads(open(os.path.join(d, "checkpoints", "2", "data", f"process_{i}.state")).read())
              for i in range(2)]
    assert [(s["host"], s["num_hosts"], s["next"]) for s in states] == [(0, 2, [8]), (1, 2, [8])]

    p = subprocess.run(cmd(6), cwd=helpers.ROOT, env=helpers.env(devices=4), capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    out = helpers.last_json(p.stdout)
    assert (out["start_step"], out["step"]) == (2, 6)
    assert "input position: from 2 host(s) x 4 examples to host 0 of 1 x 8" in p.stderr
    a, b = helpers.losses(d), helpers.losses(ref)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    np.testing.assert_allclose([a[s] for s in range(1, 7)], [b[s] for s in range(1, 7)], rtol=1e-4)


def _on_processes(cmd: list[str], n: int, devices: int, timeout: int = 400) -> list[dict]:
    """`cmd` as one job of `n` processes with `devices` each (over loopback); their last JSON lines."""
    port = _free_port()
    procs = [subprocess.Popen(cmd, cwd=helpers.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=helpers.env(devices=devices, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                              JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i)))
             for i in range(n)] if n > 1 else [
        subprocess.Popen(cmd, cwd=helpers.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=helpers.env(devices=devices))]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [helpers.last_json(out) for out, _ in outs]


def test_embedding_and_pseudo_labels_on_two_processes_equal_one_process(tiny_mulan, tmp_path):
    """`mulan.embed` and the pseudo-label build, run as the same command on 2 processes x 4 devices,
    write what 1 process x 8 devices writes: the same rows in the same order, the same embeddings,
    the same selection counts (summed over the hosts) and the same labels."""
    import sys

    from data.embedding_store import read_embeddings
    from pseudo_labels import write_bank

    mulan, corpus_dir = tiny_mulan
    bank = str(tmp_path / "bank")
    write_bank.main(["--corpus", corpus_dir, "--out", bank, "--writers", "template", "--samples", "template=3",
                     "--no_progress"])
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"caption number {i}\n" for i in range(11)))
    manifest = os.path.join(corpus_dir, "manifest.jsonl")
    got = {}
    for name, n, devices in (("one", 1, 8), ("two", 2, 4)):
        d = tmp_path / name
        emb = _on_processes([sys.executable, "-m", "mulan.embed", f"--model_dir={mulan}", f"--manifest={manifest}",
                             f"--texts={texts}", f"--out={d / 'emb'}", "--no_progress"], n, devices)
        assert all(e["audio_clips"] == emb[0]["audio_clips"] > 10 and e["texts"] == 11 for e in emb)
        lab = _on_processes([sys.executable, "-m", "pseudo_labels.label", f"--model_dir={mulan}", f"--bank={bank}",
                             f"--corpus={corpus_dir}", f"--out={d / 'labels'}", "--no_progress"], n, devices)
        assert lab[0]["clips"] == emb[0]["audio_clips"]
        got[name] = d
    one, two = got["one"], got["two"]
    for folder, kinds in (("emb", ("audio", "text")), ("labels/embeddings", ("captions", "tags", "clips"))):
        for kind in kinds:
            ids1, e1, _ = read_embeddings(str(one / folder), kind)
            ids2, e2, rows2 = read_embeddings(str(two / folder), kind)
            assert ids1 == ids2, (folder, kind)
            np.testing.assert_allclose(e1, e2, atol=2e-5)
            assert {r["shard"].split("-")[1] for r in rows2} == {"p00000", "p00001"}   # each host wrote its own
    assert sorted(os.listdir(two / "emb")) == sorted(
        f for f in os.listdir(two / "emb") if "_index.p" not in f and "_failures.p" not in f)
    c1, c2 = np.load(one / "labels" / "counts.npz"), np.load(two / "labels" / "counts.npz")
    for kind in ("captions", "tags"):
        np.testing.assert_array_equal(c1[kind], c2[kind])
        assert c1[kind].dtype == c2[kind].dtype
    lines = [[json.loads(x) for x in open(d / "labels" / "labels.jsonl")] for d in (one, two)]
    assert [[c["id"] for c in r["captions"]] for r in lines[0]] == [[c["id"] for c in r["captions"]] for r in lines[1]]
