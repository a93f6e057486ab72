"""`python -m trainer.main --gin_file=... [--gin.NAME=VALUE ...] --model_dir=DIR`.

Runs the gin-configured `trainer.train.train` and prints, as the last line of stdout, one JSON
object with the run's figures.  Model families expose the same binary under their own name
(`python -m mulan.train`, `python -m noise2music.train`); the gin files' `import` lines register
the configurables they bind.

Example (the toy model, a minute on a laptop):
    python -m trainer.main --gin_file=toy/tiny_cpu.gin --model_dir=/tmp/toy
"""
from trainer.launch import train_from_flags


def main(argv: list[str] | None = None) -> dict:
    return train_from_flags(argv, __doc__)


if __name__ == "__main__":
    main()
