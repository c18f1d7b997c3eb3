"""The device mesh, shardings and global batches of data-parallel training (both systems).

One `jax.jit` over a 1-D mesh with axis 'data' spanning all devices of all processes: the global
batch is sharded along 'data', parameters and optimizer state are replicated, and XLA inserts the
gradient and BatchNorm-statistics all-reduces, so any device count computes the same step as one
device (up to float summation order). With several processes each one reads its own rows of every
global batch and `global_batch` assembles the global arrays from them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """1-D data-parallel mesh over all devices (of all processes) with axis 'data'."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, mesh, what: str = "train.batch_size") -> None:
    """A global batch must split evenly over the mesh's devices."""
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f"{what} {batch_size} must be divisible by the {n_dev} devices of the "
                         "mesh")


def global_batch(local: Mapping[str, np.ndarray], mesh, keys: Sequence[str]) -> dict:
    """Host-local numpy rows -> global jax arrays sharded over 'data' (every process calls this
    with its own rows; the global batch is their concatenation in process order)."""
    sharding = batch_sharding(mesh)
    missing = [k for k in keys if k not in local]
    if missing:
        raise KeyError(f"batch is missing {missing}; it has {sorted(local)}")
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k]))
            for k in keys}
