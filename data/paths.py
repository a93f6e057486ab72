"""Where the corpus is: the gin macro `CORPUS_DIR` (configs/datasets/corpus.gin), or the demo cache.

`CORPUS_DIR = None` (the default) means the per-user cache folder
`$N2M_CACHE_DIR` or `$XDG_CACHE_HOME/noise2music` or `~/.cache/noise2music`, + `/corpus/demo`.
When the demo corpus is missing there, the first task that reads it builds it (saying so; about a
minute on 2 cores). A corpus folder a user names must already hold a built corpus.
"""
from __future__ import annotations

import fcntl
import logging
import os

import gin

log = logging.getLogger(__name__)


def cache_dir() -> str:
    root = os.environ.get("N2M_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "noise2music")
    return os.path.abspath(root)


def default_corpus_dir() -> str:
    return os.path.join(cache_dir(), "corpus", "demo")


def is_built(path: str) -> bool:
    return os.path.exists(os.path.join(path, "corpus.json"))


@gin.configurable
def corpus_dir(path: str | None = None, build_demo_if_missing: bool = True) -> str:
    """The corpus folder; builds the demo corpus into the default cache folder on first use."""
    if path:
        path = os.path.abspath(os.path.expanduser(path))
        if not is_built(path):
            raise FileNotFoundError(
                f"CORPUS_DIR={path} holds no built corpus (no corpus.json); build one with "
                f"`python -m data.build_corpus --preset demo --out {path}`.")
        return path
    path = default_corpus_dir()
    if not is_built(path):
        if not build_demo_if_missing:
            raise FileNotFoundError(f"no corpus at {path}; set CORPUS_DIR or build one with data.build_corpus")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, ".build.lock"), "w") as lock:  # one builder per machine
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_built(path):
                from data import build_corpus

                print(f"[data] no corpus at {path}: building the demo corpus there (first run only, "
                      f"about a minute)", flush=True)
                build_corpus.build("demo", path)
    return path
