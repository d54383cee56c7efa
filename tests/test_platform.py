"""When the binaries start JAX's multi-process runtime, and their flag checks."""

import pytest

from semhash_jax import platform

CLUSTER_VARIABLES = (
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "JAX_COORDINATOR_ADDRESS",
)


@pytest.fixture
def clean_environment(monkeypatch):
    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("SLURM_NTASKS", "4", "SLURM_NTASKS"),
        ("SLURM_NTASKS", "1", None),
        ("OMPI_COMM_WORLD_SIZE", "2", "OMPI_COMM_WORLD_SIZE"),
        ("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3", "TPU_WORKER_HOSTNAMES"),
        ("TPU_WORKER_HOSTNAMES", "localhost", None),
        ("JAX_COORDINATOR_ADDRESS", "10.0.0.2:1234", "JAX_COORDINATOR_ADDRESS"),
    ],
)
def test_multi_process_environment(clean_environment, name, value, expected):
    clean_environment.setenv(name, value)
    assert platform.multi_process_environment() == expected


def test_single_process_by_default(clean_environment):
    assert platform.multi_process_environment() is None
    assert platform.initialize_distributed("auto") is False
    assert platform.initialize_distributed("off") is False


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("maybe",), "Invalid --distributed='maybe'"),
        (("auto", None, 2, 0), "need --coordinator_address"),
        (("off", "127.0.0.1:1234", 2, 0), "conflicts with --distributed=off"),
        (("auto", "127.0.0.1:1234", None, None), "needs --num_processes=N and --process_id=I"),
    ],
)
def test_invalid_flags_rejected(clean_environment, arguments, message):
    with pytest.raises(ValueError, match=message):
        platform.initialize_distributed(*arguments)
