"""A training run's directory: one writer at a time, and the config of every launch kept.

    lock = run_dir.RunLock(run_dir)       # MODEL_DIR/LOCK
    lock.acquire()                        # RunLockedError (exit 2) if a live run holds it
    ...                                   # a daemon thread refreshes the lock's heartbeat
    run_dir.record_launch(run_dir, gin.config_str(), start_step)
    lock.release()

**The lock** is a JSON file naming its holder: host, pid, the process's start time, a random token,
when it started and its heartbeat (refreshed every `HEARTBEAT_SECONDS`).  A lock is stale, and is
taken over with a warning naming the old holder, when its process is gone (same host: no process
with that pid and start time) or its heartbeat is older than `STALE_AFTER_SECONDS` (any host: a
machine that died).  Locally the lock is created with `O_EXCL` and a stale one is renamed away before
the new one is created, so of two launches exactly one gets it.  A bucket (`gs://`) has no exclusive
create through epath: the lock is written, read back after a pause and kept only if it still holds
this launch's token; two launches in the same second could both pass, so start a pod's workers with
one command (`launch_tpu.sh`).  Only process 0 of a multi-host run takes the lock: it is the run
directory's only writer of `config.gin`, `launches/` and `metrics.jsonl`.

**The launch history** (`launches/NNNN-<UTC time>-step<S>.gin`, never overwritten): the full gin
config of every launch, with a header naming the host, the command and the step it resumed from;
`config.gin` is the newest launch's.  Each checkpoint also carries the config that wrote it
(`checkpoints/<step>/config/config.gin`, `trainer.checkpoints`), which is what inference loads.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from etils import epath

from common import paths
from trainer.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
LAUNCHES = "launches"
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0


class RunLockedError(ConfigError):
    """Another live run writes this run directory."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux `/proc/<pid>/stat`, field 22), to tell a reused pid
    from the lock's holder; None where there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive_here(holder: dict) -> bool:
    """Whether the lock's holder, a process of this host, still runs."""
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True           # Someone else's process: alive.
    except (OSError, ValueError, OverflowError):
        return False
    start = _process_start(pid)
    return start is None or holder.get("process_start") in (None, start)


class RunLock:
    """The lock on a run directory (see the module docstring)."""

    def __init__(self, run_dir: epath.Path, *, stale_after: float = STALE_AFTER_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False
        self._started = time.time()

    def _record(self) -> dict:
        pid = os.getpid()
        return {"host": socket.gethostname(), "pid": pid, "process_start": _process_start(pid),
                "token": self.token, "started": self._started,
                "heartbeat": time.time(), "command": " ".join(sys.argv)[:2000]}

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as e:   # A lock cut short by a kill mid-write: stale.
            log.warning("%s is unreadable (%s); treating it as stale.", self.path, e)
            return {}

    def _why_stale(self, holder: dict) -> str | None:
        """Why `holder`'s lock no longer holds, or None while it does."""
        if not holder:
            return "an unreadable lock"
        age = time.time() - float(holder.get("heartbeat", 0))
        who = f"pid {holder.get('pid')} on {holder.get('host')}"
        if holder.get("host") == socket.gethostname() and not _alive_here(holder):
            return f"{who} is no longer running"
        if age > self.stale_after:
            return f"{who} last wrote its heartbeat {age:.0f} s ago (stale after {self.stale_after:.0f} s)"
        return None

    def _refuse(self, holder: dict) -> None:
        age = time.time() - float(holder.get("heartbeat", 0))
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("started", 0))))
        raise RunLockedError(
            f"{self.run_dir} is being written by another run: pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {started} (heartbeat {age:.0f} s ago; lock {self.path}; "
            f"command: {holder.get('command', '?')[:300]}). Wait for it to finish, use another "
            f"--model_dir, or, if that run is gone, delete {self.path} (taken over by itself after "
            f"{self.stale_after:.0f} s without a heartbeat).")

    def acquire(self) -> None:
        for _ in range(5):
            if self._try_create():
                break
            holder = self._read()
            if holder is None:
                continue                  # Released in between: try again.
            why = self._why_stale(holder)
            if why is None:
                self._refuse(holder)
            log.warning("Taking over the stale lock %s: %s.", self.path, why)
            self._remove_stale()
        else:
            raise RunLockedError(f"{self.path}: could not take the lock (other launches keep taking it).")
        self._held = True
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def _try_create(self) -> bool:
        text = json.dumps(self._record())
        if paths.is_remote(self.path):
            if self.path.exists():
                return False
            self.path.write_text(text)
            time.sleep(1.0)               # Let a concurrent writer's object land, then check who won.
            holder = self._read()
            return bool(holder) and holder.get("token") == self.token
        paths.makedirs(self.run_dir)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    def _remove_stale(self) -> None:
        if paths.is_remote(self.path):
            self.path.unlink(missing_ok=True)
            return
        aside = self.path.parent / f".{LOCK_NAME}.stale-{self.token[:8]}"
        try:
            os.replace(self.path, aside)  # Of two launches taking over, one renames it; the other retries.
            aside.unlink()
        except FileNotFoundError:
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                holder = self._read()
                if not holder or holder.get("token") != self.token:
                    log.error("%s is no longer this run's lock (%s); another launch took it over.",
                              self.path, holder and f"pid {holder.get('pid')} on {holder.get('host')}")
                    return
                paths.write_text_atomic(self.path, json.dumps(self._record()))
            except Exception as e:  # noqa: BLE001 -- a failed heartbeat must not kill training.
                log.warning("Could not refresh %s: %s", self.path, e)

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        holder = self._read()
        if holder and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def launches(run_dir: epath.Path) -> list[epath.Path]:
    """The run's launch configs, oldest first."""
    d = run_dir / LAUNCHES
    return sorted(p for p in d.iterdir() if p.name.endswith(".gin")) if d.exists() else []


def record_launch(run_dir: epath.Path, config: str, start_step: int) -> epath.Path:
    """Keeps this launch's gin config: a new `launches/NNNN-<UTC>-step<S>.gin` and `config.gin`
    (the newest launch's).  Returns the launch file."""
    n = len(launches(run_dir)) + 1
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = run_dir / LAUNCHES / f"{n:04d}-{stamp}-step{start_step}.gin"
    paths.makedirs(path.parent)
    header = (f"# launch {n} of this run, {stamp} on {socket.gethostname()} (pid {os.getpid()}), "
              f"{'resuming at step ' + str(start_step) if start_step else 'from step 0'}\n"
              f"# command: {' '.join(sys.argv)[:2000]}\n")
    paths.write_text_atomic(path, header + config)
    paths.write_text_atomic(run_dir / "config.gin", config)
    return path
