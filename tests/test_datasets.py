"""Fashion-MNIST builder on real files, and the retrieval protocols."""

import gzip
import shutil

import numpy as np
import pytest

from semhash_jax.datasets import fashion_mnist, protocols, registry
from tests import helpers


@pytest.fixture(scope="module")
def slice_builder(tmp_path_factory):
    return helpers.prepare_slice(tmp_path_factory.mktemp("tfds"), max_examples=300)


def test_builder_records_match_idx_files(slice_builder):
    images = helpers.read_idx_independently(helpers.SOURCE_DIR / "t10k-images-idx3-ubyte.gz")
    labels = helpers.read_idx_independently(helpers.SOURCE_DIR / "t10k-labels-idx1-ubyte.gz")
    source = slice_builder.as_data_source(split="test")
    assert len(source) == 300
    for index in (0, 1, 150, 299):
        record = source[index]
        np.testing.assert_array_equal(record["image"][..., 0], images[index])
        assert record["label"] == labels[index]


def test_builder_splits_and_class_names(slice_builder):
    info = slice_builder.info
    assert set(info.splits.keys()) == {"train", "test"}
    assert info.features["label"].names[0] == "T-shirt/top"
    assert info.features["label"].names[9] == "Ankle boot"
    assert info.features["image"].shape == (28, 28, 1)


def test_read_labels_matches_idx(slice_builder):
    labels = helpers.read_idx_independently(helpers.SOURCE_DIR / "train-labels-idx1-ubyte.gz")[:300]
    np.testing.assert_array_equal(protocols.read_labels(slice_builder, "train"), labels)


def test_missing_source_names_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        registry.check_source("fashion_mnist", str(tmp_path / "tfds"), str(tmp_path / "none"))


def test_empty_source_dir_setting_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="source_dir"):
        registry.check_source("fashion_mnist", str(tmp_path / "tfds"), None)


def test_corrupt_idx_file_raises(tmp_path):
    for name in (
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ):
        shutil.copy(helpers.SOURCE_DIR / name, tmp_path / name)
    with gzip.open(helpers.SOURCE_DIR / "train-images-idx3-ubyte.gz") as f:
        head = f.read(16 + 784 * 5)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(head)  # The header declares 60,000 images, the data contains 5.
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.read_split(tmp_path, "train")


def test_unknown_dataset_raises(tmp_path):
    with pytest.raises(ValueError, match="config.dataset"):
        registry.get_builder("no_such_dataset_xyz", str(tmp_path))


@pytest.fixture(scope="module")
def real_labels():
    return {
        "train": helpers.read_idx_independently(
            helpers.SOURCE_DIR / "train-labels-idx1-ubyte.gz"
        ).astype(np.int64),
        "test": helpers.read_idx_independently(
            helpers.SOURCE_DIR / "t10k-labels-idx1-ubyte.gz"
        ).astype(np.int64),
    }


def test_query1000_protocol_counts(real_labels):
    protocol = protocols.get_protocol("query1000_per_class")
    split = protocols.make_split(protocol, "fashion_mnist", real_labels, 10, seed=0)
    labels = split.labels
    assert len(labels) == 70_000
    assert len(split.query_ids) == 1000
    assert len(split.database_ids) == 69_000
    assert len(split.train_ids) == 5000
    np.testing.assert_array_equal(np.bincount(labels[split.query_ids]), [100] * 10)
    np.testing.assert_array_equal(np.bincount(labels[split.train_ids]), [500] * 10)
    # Queries come from the test split (ids 60000..69999).
    assert split.query_ids.min() >= 60_000
    assert not np.intersect1d(split.query_ids, split.database_ids).size
    assert np.union1d(split.query_ids, split.database_ids).size == 70_000
    assert np.isin(split.train_ids, split.database_ids).all()
    np.testing.assert_array_equal(labels[:60_000], real_labels["train"])


def test_split_depends_on_seed_only(real_labels):
    protocol = protocols.get_protocol("query1000_per_class")
    first = protocols.make_split(protocol, "fashion_mnist", real_labels, 10, seed=3)
    again = protocols.make_split(protocol, "fashion_mnist", real_labels, 10, seed=3)
    other = protocols.make_split(protocol, "fashion_mnist", real_labels, 10, seed=4)
    np.testing.assert_array_equal(first.train_ids, again.train_ids)
    np.testing.assert_array_equal(first.query_ids, again.query_ids)
    assert not np.array_equal(first.query_ids, other.query_ids)


def test_train_test_split_protocol(real_labels):
    protocol = protocols.get_protocol("train_test_split")
    split = protocols.make_split(protocol, "fashion_mnist", real_labels, 10, seed=0)
    np.testing.assert_array_equal(split.query_ids, np.arange(60_000, 70_000))
    np.testing.assert_array_equal(split.database_ids, np.arange(60_000))
    np.testing.assert_array_equal(split.train_ids, np.arange(60_000))


def test_class_with_too_few_images_raises():
    labels = {"train": np.zeros(10, np.int64), "test": np.array([0] * 200 + [1] * 50)}
    protocol = protocols.get_protocol("query1000_per_class")
    with pytest.raises(ValueError, match="Class 1 has 50"):
        protocols.make_split(protocol, "toy", labels, 2, seed=0)


def test_split_saved_and_reused(tmp_path, real_labels):
    protocol = protocols.get_protocol("query1000_per_class")
    split = protocols.make_split(protocol, "fashion_mnist", real_labels, 10, seed=0)
    protocols.save_split(split, tmp_path)
    loaded = protocols.load_split(tmp_path)
    np.testing.assert_array_equal(loaded.train_ids, split.train_ids)
    np.testing.assert_array_equal(loaded.query_ids, split.query_ids)
    np.testing.assert_array_equal(loaded.database_ids, split.database_ids)
    assert loaded.split_sizes == (60_000, 10_000)
    with pytest.raises(ValueError, match="seed 0"):
        protocols.check_matches(loaded, "query1000_per_class", "fashion_mnist", 1, tmp_path)


def test_unknown_protocol_raises():
    with pytest.raises(ValueError, match="config.protocol"):
        protocols.get_protocol("cifar_z")
