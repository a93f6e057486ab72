"""Shared helpers: running the real training binary in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small, fast toy run: 8 fake devices, FSDP x tensor, checkpoints every 4 steps.
TINY = [
    "--gin_file=toy/tiny_cpu.gin",
    "--gin_file=mesh/fsdp_tensor.gin",
    "--gin.Partitioner.mesh_shape=(1, 4, 2)",
    "--gin.TRAIN_STEPS=12",
    "--gin.BATCH_SIZE=16",
    "--gin.CHECKPOINT_PERIOD=4",
    "--gin.train.log_period=1",
    "--gin.train.eval_period=0",
    "--gin.CheckpointConfig.keep=None",
    # Fixed schedule length, so runs of different lengths share a trajectory.
    "--gin.warmup_cosine.decay_steps=1000",
]


def env(devices: int = 8, base: dict | None = None, **extra: str) -> dict[str, str]:
    """The environment of a test process with `devices` fake CPU devices (on top of `base`, default
    this process's environment).

    XLA:CPU runs without LLVM's optimisations (`--xla_backend_optimization_level=0`).
    The tests run a handful of steps of tiny models, in-process (tests/conftest.py) and in the
    binaries they launch, so compiling is most of their time: this cuts a tiny generator run from
    129 s to 107 s on 2 cores (the steps run ~40% slower).  The results agree with the optimised
    code to float rounding (the tests' tolerances hold both); every user run keeps XLA's default."""
    e = dict(os.environ if base is None else base)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    e["PYTHONUNBUFFERED"] = "1"
    e["JAX_PLATFORMS"] = "cpu"     # libtpu is installed (for the topology compiles); no TPU is used
    # No persistent compilation cache, even if the user's environment names one: with jaxlib 0.10.2
    # an executable read back from it can deadlock the fake devices' collectives (README, Tests).
    e["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    e.update(extra)
    return e


def once(tmp_path_factory, name: str, build):
    """`build(folder)`'s JSON-able result, built once per test run even with several pytest-xdist
    workers (they share the parent of their temporary folders; a file lock orders them)."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    done = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder = root / name
            folder.mkdir(exist_ok=True)
            done.write_text(json.dumps(build(str(folder))))
        return json.loads(done.read_text())


def train_cmd(model_dir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainer.main", *TINY, f"--model_dir={model_dir}", *extra]


def run_train(model_dir: str, *extra: str, check: bool = True, timeout: int = 300, **env_extra):
    p = subprocess.run(train_cmd(model_dir, *extra), cwd=ROOT, env=env(**env_extra),
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"training failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def losses(model_dir: str) -> dict[int, float]:
    from trainer.metrics import read_jsonl

    return {r["step"]: r["loss"] for r in read_jsonl(os.path.join(model_dir, "metrics.jsonl"))}


def final_params(model_dir: str, step: int):
    """The params of checkpoint `step`, as numpy, read back with Orbax."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from trainer.checkpoints import Checkpointer

    path = str(Checkpointer(model_dir, read_only=True).step_dir(step) / "state")
    ckptr = ocp.PyTreeCheckpointer()
    tree = ckptr.metadata(path).item_metadata.tree
    # To host numpy: independent of the topology that wrote it.
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, restore_args=args)["params"]
