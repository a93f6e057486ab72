"""Where corpora are: a folder a user names (`CORPUS_DIR`), or the per-user cache.

The cache is `$N2M_CACHE_DIR`, else `$XDG_CACHE_HOME/noise2music`, else `~/.cache/noise2music`;
`python -m data.build_corpus --preset NAME` builds into `<cache>/corpus/NAME`, and a task whose
`CORPUS_DIR` is None reads `<cache>/corpus/demo`.  Nothing here builds a corpus: a folder without
a built one (no `corpus.json`, written last) is a `FileNotFoundError` naming the command.
"""
from __future__ import annotations

import os


def cache_dir() -> str:
    root = os.environ.get("N2M_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "noise2music")
    return os.path.abspath(root)


def default_corpus_dir(preset: str = "demo") -> str:
    return os.path.join(cache_dir(), "corpus", preset)


def is_built(path: str) -> bool:
    return os.path.exists(os.path.join(path, "corpus.json"))


def corpus_dir(path: str | None = None) -> str:
    """The built corpus at `path` (default: the demo corpus in the cache), as an absolute path."""
    default = not path
    path = os.path.abspath(os.path.expanduser(path or default_corpus_dir()))
    if not is_built(path):
        build = "python -m data.build_corpus --preset demo" + ("" if default else f" --out {path}")
        raise FileNotFoundError(f"{'the demo corpus' if default else 'CORPUS_DIR'}: no built corpus in {path} (no "
                                f"corpus.json); build one with `{build}`" + ("" if default else ", or set CORPUS_DIR "
                                                                              "to a built corpus"))
    return path
