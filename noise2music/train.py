"""`python -m noise2music.train --gin_file=noise2music/STAGE.gin --model_dir=DIR [--gin.NAME=VALUE ...]`.

Noise2Music stage training through the shared `trainer.train.train` (resume, checkpoints, EMA,
metrics, multi-host, preemption).  The last line of stdout is one JSON object with the run's figures.

    python -m noise2music.train --gin_file=noise2music/tiny_generator.gin --model_dir=/tmp/n2m_gen
"""
from __future__ import annotations

from trainer import main as trainer_main

CONFIGURABLES = ("noise2music.model", "data.feature_converters", "data.paths", "data.tasks")


def main(argv: list[str] | None = None) -> dict:
    return trainer_main.main(argv, usage=__doc__, modules=CONFIGURABLES)


if __name__ == "__main__":
    main()
