"""What every binary of the project shares: logging, error exits and the JSON last line.

    def main(argv=None):
        cli.setup_logging()
        with cli.exit_on(ValueError, FileNotFoundError):      # 'error: ...' on stderr, exit status 2
            result = work(...)
        return cli.print_json(result)                          # the last line of stdout

Binaries are thin: argument parsing and this plumbing; the work is in libraries.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from typing import Iterator

# The project's packages; their loggers print INFO, everything else WARNING and above.
PACKAGES = ("common", "layers", "trainer", "data", "mulan", "pseudo_labels", "noise2music", "music_eval")


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s", datefmt="%H:%M:%S")
    for name in PACKAGES:
        logging.getLogger(name).setLevel(logging.INFO)
    # gcsfs warns on every bucket it cannot ask the storage-layout API about (any bucket without
    # those credentials, e.g. a local emulator's), and then works as usual.
    logging.getLogger("gcsfs").setLevel(logging.ERROR)
    # Orbax logs a failed background write with its traceback from every thread it passes through;
    # a full disk then reaches the binary, which names it in one line (`exit_on`).
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_drop_disk_full)


def _drop_disk_full(record: logging.LogRecord) -> bool:
    from common import paths

    exc = record.exc_info[1] if record.exc_info else None
    return not ((exc is not None and paths.disk_full(exc)) or paths.disk_full(record.getMessage()))


def fail(message: str, code: int = 2, *, hard: bool = False) -> None:
    """Prints `error: message` on stderr and exits with `code` (2: bad input or settings).
    `hard`: skip the interpreter's shutdown, for a binary that has closed everything it wrote
    (after a failed checkpoint save, TensorStore's pending write callbacks would each print a
    traceback into Orbax's closed event loop at shutdown, after this message)."""
    if hard:
        sys.stdout.flush()
        sys.stderr.flush()
        err = os.dup(2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)    # Other threads' output goes nowhere now,
        # This line is written whole, last, and on a line of its own: a traceback another thread was
        # printing when stderr was closed can have stopped mid-line.
        os.write(err, f"\nerror: {message}\n".encode())
        os._exit(code)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def exit_on(*errors: type[BaseException], code: int = 2, hard: bool = False) -> Iterator[None]:
    """Turns the listed exceptions into `error: ...` on stderr and exit status `code`, and a full
    disk or quota met anywhere inside into one line naming the file and the space left (exit 2);
    anything else is a bug and keeps its traceback.  `hard`: see `fail`."""
    from common import paths

    try:
        yield
    except errors as e:  # noqa: PERF203
        # gin appends "  In call to configurable 'train' (...)" lines to an error raised inside a
        # configurable; the message already names the binding.
        fail(re.sub(r"\n\s*In call to configurable '[^']*' \(<[^>]*>\)", "", str(e)), code, hard=hard)
    except OSError as e:
        if not paths.disk_full(e):
            raise
        where = e.filename or ""
        fail(f"{where}: no space left on device{paths.free_space(where) if where else ''}", 2)


def print_json(result: dict) -> dict:
    """The binary's figures as one JSON object, the last line of stdout."""
    print(json.dumps(result), flush=True)
    return result


# -- trusting a run's gin config -------------------------------------------------
# A gin file can import any module, and importing runs its code.  Loading a run for inference
# parses the run's config, so by default (trainer/restore.py) only imports of the project's own
# packages are allowed in it; `--trust_config` lifts that for one invocation.
_trusted = {"configs": False}


class _TrustConfig(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        _trusted["configs"] = True
        setattr(namespace, self.dest, True)


def add_trust_flag(ap: argparse.ArgumentParser) -> None:
    """`--trust_config`: load runs whose config imports modules outside this project."""
    ap.add_argument("--trust_config", nargs=0, action=_TrustConfig, default=False,
                    help="load a run whose config.gin imports modules outside this project (running "
                         "their code); only for runs from someone you trust")


def configs_trusted() -> bool:
    return _trusted["configs"]


def trust_configs(on: bool = True) -> None:
    _trusted["configs"] = on
