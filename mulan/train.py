"""`python -m mulan.train --gin_file=mulan/CONFIG.gin --model_dir=DIR [--gin.NAME=VALUE ...]`.

MuLan training through the shared `trainer.train.train` (resume, checkpoints, metrics, multi-host,
preemption).  The last line of stdout is one JSON object with the run's figures.

    python -m mulan.train --gin_file=mulan/tiny_cpu.gin --model_dir=/tmp/mulan_tiny
"""
from trainer.launch import train_from_flags


def main(argv: list[str] | None = None) -> dict:
    return train_from_flags(argv, __doc__)


if __name__ == "__main__":
    main()
