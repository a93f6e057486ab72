"""Exact resume after SIGKILL and SIGTERM, broken checkpoints, NaN losses.

Every run here is the real binary (`python -m trainer.main`) in a subprocess
on 8 fake devices, FSDP x tensor.
"""
import os
import shutil
import signal
import subprocess

import jax
import numpy as np
import pytest

from tests import helpers

LONG = ["--gin.TRAIN_STEPS=120", "--gin.CHECKPOINT_PERIOD=10"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 120-step run (once per test run)."""
    def run(d):
        out = helpers.last_json(helpers.run_train(d, *LONG).stdout)
        assert out["status"] == "completed" and out["step"] == 120 and out["start_step"] == 0
        return d

    return helpers.once(tmp_path_factory, "resume_reference", run)


def _start_and_signal(model_dir, sig, after_step, while_stopped=None):
    """Starts a run and sends `sig` once it has logged `after_step`.  With `while_stopped`, the
    run is first stopped (SIGSTOP: alive, holding its lock) while `while_stopped()` runs."""
    p = subprocess.Popen(helpers.train_cmd(model_dir, *LONG), cwd=helpers.ROOT, env=helpers.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if f"step {after_step}/120" in line:
            if while_stopped:
                p.send_signal(signal.SIGSTOP)
                while_stopped()
            p.send_signal(sig)
            break
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def _assert_same_run(model_dir, reference):
    ref_losses, losses = helpers.losses(reference), helpers.losses(model_dir)
    assert sorted(losses) == list(range(1, 121))
    assert losses == ref_losses  # Exactly equal, step by step.
    a, b = helpers.final_params(model_dir, 120), helpers.final_params(reference, 120)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # Bit-identical.


def test_sigkill_then_resume_is_exact_and_a_second_writer_is_refused(tmp_path, reference):
    d = str(tmp_path)
    second = {}

    def launch_a_second_writer():
        second["p"] = helpers.run_train(d, *LONG, check=False)

    rc, out, _ = _start_and_signal(d, signal.SIGKILL, after_step=25, while_stopped=launch_a_second_writer)
    assert rc == -signal.SIGKILL and not out.strip()  # Killed before it finished.
    # While the first run lived, a second launch on its model_dir was refused, changing nothing.
    p = second["p"]
    assert p.returncode == 2 and "is being written by another run: pid" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert len(os.listdir(os.path.join(d, "launches"))) == 1
    # The killed run's lock is stale: the next launch takes it over, says so, and resumes exactly.
    p = helpers.run_train(d, *LONG)
    assert "Taking over the stale lock" in p.stderr and "is no longer running" in p.stderr
    resumed = helpers.last_json(p.stdout)
    assert 0 < resumed["start_step"] < 120 and resumed["step"] == 120
    assert not os.path.exists(os.path.join(d, "LOCK"))      # Released at the end.
    launches = sorted(os.listdir(os.path.join(d, "launches")))
    assert len(launches) == 2 and launches[1].endswith(f"-step{resumed['start_step']}.gin")
    _assert_same_run(d, reference)


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, reference):
    d = str(tmp_path)
    rc, out, err = _start_and_signal(d, signal.SIGTERM, after_step=25)
    assert rc == 0, err[-2000:]
    first = helpers.last_json(out)
    assert first["status"] == "preempted" and 25 <= first["step"] < 120
    assert os.path.isdir(os.path.join(d, "checkpoints", str(first["step"])))
    resumed = helpers.last_json(helpers.run_train(d, *LONG).stdout)
    assert resumed["start_step"] == first["step"]
    _assert_same_run(d, reference)


def test_half_written_and_damaged_checkpoints_are_set_aside_and_saved_again(tmp_path, reference):
    d = str(tmp_path)
    ckpts = os.path.join(d, "checkpoints")
    shutil.copytree(os.path.join(reference, "checkpoints"), ckpts)
    for step in range(40, 130, 10):
        shutil.rmtree(os.path.join(ckpts, str(step)))
    # What a kill during the save of step 40 leaves: Orbax's tmp dir, half its files.
    tmp = os.path.join(ckpts, "40.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(ckpts, "30"), tmp)
    for root, _, files in os.walk(tmp):
        for f in files[::2]:
            os.remove(os.path.join(root, f))
    # And a finished step 30 with one flipped byte in its array data: it would restore silently.
    data = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ckpts, "30", "state", "d")) for f in fs]
    with open(data[0], "r+b") as fh:
        fh.seek(os.path.getsize(data[0]) // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x10]))
    shutil.copy(os.path.join(reference, "metrics.jsonl"), os.path.join(d, "metrics.jsonl"))
    p = helpers.run_train(d, *LONG)
    assert "Incomplete checkpoint" in p.stderr and "40.orbax-checkpoint-tmp" in p.stderr
    assert "fails its integrity check" in p.stderr and os.path.basename(data[0]) in p.stderr
    assert helpers.last_json(p.stdout)["start_step"] == 20
    aside = sorted(os.listdir(os.path.join(d, "checkpoints_aside")))
    assert [a.split("-")[0] for a in aside] == ["30", "40.orbax"], aside
    assert "SHA-256" in open(os.path.join(d, "checkpoints_aside", aside[0], "REASON.txt")).read()
    # Step 30 was saved again, intact.
    from trainer.checkpoints import check_integrity
    from etils import epath

    assert os.path.isdir(os.path.join(ckpts, "30")) and check_integrity(epath.Path(ckpts) / "30") is None
    _assert_same_run(d, reference)


def test_nan_loss_is_a_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    d = str(tmp_path)
    p = helpers.run_train(d, "--gin.warmup_cosine.peak_value=1e30", "--gin.warmup_cosine.warmup_steps=1",
                          check=False)
    assert p.returncode == 3, p.stderr[-2000:]
    assert "error: loss is" in p.stderr and "at step" in p.stderr
    steps = sorted(int(s) for s in os.listdir(os.path.join(d, "checkpoints")) if s.isdigit())
    bad = int(p.stderr.split("at step ")[1].split(";")[0])
    assert all(s < bad for s in steps)


def test_init_from_starts_a_new_run_from_another_runs_params(tmp_path, reference):
    d = str(tmp_path)
    src = os.path.join(reference, "checkpoints", "120")
    # Learning rate 0: the new run's params stay exactly those it was initialised from.
    out = helpers.last_json(helpers.run_train(
        d, "--gin.TRAIN_STEPS=2", f"--gin.CheckpointConfig.init_from='{src}'",
        "--gin.adam.learning_rate=0.0").stdout)
    assert out["start_step"] == 0 and out["step"] == 2
    jax.tree.map(np.testing.assert_array_equal, helpers.final_params(d, 2), helpers.final_params(reference, 120))
    # A run that already has checkpoints ignores init_from and resumes.
    again = helpers.last_json(helpers.run_train(
        d, "--gin.TRAIN_STEPS=3", f"--gin.CheckpointConfig.init_from='{src}'",
        "--gin.adam.learning_rate=0.0").stdout)
    assert again["start_step"] == 2
    # Checkpoints that do not fit this run's state (another optimizer) are an error, not a restart.
    p = helpers.run_train(d, "--gin.TRAIN_STEPS=4", check=False)
    assert p.returncode == 2 and "does not match this run's train state" in p.stderr
    assert helpers.last_json(helpers.run_train(d, "--gin.TRAIN_STEPS=3", "--gin.adam.learning_rate=0.0").stdout)["step"] == 3


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path):
    """A 16 MiB filesystem filled up between two launches: one `error:` line (the folder and the
    space left; the last line of stderr when the save is what fails), exit 2; with space again,
    the run resumes from the newest complete step."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        d, every_2 = str(mnt / "run"), "--gin.CHECKPOINT_PERIOD=2"
        helpers.run_train(d, "--gin.TRAIN_STEPS=4", every_2)
        filler = mnt / "filler"
        filler.write_bytes(bytes(shutil.disk_usage(mnt).free - 60 * 1024))
        p = helpers.run_train(d, "--gin.TRAIN_STEPS=8", every_2, check=False)
        errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
        assert p.returncode == 2 and len(errors) == 1, p.stderr[-3000:]
        assert "no space left on device" in errors[0] and "MiB free of 16.0 MiB" in errors[0], errors
        filler.unlink()
        out = helpers.last_json(helpers.run_train(d, "--gin.TRAIN_STEPS=8", every_2).stdout)
        assert out["start_step"] == 4 and out["step"] == 8
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
