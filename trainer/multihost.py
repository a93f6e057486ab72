"""Multi-host start-up and preemption, in one place.

`initialize()` calls `jax.distributed.initialize` at most once, from (in order)
explicit arguments (gin/flags), the standard environment variables
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, or, on a
Cloud TPU VM, no arguments at all (JAX discovers the pod).  Otherwise the run
is single-process.  It must run before anything touches a JAX backend.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

import gin
import jax

from common.errors import ConfigError

log = logging.getLogger(__name__)

_initialized = False


def _on_tpu_vm() -> bool:
    return any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "TPU_WORKER_ID")) or (
        os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")
    )


@gin.configurable
def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    global _initialized
    if _initialized:
        return
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ConfigError(
                "JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES / JAX_PROCESS_ID "
                "(or --gin.initialize.num_processes / process_id) are not."
            )
        if jax.config.jax_platforms in (None, "", "cpu"):
            # Cross-process collectives on CPU (tests, laptops) go through gloo.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif _on_tpu_vm():
        jax.distributed.initialize()
    _initialized = True
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def is_primary() -> bool:
    return jax.process_index() == 0


def process_block(n: int) -> slice:
    """This process's contiguous share of `n` items: process p of P takes [p*n//P, (p+1)*n//P), so
    the blocks in process order are the items in order (what a one-process run does)."""
    p, count = jax.process_index(), jax.process_count()
    return slice(p * n // count, (p + 1) * n // count)


def sync(name: str) -> None:
    """Every process waits here until all have arrived (nothing on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def sum_over_processes(x):
    """The elementwise sum of a numpy array over all processes (the array itself on one)."""
    import numpy as np

    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    x = np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x)).sum(0).astype(x.dtype)


class PreemptionWatcher:
    """Tells the loop, at the same step on every host, that a save-and-exit is due.

    Single process: a SIGTERM handler sets a flag.  Multi-process: JAX's own
    preemption service (which catches SIGTERM on every host) agrees on a step.
    """

    def __init__(self):
        self._flag = threading.Event()
        self._multi = jax.process_count() > 1
        self._previous = None
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and exiting at the end of this step.")
        self._flag.set()

    def reached(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self._flag.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
