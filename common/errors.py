"""The project's error for a setting that cannot work: every binary exits 2 on it with one line
(`error: ...`) that names the binding or flag at fault, and no traceback.

    errors.require(batch_size >= 1, "train.batch_size (BATCH_SIZE)", batch_size, "at least 1")
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A setting (gin binding or flag) that cannot work; the message names it."""


def require(ok: bool, binding: str, value, must: str) -> None:
    """ConfigError `binding=value: must be <must>` unless `ok`."""
    if not ok:
        raise ConfigError(f"{binding}={value!r}: must be {must}")
