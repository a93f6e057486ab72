"""Training from the command line: what `python -m trainer.main`, `python -m mulan.train` and
`python -m noise2music.train` run.

Parses the t5x flags (`trainer.flags`; the gin files' `import` lines register the model family's
configurables), starts multi-host JAX, runs the gin-configured `trainer.train.train`, and prints
one JSON object with the run's figures as the last line of stdout.  Exit status 2: a flag, a
binding or a setting that cannot work, a file a setting names that is missing (a corpus not built
yet: the message names the command that builds it), a run directory another run writes, or a save
that failed (a full disk: the folder and the space left are named); 3: a non-finite loss.
"""
from __future__ import annotations

import sys

from common import cli, paths
from trainer import flags as flags_lib


def train_from_flags(argv: list[str] | None = None, usage: str = __doc__) -> dict:
    cli.setup_logging()
    from trainer import multihost, train  # train registers the configurables every config binds

    with cli.exit_on(flags_lib.FlagError):
        flags_lib.parse_and_apply(argv, usage)
    multihost.initialize()
    with cli.exit_on(train.NonFiniteLossError, code=3), \
            cli.exit_on(train.CheckpointSaveError, hard=True), \
            cli.exit_on(train.ConfigError, train.CheckpointRestoreError, FileNotFoundError, paths.PathError):
        result = train.train()
    print(f"\n{result['status']} at step {result['step']}. Checkpoints: {result['checkpoint_dir']}; "
          f"metrics: {result['metrics_file']}; TensorBoard: tensorboard --logdir {result['model_dir']}",
          file=sys.stderr)
    return cli.print_json(result)
