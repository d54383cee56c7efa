"""Device mesh, shardings and global arrays built from per-process data."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """Return a 1-D mesh whose data axis spans `devices` (default: all)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(
        np.asarray(devices),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
    )


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
    """Shard the leading (batch) axis over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh, name: str = "batch_size"):
    """Raise when a global batch does not split evenly over the mesh."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(
            f"config.{name}={batch_size} does not divide across {devices} devices. "
            f"Set --config.{name} to a multiple of {devices}."
        )


def global_batch(local_batch: dict, mesh) -> dict:
    """Turn this process's share of a batch into global arrays on the mesh."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
