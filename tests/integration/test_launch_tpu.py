"""launch_tpu.sh --dry-run prints the gcloud commands it would run on every worker."""
import subprocess

from tests import helpers


def _dry(*args, **env):
    p = subprocess.run(["bash", "launch_tpu.sh", "--dry-run", *args], cwd=helpers.ROOT,
                       env=helpers.env(TPU_NAME="pod1", ZONE="zone-a", **env), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_dry_run_commands():
    assert "tpus tpu-vm create pod1 --zone=zone-a --accelerator-type=v4-32" in _dry("create", ACCELERATOR_TYPE="v4-32")
    setup = _dry("setup")
    assert "git archive" in setup and "--worker=all" in setup and "pip install" in setup and ".[tpu]" in setup
    run = _dry("run", "mulan", "--gin_file=mulan/ast.gin", "--model_dir=gs://b/x")
    assert "--worker=all" in run and "python -m mulan.train" in run and "gs://b/x" in run and "run.pid" in run
    assert "python -m trainer.main" in _dry("run", "trainer", "--gin_file=toy/tiny_cpu.gin")
    stop = _dry("stop")
    assert "kill -TERM" in stop and "run.pid" in stop
    assert "tpus tpu-vm delete pod1" in _dry("delete")
    compile_ = _dry("compile", "--gin_file=mulan/ast.gin", ACCELERATOR_TYPE="v5p-128")
    assert "-m trainer.compile --accelerator_type=v5p-128 --gin_file=mulan/ast.gin" in compile_


def test_unknown_command_shows_usage():
    p = subprocess.run(["bash", "launch_tpu.sh", "frobnicate"], cwd=helpers.ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and "launch_tpu.sh" in p.stdout
