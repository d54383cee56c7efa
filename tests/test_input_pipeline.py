"""Input pipeline on a real Fashion-MNIST slice."""

import numpy as np
import pytest

from semhash_jax import input_pipeline, preprocessing
from tests import helpers

MEAN, STD = (0.25,), (0.5,)
FIXED = preprocessing.CheckSize(28, 1)


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return helpers.prepare_slice(tmp_path_factory.mktemp("tfds"), max_examples=100)


@pytest.fixture(scope="module")
def idx_images():
    train = helpers.read_idx_independently(helpers.SOURCE_DIR / "train-images-idx3-ubyte.gz")
    test = helpers.read_idx_independently(helpers.SOURCE_DIR / "t10k-images-idx3-ubyte.gz")
    return np.concatenate([train[:100], test[:100]])


def make_source(builder, ids):
    return input_pipeline.PoolSource(builder, ("train", "test"), (100, 100), ids)


def test_pool_ids_cross_splits(builder, idx_images):
    source = make_source(builder, [5, 150, 99, 100])
    items = source.__getitems__([0, 1, 2, 3])
    for item, pool_id in zip(items, [5, 150, 99, 100]):
        assert item["id"] == pool_id
        np.testing.assert_array_equal(item["image"][..., 0], idx_images[pool_id])
    assert source[1]["id"] == 150


def test_split_size_mismatch_raises(builder):
    with pytest.raises(ValueError, match="new --workdir"):
        input_pipeline.PoolSource(builder, ("train", "test"), (100, 99), [0])


def test_train_batches_normalised_and_shuffled(builder, idx_images):
    ids = np.arange(0, 200, 2)  # 100 items
    iterator = input_pipeline.train_iterator(
        make_source(builder, ids),
        global_batch_size=20,
        seed=7,
        mean=MEAN,
        std=STD,
        transform=FIXED,
    )
    epoch = [next(iterator) for _ in range(5)]
    for batch in epoch:
        assert batch["image"].shape == (20, 28, 28, 1)
        assert batch["image"].dtype == np.float32
        assert batch["label"].shape == (20,)
    seen = np.concatenate([batch["id"] for batch in epoch])
    # One epoch visits every id exactly once, in a shuffled order.
    np.testing.assert_array_equal(np.sort(seen), ids)
    assert not np.array_equal(seen, ids)
    first = epoch[0]
    expected = (idx_images[first["id"][0]] / 255.0 - 0.25) / 0.5
    np.testing.assert_allclose(first["image"][0, ..., 0], expected, rtol=1e-6)
    second_epoch = np.concatenate([next(iterator)["id"] for _ in range(5)])
    np.testing.assert_array_equal(np.sort(second_epoch), ids)
    assert not np.array_equal(second_epoch, seen)


def test_train_order_is_fixed_by_seed(builder):
    source = make_source(builder, np.arange(200))

    def first_ids(seed):
        iterator = input_pipeline.train_iterator(
            source, global_batch_size=10, seed=seed, mean=MEAN, std=STD, transform=FIXED
        )
        return np.concatenate([next(iterator)["id"] for _ in range(3)])

    np.testing.assert_array_equal(first_ids(1), first_ids(1))
    assert not np.array_equal(first_ids(1), first_ids(2))


def test_eval_batches_pad_and_mask(builder):
    ids = np.arange(13)
    batches = list(
        input_pipeline.eval_batches(
            make_source(builder, ids), global_batch_size=8, mean=MEAN, std=STD, transform=FIXED
        )
    )
    assert len(batches) == 2
    assert all(batch["image"].shape == (8, 28, 28, 1) for batch in batches)
    np.testing.assert_array_equal(batches[1]["mask"], [True] * 5 + [False] * 3)
    kept = np.concatenate([batch["id"][batch["mask"]] for batch in batches])
    np.testing.assert_array_equal(kept, ids)


def test_in_memory_source_matches_records(builder):
    ids = np.array([3, 150, 42, 199])
    source = make_source(builder, ids)
    cached = input_pipeline.InMemorySource(source, chunk_size=3)
    assert len(cached) == 4
    for index in range(4):
        expected = source[index]
        item = cached[index]
        assert item["id"] == expected["id"]
        assert item["label"] == expected["label"]
        np.testing.assert_array_equal(item["image"], expected["image"])


def test_process_rows_rebuild_global_batches(builder):
    """Two processes' rows, laid end to end, are the single-process batches."""
    source = make_source(builder, np.arange(100))
    # A random crop, so that element transforms depend on the stream position too.
    transform = preprocessing.TrainCrop(size=20)

    def batches(rows):
        iterator = input_pipeline.train_iterator(
            source,
            global_batch_size=8,
            seed=3,
            mean=MEAN,
            std=STD,
            transform=transform,
            process_rows=rows,
        )
        return [next(iterator) for _ in range(15)]  # past the first epoch

    whole = batches(None)
    first, second = batches((0, 4)), batches((4, 8))
    for full, a, b in zip(whole, first, second):
        for key in ("id", "label", "image"):
            np.testing.assert_array_equal(full[key], np.concatenate([a[key], b[key]]))


def test_process_rows_must_be_equal_blocks(builder):
    source = make_source(builder, np.arange(10))
    with pytest.raises(ValueError, match="equal contiguous blocks"):
        input_pipeline.train_iterator(
            source,
            global_batch_size=8,
            seed=0,
            mean=MEAN,
            std=STD,
            transform=FIXED,
            process_rows=(2, 5),
        )


def test_eval_batches_second_process_rows(builder):
    source = make_source(builder, np.arange(13))
    batches = list(
        input_pipeline.eval_batches(
            source,
            global_batch_size=8,
            mean=MEAN,
            std=STD,
            transform=FIXED,
            process_rows=(4, 8),
        )
    )
    np.testing.assert_array_equal(batches[0]["id"], [4, 5, 6, 7])
    # Rows 12..15 of the last global batch: one item, then padding.
    np.testing.assert_array_equal(batches[1]["mask"], [True, False, False, False])
    assert batches[1]["id"][0] == 12
