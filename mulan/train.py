"""`python -m mulan.train --gin_file=mulan/CONFIG.gin --model_dir=DIR [--gin.NAME=VALUE ...]`.

MuLan training through the shared `trainer.train.train` (resume, checkpoints, metrics, multi-host,
preemption).  The last line of stdout is one JSON object with the run's figures.

    python -m mulan.train --gin_file=mulan/tiny_cpu.gin --model_dir=/tmp/mulan_tiny
"""
from __future__ import annotations

from trainer import main as trainer_main

CONFIGURABLES = ("mulan.model", "layers.audio_frontend", "mulan.audio_towers", "mulan.text_tower",
                 "data.feature_converters", "data.paths", "data.tasks")


def main(argv: list[str] | None = None) -> dict:
    return trainer_main.main(argv, usage=__doc__, modules=CONFIGURABLES)


if __name__ == "__main__":
    main()
