"""`python -m noise2music.train --gin_file=noise2music/STAGE.gin --model_dir=DIR [--gin.NAME=VALUE ...]`.

Noise2Music stage training through the shared `trainer.train.train` (resume, checkpoints, EMA,
metrics, multi-host, preemption).  The last line of stdout is one JSON object with the run's figures.

    python -m noise2music.train --gin_file=noise2music/tiny_generator.gin --model_dir=/tmp/n2m_gen
"""
from trainer.launch import train_from_flags


def main(argv: list[str] | None = None) -> dict:
    return train_from_flags(argv, __doc__)


if __name__ == "__main__":
    main()
