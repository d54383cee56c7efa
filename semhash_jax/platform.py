"""Process-level settings shared by the binaries."""

import tensorflow as tf


def hide_accelerators_from_tensorflow():
    """Keep TensorFlow (used by TFDS) off GPUs and TPUs, which JAX owns."""
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
