"""Test session setup: 8 virtual CPU devices, the binaries' XLA CPU setting, offline
use and parsed absl flags.

XLA_FLAGS must be set before JAX is imported anywhere, which is why this
happens at import time of the conftest.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from semhash_jax import platform as semhash_platform  # noqa: E402

# The binaries' CPU convolution setting, so that the tests run what users run.
semhash_platform.configure_xla_cpu()

# A compilation cache shared by the tests and the binaries they start: the
# same train step compiles once per session instead of once per test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

# grain and orbax read absl flags; under pytest nothing parses them.
flags.FLAGS.mark_as_parsed()

import pytest


@pytest.fixture(scope="session")
def zero_shot_data_dir(tmp_path_factory):
    """A prepared slice of Fashion-MNIST, 400 images per split."""
    from tests import helpers

    path = tmp_path_factory.mktemp("zero_shot_tfds")
    helpers.prepare_slice(path, max_examples=400)
    return str(path)


@pytest.fixture(scope="session")
def zero_shot_run(zero_shot_data_dir, tmp_path_factory):
    """(workdir, stdout) of the main binary's zero-shot runlocal training on that slice.

    Shared by the zero-shot, search and cross-dataset tests, which only read the
    run or restore what they change.
    """
    from tests.test_end_to_end import ROOT, run_binary

    workdir = tmp_path_factory.mktemp("zero_shot_run") / "run"
    config = (
        str(ROOT / "configs" / "fashion_mnist.py") + ":protocol=train_test_split,zero_shot,runlocal"
    )
    completed = run_binary(
        "semhash_jax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data_dir={zero_shot_data_dir}",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return workdir, completed.stdout
