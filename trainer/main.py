"""`python -m trainer.main --gin_file=... [--gin.NAME=VALUE ...] --model_dir=DIR`.

Runs the gin-configured `trainer.train.train` and prints, as the last line of
stdout, one JSON object with the run's figures.  Model families expose the
same binary (`python -m mulan.train`, `python -m noise2music.train`) after
importing their own configurables.

Example (the toy model, a minute on a laptop):
    python -m trainer.main --gin_file=toy/tiny_cpu.gin --model_dir=/tmp/toy
"""
from __future__ import annotations

import json
import logging
import sys

from trainer import flags as flags_lib


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s", datefmt="%H:%M:%S")
    for ours in ("trainer", "mulan", "noise2music", "data"):
        logging.getLogger(ours).setLevel(logging.INFO)
    # gin probes every include as a Python package path first and logs each miss.
    for h in logging.getLogger().handlers:
        h.addFilter(lambda r: "gin/resource_reader" not in r.pathname)


def import_configurables(modules: tuple[str, ...] = ()) -> None:
    """Importing registers the configurables the gin files refer to."""
    import importlib

    for m in ("trainer.train", "trainer.optimizers", "trainer.toy", "trainer.input_pipeline", *modules):
        importlib.import_module(m)


def main(argv: list[str] | None = None, *, usage: str = __doc__, modules: tuple[str, ...] = ()) -> dict:
    """Parses flags, initialises multi-host JAX, trains. `modules` register a family's configurables."""
    setup_logging()
    import_configurables(modules)
    from trainer import multihost, train

    try:
        flags_lib.parse_and_apply(argv, usage)
    except flags_lib.FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    multihost.initialize()
    try:
        result = train.train()
    except (train.ConfigError, train.CheckpointRestoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except train.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    print(f"\n{result['status']} at step {result['step']}. Checkpoints: {result['checkpoint_dir']}; "
          f"metrics: {result['metrics_file']}; TensorBoard: tensorboard --logdir {result['model_dir']}",
          file=sys.stderr)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
