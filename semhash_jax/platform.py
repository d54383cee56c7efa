"""Process-level settings shared by the binaries."""

import logging as python_logging
import os

from absl import logging

# Library modules whose INFO lines (dozens per checkpoint) are hidden from the
# binaries' logs; their warnings and errors still show.
_QUIET_MODULES = ("/orbax/",)


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
    """Hide INFO logs of checkpointing internals and transformers' notices.

    transformers warns on import that PyTorch is missing, which is expected
    here: only its tokenizer and config readers are used.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.get_absl_handler().addFilter(_QuietLibraries())
