"""Audio embedders for evaluation: one interface and a registry, importing nothing back.

    emb = make("musicnn")                  # MTT musicnn from the installed wheel (frame-level)
    emb = make("mulan:runs/mulan_tiny")    # a trained MuLan (clip-level, has a text tower)
    emb.info                               # EmbedderInfo(name, sample_rate, window, hop, level, dim, fingerprint)
    outs = emb.embed_many([wave, ...])     # per clip {'embeddings': [n, dim], 'tags'?: [n, C]}

An embedder takes clips at `info.sample_rate` (the caller resamples) and returns, per clip, one
embedding per window (`level='frame'`: e.g. musicnn's 3 s patches, VGGish's 0.96 s frames) or one
per clip (`level='clip'`: MuLan's mean over 10 s windows).  `fingerprint` names the weights and
settings, so cached embeddings are reused only for the same model.  Taggers also return `tags`
(scores for `tag_names`); joint audio-text models implement `embed_texts`.

Each embedder is one file beside this one (its network, converter, `Embedder` subclass and a
`make(arg)` factory): `musicnn.py`, `vggish.py`, `mulan.py`.  `make(spec)` resolves a name
through `BUILTIN` (name -> "module:factory", imported when asked for), then names registered in
this process with `@register(name)`, then a plug-in spelled `package.module:factory[:arg]` on the
command line (`music_eval.evaluate --embedders=musicnn,my_pkg.clap:make:/ckpt/clap`):

    @register("trill")                     # in your module, after `from music_eval.embedders.base import ...`
    def make_trill(arg):                   # arg: the text after "trill:" on the command line
        return MyTrill(checkpoint=arg)
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class EmbedderInfo:
    name: str           # short name: a metric's column ("fad_musicnn")
    sample_rate: int    # the rate clips must be given at
    window: int         # samples per embedding
    hop: int            # samples between embeddings (== window: non-overlapping)
    level: str          # 'frame' (many per clip) or 'clip' (one per clip)
    dim: int
    fingerprint: str    # weights + settings, for the embedding cache


class Embedder(abc.ABC):
    info: EmbedderInfo
    tag_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def embed_many(self, waves: Sequence[np.ndarray], progress: Callable[[int], None] | None = None) -> list[dict]:
        """Clips (float32 mono at `info.sample_rate`) -> per clip {'embeddings': [n, dim], 'tags'?}."""

    @property
    def has_text(self) -> bool:
        return False

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError(f"{self.info.name} has no text tower")


def short_hash(s: str | bytes) -> str:
    return hashlib.sha1(s.encode() if isinstance(s, str) else s).hexdigest()[:10]


# The embedders this package ships: name -> "module:factory", imported only when asked for.
BUILTIN = {
    "musicnn": "music_eval.embedders.musicnn:make",
    "mulan": "music_eval.embedders.mulan:make",
    "vggish": "music_eval.embedders.vggish:make",
}
_REGISTERED: dict[str, Callable[[str | None], Embedder]] = {}


def register(name: str):
    """Registers `factory(arg) -> Embedder` as `name` (for embedders defined outside this package)."""
    def deco(fn):
        _REGISTERED[name] = fn
        return fn
    return deco


def names() -> list[str]:
    return sorted({*BUILTIN, *_REGISTERED})


def _import(target: str, spec: str) -> Callable:
    module, _, fn_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"embedder {spec!r}: cannot import {module}:{fn_name} ({e})") from None


def make(spec: str) -> Embedder:
    """'name[:arg]' for a built-in or registered embedder, or 'package.module:factory[:arg]'."""
    name, _, arg = spec.partition(":")
    if name in _REGISTERED:
        fn = _REGISTERED[name]
    elif name in BUILTIN:
        fn = _import(BUILTIN[name], spec)
    elif "." in name:
        fn_name, _, arg = arg.partition(":")
        fn = _import(f"{name}:{fn_name}", spec)
    else:
        raise ValueError(f"unknown embedder {name!r}; built in or registered: {names()}, or give "
                         f"package.module:factory[:arg]")
    emb = fn(arg or None)
    if not isinstance(emb, Embedder):
        raise ValueError(f"embedder {spec!r}: the factory returned {type(emb).__name__}, not an Embedder")
    return emb
