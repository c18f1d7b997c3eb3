"""Process start-up for training and evaluation jobs (both systems): `jax.distributed`, barriers,
agreement across processes, the shared-workdir check and quiet logs."""
from __future__ import annotations

import os

import jax
import numpy as np

# Environment variables that mean "this process is one of several" to jax.distributed.
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                    "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> None:
    """`jax.distributed.initialize` when the flags or the environment ask for several processes."""
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif any(v in os.environ for v in _DISTRIBUTED_ENV):
        jax.distributed.initialize()


def barrier(name: str) -> None:
    """Wait for every process (a no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def max_over_processes(value: int) -> int:
    """The largest of every process's `value` (static shapes all processes must agree on)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))


def check_shared_workdir(workdir: str) -> None:
    """With several processes, every process must see the same `workdir` (orbax coordinates the
    checkpoints of all processes inside one directory; with a private directory per process the
    first checkpoint waits forever). Process 0 writes a token there; every process must read it
    back, else a ValueError names the directory. One process: nothing to check."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    token = int(multihost_utils.broadcast_one_to_all(
        np.int32(np.random.default_rng().integers(1, 2**31 - 1))))
    path = os.path.join(workdir, ".shared_workdir_check")
    if jax.process_index() == 0:
        with open(path + ".tmp", "w") as f:
            f.write(str(token))
        os.replace(path + ".tmp", path)
    barrier("shared_workdir_written")
    try:
        with open(path) as f:
            seen = int(f.read().strip() or 0)
    except (OSError, ValueError):
        seen = None
    ok = multihost_utils.process_allgather(np.int32(seen == token))  # also a barrier
    if not np.all(ok):
        bad = [int(i) for i in np.flatnonzero(np.asarray(ok) == 0)]
        raise ValueError(
            f"workdir {workdir} is not shared by all {jax.process_count()} processes (processes "
            f"{bad} do not see process 0's files there). Multi-process training needs one "
            "directory every process can read and write (a shared file system or bucket).")


def quiet_logs() -> None:
    """Keep the console to progress bars and results: absl INFO chatter (orbax's options, TFDS's
    'loading dataset info') is hidden unless --verbosity was raised on the command line."""
    from absl import flags, logging
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
