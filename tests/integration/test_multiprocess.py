"""Two real processes (jax.distributed over loopback, gloo CPU collectives,
2 x 4 devices) train the same global batch to the same losses as one process
with 8 devices."""
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
