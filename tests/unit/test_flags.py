"""t5x-style flags: gin files searched in configs/, bindings, clear errors."""
import gin
import pytest

from trainer import flags
from tests import helpers



def _apply(*argv):
    flags.apply(flags.parse_argv(list(argv)))


def test_files_bindings_and_macros():
    _apply("--gin_file=toy/tiny_cpu.gin", "--gin.TRAIN_STEPS=7", "--gin_bindings=train.log_period = 3",
           "--model_dir", "/tmp/x")
    assert gin.query_parameter("%TRAIN_STEPS") == 7
    assert gin.query_parameter("train.log_period") == 3
    assert gin.query_parameter("%MODEL_DIR") == "/tmp/x"
    # The run macros every config honours.
    for m in ("TRAIN_STEPS", "BATCH_SIZE", "CHECKPOINT_PERIOD", "RANDOM_SEED"):
        gin.query_parameter(f"%{m}")


@pytest.mark.parametrize("argv, message", [
    (["--gin_file=toy/nope.gin"], "--gin_file=toy/nope.gin: not found"),
    (["--gin_file=toy/tiny_cpu.gin", "--gin.trian.log_period=3"], "trian"),
    (["--gin_file=toy/tiny_cpu.gin", "--gin.train.log_perod=3"], "log_perod"),
    (["--gin_file=toy/tiny_cpu.gin", "--gin.TRAIN_STEP=3"], "Did you mean TRAIN_STEPS"),
    (["--gin_file=toy/tiny_cpu.gin", "--gin.TRAIN_STEPS"], "expected --gin.NAME=VALUE"),
    (["--steps=3"], "unknown flag '--steps=3'"),
])
def test_bad_flags_name_the_culprit(argv, message):
    with pytest.raises(flags.FlagError, match=message.replace("(", r"\(")):
        _apply(*argv)


def test_binary_exits_2_and_names_a_misspelled_binding(tmp_path):
    p = helpers.run_train(str(tmp_path), "--gin.train.log_perod=3", check=False)
    assert p.returncode == 2
    assert "log_perod" in p.stderr and "error:" in p.stderr


def test_missing_model_dir_is_a_clear_error():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "trainer.main", "--gin_file=toy/tiny_cpu.gin"], cwd=helpers.ROOT,
                       env=helpers.env(devices=1), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "pass --model_dir" in p.stderr


def test_a_full_disk_anywhere_in_a_binary_is_one_line(tmp_path, capsys):
    import errno

    from common import cli

    with pytest.raises(SystemExit) as e:
        with cli.exit_on(ValueError):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith(f"error: {tmp_path}/metrics.jsonl: no space left on device (")
    assert "MiB free of" in err and "\n" not in err
    with pytest.raises(PermissionError):       # Any other OSError is not a user error here.
        with cli.exit_on(ValueError):
            raise PermissionError(errno.EACCES, "denied")
