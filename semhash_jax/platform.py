"""Process-level settings shared by the binaries: flag parsing, multi-process start-up, logs.

Importing this module defines the multi-process flags of the binaries that
train and evaluate; it imports neither JAX nor TensorFlow.
"""

import ast
import functools
import importlib.metadata
import logging as python_logging
import os
import sys

from absl import app, flags, logging

from semhash_jax import host_allocator

DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Start JAX's multi-process runtime: auto (when --coordinator_address is given or "
    "a SLURM, Open MPI or TPU pod environment with several processes is found), on, off.",
)
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for clusters JAX cannot detect."
)
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (with --coordinator_address)."
)
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process, 0..N-1.")

# Library modules whose INFO lines are hidden from the binaries' logs: Orbax's
# checkpointing internals (dozens per checkpoint) and JAX's backend probing
# ("Unable to initialize backend 'tpu'" on a CPU machine). Their warnings still show.
_QUIET_MODULES = ("/orbax/", "/jax/_src/xla_bridge.py")


class _QuietLibraries(python_logging.Filter):
    def filter(self, record: python_logging.LogRecord) -> bool:
        if record.levelno >= python_logging.WARNING:
            return True
        return not any(part in record.pathname for part in _QUIET_MODULES)


def hide_accelerators_from_tensorflow():
    """Keep TensorFlow (used by TFDS) off GPUs and TPUs, which JAX owns."""
    # Imported here, so that binaries without TFDS do not pay its seconds of import.
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")


def quiet_library_logs():
    """Hide INFO logs of checkpointing internals, backend probing and native libraries.

    transformers warns on import that PyTorch is missing, which is expected
    here: only its tokenizer and config readers are used. TF_CPP_MIN_LOG_LEVEL=1
    hides the C++ INFO lines of TensorFlow's own logging, such as the CPU feature
    notice, when this runs before TensorFlow loads. Warnings and errors still show.
    TensorFlow's oneDNN notice goes through absl's C++ logging, which ignores that
    variable. A value the user set in either variable is kept.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.get_absl_handler().addFilter(_QuietLibraries())


# XLA's CPU backend in jaxlib 0.10 runs convolutions through YNNPACK, on one
# thread. This flag gives them to Eigen, which uses all cores, and the train step
# ran 1.15 to 1.5x faster on 2 cores (docs/benchmarks.md).
_YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
XLA_CPU_CONVOLUTION_FLAG = f"--{_YNN_FUSION_TYPE}=-individual_convolution"
# The flag was measured on this jaxlib series only, so other versions keep XLA's default.
_XLA_CPU_MEASURED_JAXLIB = "0.10."
# Distributions that add a GPU or TPU backend. With one installed, XLA_FLAGS is left alone.
_ACCELERATOR_PACKAGES = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def xla_flags_for_cpu(xla_flags: str, jaxlib_version: str | None) -> str:
    """Return `xla_flags` with `XLA_CPU_CONVOLUTION_FLAG` added where it applies.

    The flag is added for jaxlib 0.10.x, and only when `xla_flags` sets no
    YNNPACK fusion types of its own. The user's setting wins, so
    `--xla_cpu_experimental_ynn_fusion_type=+individual_convolution` keeps
    XLA's default.
    """
    if jaxlib_version is None or not jaxlib_version.startswith(_XLA_CPU_MEASURED_JAXLIB):
        return xla_flags
    if _YNN_FUSION_TYPE in xla_flags:
        return xla_flags
    return f"{xla_flags} {XLA_CPU_CONVOLUTION_FLAG}".strip()


@functools.cache
def _installed_accelerator_package() -> str | None:
    """Return the name of an installed GPU or TPU backend distribution, or None.

    Cached: the binaries ask twice at start-up, and each scan reads the metadata
    of every installed distribution.
    """
    for distribution in importlib.metadata.distributions():
        name = (distribution.metadata["Name"] or "").lower()
        if name.startswith(_ACCELERATOR_PACKAGES):
            return name
    return None


def _platforms_without_cpu() -> str | None:
    """Return JAX_PLATFORMS when it is set and excludes the CPU, else None."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return platforms if platforms and "cpu" not in platforms.split(",") else None


def restart_with_tcmalloc() -> None:
    """Restart this binary under tcmalloc when JAX computes on the CPU alone.

    Call it first thing in a binary's main: the process is replaced by the same
    command (`host_allocator.restart_with_tcmalloc`, which decides and logs why).
    Hosts with an accelerator backend, or JAX_PLATFORMS without the CPU, keep
    their malloc: the measurements behind tcmalloc were made on CPUs. An
    invalid SEMHASH_JAX_MALLOC exits with status 1 and the error.
    """
    platforms = _platforms_without_cpu()
    if platforms:
        logging.info("malloc: kept, JAX_PLATFORMS=%s excludes the CPU.", platforms)
        return
    accelerator = _installed_accelerator_package()
    if accelerator is not None:
        logging.info("malloc: kept, %s provides an accelerator backend.", accelerator)
        return
    try:
        host_allocator.restart_with_tcmalloc()
    except ValueError as e:
        # An environment variable, not a flag: the error alone, without the flags' help.
        raise SystemExit(f"Error: {e}") from None


def configure_xla_cpu() -> bool:
    """Add `XLA_CPU_CONVOLUTION_FLAG` to XLA_FLAGS, so that XLA runs CPU convolutions in Eigen.

    Call it before the first JAX computation, because XLA reads XLA_FLAGS once,
    when JAX starts its backends. XLA_FLAGS stay as they are when JAX_PLATFORMS
    excludes the CPU, when XLA_FLAGS set YNNPACK fusion types themselves, when an
    accelerator backend is installed, and for jaxlib other than 0.10.x. Returns
    True when the flag was added.
    """
    platforms = _platforms_without_cpu()
    if platforms:
        logging.info("XLA_FLAGS left as they are: JAX_PLATFORMS=%s excludes the CPU.", platforms)
        return False
    before = os.environ.get("XLA_FLAGS", "")
    if _YNN_FUSION_TYPE in before:
        logging.info("XLA_FLAGS set YNNPACK's fusion types and are kept: %s", before)
        return False
    # Reads the metadata of every installed distribution, so it comes after the cheap checks.
    accelerator = _installed_accelerator_package()
    if accelerator is not None:
        logging.info("XLA_FLAGS left as they are: %s provides an accelerator backend.", accelerator)
        return False
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        started = getattr(xla_bridge, "backends_are_initialized", lambda: False)
        if started():
            logging.warning(
                "JAX's backends have started already, so %s cannot apply; call "
                "configure_xla_cpu() before the first JAX computation.",
                XLA_CPU_CONVOLUTION_FLAG,
            )
            return False
    try:
        jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib_version = None
    after = xla_flags_for_cpu(before, jaxlib_version)
    if after == before:
        logging.info(
            "XLA_FLAGS left as they are: the CPU convolution setting was measured on "
            "jaxlib 0.10 only, and jaxlib is %s.",
            jaxlib_version,
        )
        return False
    os.environ["XLA_FLAGS"] = after
    logging.info("XLA_FLAGS=%s (Eigen's multi-threaded CPU convolutions).", after)
    return True


# Environment variables that show a job spread over several processes: set by
# SLURM (srun), Open MPI (mpirun) and Cloud TPU pod slices.
_MULTI_PROCESS_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def multi_process_environment() -> str | None:
    """Return the name of the cluster variable that announces several processes, or None."""
    for name in _MULTI_PROCESS_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return name
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "TPU_WORKER_HOSTNAMES"
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    return None


def initialize_distributed(
    mode: str,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Start JAX's multi-controller runtime when the job runs as several processes.

    mode "on" always calls `jax.distributed.initialize`, "off" never, and "auto"
    when a coordinator address is given or `multi_process_environment` finds a
    cluster variable. Arguments left None are detected by JAX (Cloud TPU, SLURM,
    Open MPI, Kubernetes). Must run before anything else touches a JAX device.
    Returns True when the runtime was started.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"Invalid --distributed={mode!r}: use auto, on or off.")
    given = [coordinator_address, num_processes, process_id]
    if any(value is not None for value in given) and coordinator_address is None:
        raise ValueError(
            "--num_processes and --process_id need --coordinator_address=HOST:PORT "
            "(the address of process 0)."
        )
    if mode == "off":
        if coordinator_address is not None:
            raise ValueError("--coordinator_address conflicts with --distributed=off.")
        return False
    detected = multi_process_environment()
    if coordinator_address is not None and detected is None:
        if num_processes is None or process_id is None:
            raise ValueError(
                "--coordinator_address needs --num_processes=N and --process_id=I here: "
                "no SLURM, Open MPI or TPU pod environment gives them."
            )
    reason = "--distributed=on"
    if mode == "auto":
        if coordinator_address is None and detected is None:
            return False
        reason = "--coordinator_address" if coordinator_address else f"${detected}"
    import jax

    # Processes that compute on CPUs exchange data over TCP with gloo; accelerator
    # backends use their own interconnect and ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.info(
        "Starting JAX's distributed runtime (%s): coordinator %s, process %s of %s.",
        reason,
        coordinator_address or "detected",
        "detected" if process_id is None else process_id,
        "detected" if num_processes is None else num_processes,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except ValueError as e:
        # JAX raises ValueError when it cannot find the cluster's layout.
        raise ValueError(
            f"Starting JAX's distributed runtime failed: {e}. On a machine that is not "
            "a Cloud TPU pod slice, SLURM or Open MPI job, pass --coordinator_address, "
            "--num_processes and --process_id, or --distributed=off for one process."
        ) from e
    logging.info(
        "JAX distributed runtime started: process %d of %d.",
        jax.process_index(),
        jax.process_count(),
    )
    return True


def initialize_distributed_from_flags() -> bool:
    """Call `initialize_distributed` with the flags; a bad combination is a usage error."""
    try:
        return initialize_distributed(
            DISTRIBUTED.value, COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def parse_flags(argv: list[str]) -> list[str]:
    """Parse the command line like absl's app.run, with bad flags reported as one line.

    Config-file errors (a missing or misspelled variant, an unknown --config.FIELD)
    reach absl with ml_collections' traceback inside, and the message that names
    the value comes last. This prints only that message and exits with status 2.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = _last_error_line(str(e))
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for an override of a field the config lacks.
        overrides = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
        if not overrides:
            raise
        field, _, hint = _unquote(str(e)).partition("\n")
        message = (
            f"Invalid config override among {', '.join(overrides)}: the "
            f"config has no field {field}. {hint or 'Check the field name.'} "
            "The fields are defined in semhash_jax/config_defaults.py and the config file."
        )
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _last_error_line(text: str) -> str:
    """Return the message of the last exception in a text with a traceback inside."""
    if "Traceback (most recent call last)" not in text:
        return text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":")[0].endswith(("Error", "Exception"))]
    if not errors:
        return text
    return errors[-1].split(":", 1)[1].strip()


def _unquote(text: str) -> str:
    """Return ml_collections' quoted KeyError text ("'name'\\nDid you mean ...") unquoted."""
    try:
        return str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text
