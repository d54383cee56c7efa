"""Device mesh, shardings of state and batches, and global arrays from per-process data.

The mesh has up to two axes, given by `config.mesh` as (name, size) pairs:
  data: batch parallelism; parameters and optimizer state are replicated on it.
  fsdp: the batch is split over it too, and every parameter and optimizer array of
        at least `config.fsdp_min_size` elements is split along one dimension
        (fully sharded data parallelism, as in ZeRO-3). XLA gathers the weights
        where the step needs them and reduce-scatters their gradients.
A batch is always split over all devices, so a step computes the same function
of the same global batch whatever the mesh shape.
"""

import math

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
MESH_AXES = (DATA_AXIS, FSDP_AXIS)
DEFAULT_MESH = ((DATA_AXIS, -1),)


def mesh_shape(axes, device_count: int) -> dict[str, int]:
    """Return {axis name: size} for `axes` ((name, size) pairs) over `device_count` devices.

    One size may be -1: it takes the devices that the other axes leave.
    """
    try:
        pairs = [(str(name), int(size)) for name, size in axes]
    except (TypeError, ValueError):
        raise ValueError(
            f"config.mesh={axes!r} must be a sequence of (axis name, size) pairs, e.g. "
            '--config.mesh=\'(("data", -1), ("fsdp", 4))\'.'
        ) from None
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - set(MESH_AXES))
    if unknown:
        raise ValueError(
            f"config.mesh={axes!r} has unknown axis name(s) {unknown}: the axes are "
            f'{MESH_AXES}, e.g. (("data", -1),) or (("data", -1), ("fsdp", 4)).'
        )
    if not pairs or len(set(names)) != len(names):
        raise ValueError(
            f"config.mesh={axes!r} must name each of the axes {MESH_AXES} at most once "
            f'(and at least one), e.g. (("data", -1),) or (("data", -1), ("fsdp", 4)).'
        )
    sizes = [size for _, size in pairs]
    if sizes.count(-1) > 1 or any(size == 0 or size < -1 for size in sizes):
        raise ValueError(
            f"config.mesh={axes!r}: each size must be a positive device count, and at "
            "most one may be -1 (all remaining devices)."
        )
    known = math.prod(size for size in sizes if size != -1)
    if -1 in sizes:
        if device_count % known:
            raise ValueError(
                f"config.mesh={axes!r}: the fixed axis sizes (product {known}) do not "
                f"divide the {device_count} devices. Choose sizes that divide {device_count}."
            )
        sizes = [device_count // known if size == -1 else size for size in sizes]
    elif known != device_count:
        raise ValueError(
            f"config.mesh={axes!r} covers {known} devices but {device_count} are present. "
            "Make the sizes multiply to the device count, or set one of them to -1."
        )
    return dict(zip(names, sizes))


def make_mesh(axes=DEFAULT_MESH, devices=None) -> jax.sharding.Mesh:
    """Return the mesh of `axes` ((name, size) pairs, see `mesh_shape`) over `devices`.

    The default is a data axis over all devices. Device order comes from
    `jax.make_mesh`, which follows the accelerator topology.
    """
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(axes, len(devices))
    return jax.make_mesh(
        tuple(shape.values()),
        tuple(shape),
        axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
        devices=devices,
    )


def local_mesh() -> jax.sharding.Mesh:
    """Return a data axis over this process's devices.

    For work that every process repeats on the same host data, such as ranking
    the database for the metrics, with no traffic between hosts.
    """
    return make_mesh(devices=jax.local_devices())


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_axes(mesh) -> tuple[str, ...]:
    """Return the mesh axes that split a batch: all of them."""
    return tuple(name for name in MESH_AXES if name in mesh.axis_names)


def batch_sharded(mesh) -> NamedSharding:
    """Shard the leading (batch) axis over all devices."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """Return the partition spec of an array of `shape` under FSDP.

    The largest dimension that `fsdp_size` divides is split (the last of equal
    ones); arrays under `min_size` elements or without such a dimension stay
    replicated.
    """
    if fsdp_size <= 1 or math.prod(shape) < min_size:
        return P()
    candidates = [axis for axis, length in enumerate(shape) if length % fsdp_size == 0]
    if not candidates:
        return P()
    axis = max(candidates, key=lambda a: (shape[a], a))
    return P(*([None] * axis + [FSDP_AXIS]))


def state_sharding(mesh, abstract_state, min_size: int):
    """Return the sharding of every array in `abstract_state` on `mesh` (see `fsdp_spec`)."""
    fsdp_size = dict(mesh.shape).get(FSDP_AXIS, 1)
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), fsdp_size, min_size)),
        abstract_state,
    )


def put(tree, shardings):
    """Place host values (the same in every process) on devices with `shardings`.

    Unlike `jax.device_put`, this works for shardings that span the devices of
    other processes: each process fills its own shards from its copy.
    """

    def place(value, target):
        if target.is_fully_addressable:
            return jax.device_put(value, target)
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            # Already spread over the processes: reshard on the devices.
            return jax.jit(lambda x: x, out_shardings=target)(value)
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree.map(place, tree, shardings)


def check_batch_size(batch_size: int, mesh, name: str = "batch_size"):
    """Raise when a global batch does not split evenly over the mesh."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(
            f"config.{name}={batch_size} does not divide across {devices} devices. "
            f"Set --config.{name} to a multiple of {devices}."
        )


def process_rows(mesh, global_batch_size: int) -> tuple[int, int]:
    """Return the rows [start, stop) of a global batch held by this process's devices.

    `jax.make_array_from_process_local_data` places a process's local batch there.
    Raises when the mesh gives this process rows that are not contiguous, which
    would make the local batch ambiguous.
    """
    indices = batch_sharded(mesh).addressable_devices_indices_map((global_batch_size,))
    rows = sorted({row for index in indices.values() for row in range(global_batch_size)[index[0]]})
    start, stop = rows[0], rows[-1] + 1
    if stop - start != len(rows):
        raise ValueError(
            f"The devices of process {jax.process_index()} hold rows {rows} of the "
            "global batch, which are not contiguous. Use a mesh whose device order "
            "keeps each host's devices together (the default jax.make_mesh order)."
        )
    return start, stop


def global_batch(local_batch: dict, mesh) -> dict:
    """Turn this process's share of a batch into global arrays on the mesh."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def describe(mesh) -> str:
    """Return e.g. "data=2 x fsdp=4 over 8 cpu devices in 1 process"."""
    axes = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    platform = np.asarray(mesh.devices).flat[0].platform
    processes = jax.process_count()
    return (
        f"{axes} over {mesh.devices.size} {platform} devices in {processes} "
        f"process{'es' if processes > 1 else ''}"
    )
