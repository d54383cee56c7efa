"""Tests for crops and resizes, with expected pixels worked out by hand."""

import grain
import numpy as np
import pytest

from semhash_jax import preprocessing


def banded_image(height, width):
    """uint8 [H, W, 3] whose pixel (y, x) contains (y % 256, x % 256, 7)."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows % 256, columns % 256, np.full_like(rows, 7)], -1).astype(np.uint8)


def test_center_crop_without_resize():
    # crop_fraction 0.5 and size 50: the shorter side (100) is already 50 / 0.5,
    # so the image is not resized and the crop is rows 25..74, columns 125..174.
    image = banded_image(100, 300)
    cropped = preprocessing.center_crop(image, 50, 0.5)
    np.testing.assert_array_equal(cropped, image[25:75, 125:175])


def test_center_crop_of_portrait_image():
    image = banded_image(300, 100)
    cropped = preprocessing.center_crop(image, 50, 0.5)
    np.testing.assert_array_equal(cropped, image[125:175, 25:75])


def test_center_crop_resizes_constant_image():
    image = np.full((64, 96, 3), 200, np.uint8)
    cropped = preprocessing.center_crop(image, 32, 0.875)
    assert cropped.shape == (32, 32, 3)
    assert np.all(cropped == 200)


def test_random_crop_full_area_is_identity():
    image = banded_image(40, 40)
    rng = np.random.default_rng(0)
    cropped = preprocessing.random_resized_crop(image, 40, rng, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(cropped, image)


def test_random_crop_is_inside_image():
    # A quarter of the area with aspect ratio 1 is a 20 x 20 window at an integer
    # offset. At size 20 it is copied without resizing.
    image = banded_image(40, 40)
    rng = np.random.default_rng(3)
    cropped = preprocessing.random_resized_crop(
        image, 20, rng, scale=(0.25, 0.25), ratio=(1.0, 1.0)
    )
    top, left = int(cropped[0, 0, 0]), int(cropped[0, 0, 1])
    np.testing.assert_array_equal(cropped, image[top : top + 20, left : left + 20])


def test_random_crop_falls_back_to_center():
    # No crop of a 1 x 100 strip has a ratio within [3/4, 4/3] and 90 % of the
    # area, so the fallback takes the central 1 x 1 (4/3 of the height, rounded).
    image = banded_image(1, 100)
    rng = np.random.default_rng(0)
    cropped = preprocessing.random_resized_crop(image, 1, rng, scale=(0.9, 1.0))
    np.testing.assert_array_equal(cropped, image[:, 49:50])


def test_train_crop_is_deterministic_per_seed():
    images = [banded_image(30 + i, 50 - i) for i in range(6)]
    source = [{"image": image, "label": 0, "id": i} for i, image in enumerate(images)]

    def crops(seed):
        dataset = grain.MapDataset.source(source).random_map(preprocessing.TrainCrop(16), seed=seed)
        return np.stack([dataset[i]["image"] for i in range(6)])

    first = crops(1)
    assert first.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(first, crops(1))
    assert not np.array_equal(first, crops(2))


def test_grayscale_gets_channel_axis():
    element = {"image": np.zeros((10, 12), np.uint8), "label": 0, "id": 5}
    cropped = preprocessing.EvalCrop(8, 1.0).map(element)
    assert cropped["image"].shape == (8, 8, 1)


def test_fixed_mode_rejects_wrong_size():
    element = {"image": np.zeros((30, 30, 3), np.uint8), "label": 0, "id": 17}
    with pytest.raises(ValueError, match="pool id 17 has shape"):
        preprocessing.CheckSize(32, 3).map(element)


def test_empty_image_rejected():
    element = {"image": np.zeros((0, 30, 3), np.uint8), "label": 0, "id": 4}
    with pytest.raises(ValueError, match="pool id 4"):
        preprocessing.EvalCrop(8, 0.875).map(element)
