"""When the binaries start JAX's multi-process runtime, their flag checks, and their XLA CPU setting."""

import importlib.metadata
import logging
import json
import os
import subprocess
import sys

import numpy as np
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


YNN = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.mark.parametrize(
    "flags, version, expected",
    [
        ("", "0.10.2", platform.XLA_CPU_CONVOLUTION_FLAG),
        (
            "--xla_force_host_platform_device_count=8",
            "0.10.0",
            "--xla_force_host_platform_device_count=8 " + platform.XLA_CPU_CONVOLUTION_FLAG,
        ),
        # The user's own choice of YNNPACK fusions, even none at all, is kept.
        (f"{YNN}=+individual_convolution", "0.10.2", f"{YNN}=+individual_convolution"),
        (f"{YNN}=", "0.10.2", f"{YNN}="),
        # Versions it was not measured on keep XLA's default.
        ("", "0.9.1", ""),
        ("", "0.11.0", ""),
        ("", "0.100.0", ""),
        ("", None, ""),
    ],
)
def test_xla_flags_for_cpu(flags, version, expected):
    assert platform.xla_flags_for_cpu(flags, version) == expected


def test_accelerator_hosts_left_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert platform.configure_xla_cpu() is False
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(platform, "_installed_accelerator_package", lambda: "jax-cuda12-plugin")
    assert platform.configure_xla_cpu() is False
    assert platform.XLA_CPU_CONVOLUTION_FLAG not in os.environ["XLA_FLAGS"]


def test_user_ynn_setting_kept(monkeypatch, caplog):
    monkeypatch.setenv("XLA_FLAGS", f"{YNN}=+individual_convolution")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(platform, "_installed_accelerator_package", lambda: None)
    with caplog.at_level("INFO"):
        assert platform.configure_xla_cpu() is False
    assert os.environ["XLA_FLAGS"] == f"{YNN}=+individual_convolution"
    assert "set YNNPACK's fusion types and are kept" in caplog.text


def test_late_call_leaves_flags(monkeypatch):
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # JAX's backends are up from here on.
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert platform.configure_xla_cpu() is False
    assert os.environ["XLA_FLAGS"] == ""


# Runs in a fresh process: configure_xla_cpu, then one 3x3 convolution and its gradients.
# The shape is large enough that XLA's default gives the convolution to YNNPACK
# (smaller ones stayed out of YNNPACK in jaxlib 0.10.2).
_CONVOLUTION_SCRIPT = """
import importlib.metadata
import logging
import json
import numpy as np
from semhash_jax import platform
added = platform.configure_xla_cpu()
import jax
from jax import lax
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 16, 16, 32)).astype(np.float32)
kernel = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
cotangent = rng.standard_normal((4, 16, 16, 32)).astype(np.float32)
def conv(x, k):
    return lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
def forward_and_gradients(x, k, cotangent):
    out, pullback = jax.vjp(conv, x, k)
    return (out,) + pullback(cotangent)
hlo = jax.jit(conv).lower(x, kernel).compile().as_text()
out, dx, dk = jax.jit(forward_and_gradients)(x, kernel, cotangent)
print(json.dumps({"added": added, "ynn": "__ynn_fusion" in hlo, "out": out.tolist(),
                  "dx": dx.tolist(), "dk": dk.tolist()}))
"""


def _reference_convolution(x, kernel, cotangent):
    """Compute a 3x3 'SAME' convolution (cross-correlation) of NHWC by HWIO and its two
    gradients for `cotangent` in float64, one kernel tap at a time."""
    x, kernel, cotangent = (a.astype(np.float64) for a in (x, kernel, cotangent))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    _, height, width, _ = x.shape
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    padded_dx = np.zeros_like(padded)
    dk = np.zeros_like(kernel)
    for i in range(3):
        for j in range(3):
            window = padded[:, i : i + height, j : j + width, :]
            out += window @ kernel[i, j]
            dk[i, j] = np.einsum("bhwc,bhwf->cf", window, cotangent)
            padded_dx[:, i : i + height, j : j + width, :] += cotangent @ kernel[i, j].T
    return out, padded_dx[:, 1:-1, 1:-1, :], dk


@pytest.mark.parametrize(
    "user_flags, expect_ynn",
    [("", False), (f"{YNN}=+individual_convolution", True)],
)
def test_convolution_flag_in_fresh_process(user_flags, expect_ynn):
    """Check that the flag works on the installed jaxlib and the user's setting wins.

    Either way, the convolution and its gradients must match a float64 reference.
    """
    if not importlib.metadata.version("jaxlib").startswith("0.10."):
        pytest.skip("The CPU setting applies to jaxlib 0.10 only.")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["XLA_FLAGS"] = user_flags
    done = subprocess.run(
        [sys.executable, "-c", _CONVOLUTION_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["added"] is (not expect_ynn)
    assert result["ynn"] is expect_ynn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 16, 32)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    cotangent = rng.standard_normal((4, 16, 16, 32)).astype(np.float32)
    for name, expected in zip(("out", "dx", "dk"), _reference_convolution(x, kernel, cotangent)):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(
            np.asarray(result[name]) / scale, expected / scale, atol=1e-5, err_msg=name
        )


@pytest.mark.parametrize(
    "pathname, level, shown",
    [
        ("/venv/lib/python3.11/site-packages/orbax/checkpoint/manager.py", "INFO", False),
        ("/venv/lib/python3.11/site-packages/jax/_src/xla_bridge.py", "INFO", False),
        ("/venv/lib/python3.11/site-packages/jax/_src/xla_bridge.py", "WARNING", True),
        ("/venv/lib/python3.11/site-packages/orbax/checkpoint/manager.py", "ERROR", True),
        ("/work/semhash_jax/train.py", "INFO", True),
    ],
)
def test_quiet_filter_table(pathname, level, shown):
    record = logging.LogRecord("absl", getattr(logging, level), pathname, 1, "message", None, None)
    assert platform._QuietLibraries().filter(record) is shown


def test_quiet_logs_tensorflow_level(monkeypatch):
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    filters_before = list(handler.filters)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    try:
        platform.quiet_library_logs()
        # TensorFlow's C++ INFO lines are hidden, its warnings kept.
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
        platform.quiet_library_logs()
        # A level the user set is kept.
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    finally:
        handler.filters[:] = filters_before
