"""Mesh shapes from config, FSDP partition specs and per-process batch rows."""

import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from semhash_jax import sharding


@pytest.mark.parametrize(
    "axes, devices, expected",
    [
        ((("data", -1),), 8, {"data": 8}),
        ((("data", -1), ("fsdp", 4)), 8, {"data": 2, "fsdp": 4}),
        ((("fsdp", 8),), 8, {"fsdp": 8}),
        ((("data", 2), ("fsdp", -1)), 8, {"data": 2, "fsdp": 4}),
        ([["data", 1], ["fsdp", 1]], 1, {"data": 1, "fsdp": 1}),
    ],
)
def test_mesh_shape(axes, devices, expected):
    assert sharding.mesh_shape(axes, devices) == expected


@pytest.mark.parametrize(
    "axes, message",
    [
        ((("data", 3), ("fsdp", -1)), "do not divide the 8 devices"),
        ((("data", 2), ("fsdp", 2)), "covers 4 devices but 8"),
        ((("data", -1), ("fsdp", -1)), "at most one may be -1"),
        ((("data", 0),), "positive device count"),
        ((("model", 8),), "unknown axis name"),
        ((("data", 4), ("data", 2)), "at most once"),
        ((), "at most once"),
        ("data", "pairs"),
        ((("data", "all"),), "pairs"),
    ],
)
def test_mesh_shape_rejects(axes, message):
    with pytest.raises(ValueError, match=message):
        sharding.mesh_shape(axes, 8)


def test_make_mesh_axes_and_order():
    mesh = sharding.make_mesh((("data", -1), ("fsdp", 4)))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))
    assert sharding.batch_axes(mesh) == ("data", "fsdp")
    assert sharding.describe(mesh) == "data=2 x fsdp=4 over 8 cpu devices in 1 process"


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((3, 3, 64, 128), P(None, None, None, "fsdp")),  # largest divisible dim
        ((512, 512), P(None, "fsdp")),  # ties: the last one
        ((1024, 30), P("fsdp")),
        ((30, 1022), P()),  # no dimension divisible by 4
        ((64,), P()),  # under min_size
        ((), P()),
    ],
)
def test_fsdp_spec(shape, expected):
    assert sharding.fsdp_spec(shape, 4, min_size=1000) == expected


def test_fsdp_spec_without_fsdp_axis_replicates():
    assert sharding.fsdp_spec((1024, 1024), 1, min_size=1) == P()


def test_state_sharding_splits_large_arrays():
    mesh = sharding.make_mesh((("data", 2), ("fsdp", 4)))
    tree = {
        "kernel": jax.ShapeDtypeStruct((256, 512), np.float32),
        "bias": jax.ShapeDtypeStruct((512,), np.float32),
    }
    shardings = sharding.state_sharding(mesh, tree, min_size=4096)
    assert shardings["kernel"].spec == P(None, "fsdp")
    assert shardings["bias"].spec == P()
    array = jax.device_put(np.zeros((256, 512), np.float32), shardings["kernel"])
    # Each device stores a quarter of the columns, and the data axis copies them.
    assert {shard.data.shape for shard in array.addressable_shards} == {(256, 128)}


@pytest.mark.parametrize("axes", [(("data", -1),), (("data", 2), ("fsdp", 4))])
def test_process_rows_single_process_is_whole_batch(axes):
    mesh = sharding.make_mesh(axes)
    assert sharding.process_rows(mesh, 32) == (0, 32)


def test_global_batch_over_both_axes_keeps_row_order():
    mesh = sharding.make_mesh((("data", 2), ("fsdp", 4)))
    rows = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    batch = sharding.global_batch({"x": rows}, mesh)
    np.testing.assert_array_equal(np.asarray(batch["x"]), rows)
    assert batch["x"].sharding.spec == P(("data", "fsdp"))
