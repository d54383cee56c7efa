"""Test session setup: 8 virtual CPU devices and offline, parsed absl flags.

XLA_FLAGS must be set before JAX is imported anywhere, which is why this
happens at import time of the conftest.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A compilation cache shared by the tests and the binaries they start: the
# same train step compiles once per session instead of once per test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

# grain and orbax read absl flags; under pytest nothing parses them.
flags.FLAGS.mark_as_parsed()
