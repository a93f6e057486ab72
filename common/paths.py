"""Run directories on local disk or in a bucket (`gs://...`): the one path layer, etils `epath`.

    d = paths.resolve(model_dir)                      # an epath.Path; a local path made absolute
    paths.check_writable(d, "--model_dir")            # a missing, unreachable or read-only bucket: PathError
    (d / "config.gin").write_text(text)

Every file of a training run (config.gin, metrics.jsonl, TensorBoard events, checkpoints and the
per-process input state) is read and written through `epath`.  epath reaches `gs://` through
`tf.io.gfile` when TensorFlow is installed, else through gcsfs; `EPATH_USE_TF=false` forces gcsfs,
which honours `STORAGE_EMULATOR_HOST`, and Orbax writes its arrays through TensorStore, which
honours `TENSORSTORE_GCS_HTTP_URL`: that is how the tests run a whole training run against a
local GCS emulator (tests/integration/test_gcs.py).  A bucket has no directories and no appends:
nothing here creates a directory for a remote path, and `trainer.metrics` writes remote files whole.
"""
from __future__ import annotations

import errno
import os
import shutil
import uuid

from etils import epath

PathLike = str | os.PathLike


class PathError(ValueError):
    """A run directory that cannot be used; the message names the setting."""


def is_remote(path: PathLike) -> bool:
    return "://" in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
    """`path` as an `epath.Path`: a local one made absolute (Orbax wants absolute paths)."""
    path = os.fspath(path)
    return epath.Path(path if is_remote(path) else os.path.abspath(path))


def makedirs(path: epath.Path) -> None:
    """A local directory and its parents; nothing for a bucket (objects need no directories)."""
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)


def check_writable(directory: epath.Path, setting: str) -> None:
    """PathError naming `setting` unless files can be written under `directory`: a local one is
    created; in a bucket a probe object is written and deleted, so a missing bucket, a host that
    cannot be reached or missing permissions are found before anything else is written."""
    try:
        if not is_remote(directory):
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(f"{directory} is not writable")
            return
        probe = directory / f".write_check_{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except Exception as e:  # noqa: BLE001 -- gcsfs, gfile and the OS raise many types.
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise PathError(f"{setting}={directory}: cannot write there ({type(e).__name__}: {first}); is the bucket "
                        f"there and writable with this machine's credentials?" if is_remote(directory) else
                        f"{setting}={directory}: cannot write there ({type(e).__name__}: {first})") from None


def write_text_atomic(path: epath.Path, text: str) -> None:
    """`path` holds `text` whole or keeps what it held: locally a temporary file beside it renamed
    over it; in a bucket one object write (objects are replaced whole)."""
    if is_remote(path):
        path.write_text(text)
        return
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def disk_full(e: BaseException | str) -> bool:
    """Whether `e` (an OSError, a TensorStore / Orbax error carrying one, or such an error's
    message) is a full disk or quota."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left on device" in text or "os_error_code='28'" in text or "Disk quota exceeded" in text


def free_space(path: PathLike) -> str:
    """' (N MiB free of M MiB on the disk of PATH)' for a local path; '' where it cannot be told."""
    p = os.fspath(path)
    if is_remote(p):
        return ""
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    try:
        u = shutil.disk_usage(p or "/")
    except OSError:
        return ""
    return f" ({u.free / 2 ** 20:.1f} MiB free of {u.total / 2 ** 20:.1f} MiB on the disk of {p})"
