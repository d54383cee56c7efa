"""Shared test fixtures' building blocks: a small slice of real Fashion-MNIST."""

import gzip
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from configs import fashion_mnist as fashion_mnist_config
from semhash_jax.datasets import fashion_mnist, registry

SOURCE_DIR = pathlib.Path(fashion_mnist.DEFAULT_SOURCE_DIR)


def read_idx_independently(path: pathlib.Path) -> np.ndarray:
    """Parse an IDX file from its spec: magic (2 zero bytes, dtype, ndim), dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x00\x00"
    assert raw[2] == 0x08  # unsigned byte data
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


class FashionMnistSlice(fashion_mnist.FashionMnistIdx, skip_registration=True):
    """The real builder, limited to the first examples of each split.

    It keeps the real builder's name, so that a data dir prepared with it looks
    prepared to the binaries.
    """

    name = "fashion_mnist_idx"
    MAX_EXAMPLES_PER_SPLIT = 600


def prepare_slice(data_dir, source_dir=SOURCE_DIR, max_examples=600):
    builder_class = type(
        "Slice",
        (FashionMnistSlice,),
        {
            "MAX_EXAMPLES_PER_SPLIT": max_examples,
            "__module__": __name__,
            # TFDS derives a builder's name from its class name unless set.
            "name": FashionMnistSlice.name,
        },
        skip_registration=True,
    )
    builder = builder_class(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(source_dir))
    )
    # The binaries must find this slice prepared instead of preparing all 70,000 images.
    assert registry.get_builder("fashion_mnist", str(data_dir)).is_prepared()
    return builder


def _getitems_without_self(record_keys, generator, serialized=False):
    """Stand-in for tfds.testing.mocking._getitems.

    TFDS 4.9's mock_data assigns a functools.partial of `_getitems(self, ...)` to
    the mock data source's `__getitems__`, which MagicMock does not bind, so every
    batched read fails with "missing 1 required positional argument". Unserialized
    examples do not need `self`.
    """
    if serialized:
        raise NotImplementedError("serialized reads are not used by these tests")
    return [generator[key] for key in record_keys]


def mock_tfds(monkeypatch, num_examples: int):
    """Return tfds.testing.mock_data(num_examples) with batched reads working."""
    from tensorflow_datasets.testing import mocking

    monkeypatch.setattr(mocking, "_getitems", _getitems_without_self)
    return tfds.testing.mock_data(num_examples=num_examples)


def runlocal_config(**overrides):
    """Return Fashion-MNIST's runlocal config with protocol train_test_split and overrides
    given by dotted field name, e.g. **{"loss.alignment": "hinge"}."""
    config = fashion_mnist_config.get_config("protocol=train_test_split,runlocal")
    config.unlock()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    config.lock()
    return config


def two_step_config(config, data_dir, **overrides):
    """Return `config` cut to two training steps in `data_dir`, with top-level overrides."""
    config.unlock()
    config.data_dir = str(data_dir)
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.optimizer.warmup_steps = 1
    for key, value in overrides.items():
        setattr(config, key, value)
    config.lock()
    return config
