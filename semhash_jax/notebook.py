"""Set up a notebook or an interactive Python session as the binaries set themselves up.

    from semhash_jax import notebook
    notebook.start()  # first, before anything imports JAX

The binaries set up their process the same way before they train or evaluate.
`start` marks absl flags as parsed, because grain and Orbax read them and a
notebook parses no command line. It applies the XLA CPU setting of
`platform.configure_xla_cpu`, keeps TensorFlow off GPUs and TPUs, and quiets the
checkpointing logs. absl's log lines go to stderr, which Jupyter and Colab show
under the cell. A kernel cannot restart itself under tcmalloc as the binaries do
(`host_allocator`); `start` logs how to start Jupyter with it where it is installed.
"""

import os

from absl import flags, logging

from semhash_jax import host_allocator, platform

_LOG_LEVELS = ("debug", "info", "warning", "error")
_started = False


def start(log_level: str = "info") -> None:
    """Set up this process for semhash_jax's library calls. A second call only sets the level."""
    global _started
    if log_level not in _LOG_LEVELS:
        raise ValueError(f"Invalid log_level={log_level!r}. Pass one of {', '.join(_LOG_LEVELS)}.")
    logging.set_verbosity(log_level)
    logging.set_stderrthreshold(log_level)
    if _started:
        return
    _started = True
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    # Put absl's handler on the root logger, as app.run does, so every library's log lines
    # get absl's format and pass through the filter of quiet_library_logs.
    logging.use_absl_handler()
    platform.configure_xla_cpu()
    platform.quiet_library_logs()
    platform.hide_accelerators_from_tensorflow()
    library, _ = host_allocator.preload_plan(os.environ)
    if library is not None:
        logging.info(
            "This kernel uses glibc's malloc. Training steps on CPUs ran 1.1 to 1.6x "
            "faster when Jupyter started with LD_PRELOAD=%s (docs/benchmarks.md).",
            library,
        )
    logging.info("semhash_jax is set up for this session")
