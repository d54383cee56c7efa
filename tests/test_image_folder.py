"""The image-folder builder on a small folder of real PNG and JPEG files made here."""

import json
import logging
import math

import numpy as np
from PIL import Image
import pytest

from configs import image_folder as image_folder_config
from semhash_jax import run_setup, train
from semhash_jax.datasets import class_names, image_folder, registry
from tests import helpers

CLASSES = ("ankle_boot", "sandal", "sneaker")


def write_folder(root, per_class=10, corrupt=True):
    """Write per_class images of random sizes per class (odd ones PNG, even JPEG)."""
    rng = np.random.default_rng(0)
    originals = {}
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            height, width = rng.integers(20, 60, 2)
            # Smooth images survive JPEG compression nearly unchanged.
            base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
            image = np.clip(base * 0.5 + 40 * label, 0, 255).astype(np.uint8)
            suffix = ".png" if index % 2 else ".jpg"
            relative = f"{name}/{index:02d}{suffix}"
            Image.fromarray(image).save(root / relative)
            originals[relative] = (image, label)
    if corrupt:
        (root / "sandal" / "broken.jpg").write_bytes(b"this is not a JPEG file")
    (root / "sneaker" / "notes.txt").write_text("not an image")
    return originals


def test_scan_sorts_classes_and_files(tmp_path):
    write_folder(tmp_path / "images")
    classes, files = image_folder.scan(tmp_path / "images")
    assert classes == CLASSES
    assert list(files) == ["train"]
    assert len(files["train"]) == 31  # 30 images and the corrupt file; notes.txt is not listed
    assert files["train"][0] == ("ankle_boot/00.jpg", 0)


def test_split_layout_detected(tmp_path):
    write_folder(tmp_path / "images" / "train", corrupt=False)
    write_folder(tmp_path / "images" / "test", per_class=2, corrupt=False)
    classes, files = image_folder.scan(tmp_path / "images")
    assert classes == CLASSES
    assert sorted(files) == ["test", "train"]
    assert len(files["test"]) == 6
    assert files["test"][0] == ("test/ankle_boot/00.jpg", 0)


def test_prepare_skips_and_counts_corrupt_image(tmp_path, caplog):
    originals = write_folder(tmp_path / "images")
    caplog.set_level(logging.INFO)
    builder = registry.prepare("image_folder", str(tmp_path / "tfds"), str(tmp_path / "images"))
    source = builder.as_data_source(split="train")
    assert len(source) == 30
    assert "1 unreadable skipped" in caplog.text
    assert "broken.jpg" in caplog.text
    for index in (0, 1, 17):
        record = source[index]
        image, label = originals[record["file_name"].decode()]
        assert record["label"] == label
        assert record["image"].shape == image.shape
        assert np.abs(record["image"].astype(int) - image).mean() < 3  # JPEG re-encoding
    names = class_names.for_dataset(None, tuple(builder.info.features["label"].names), len(CLASSES))
    assert names.first == ("ankle boot", "sandal", "sneaker")


def test_missing_source_dir_is_explained(tmp_path):
    with pytest.raises(ValueError, match="needs --config.source_dir"):
        registry.get_builder("image_folder", str(tmp_path), None)
    with pytest.raises(FileNotFoundError, match="not found"):
        registry.check_source("image_folder", str(tmp_path / "tfds"), str(tmp_path / "absent"))


def test_folder_without_images_rejected(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image files"):
        registry.check_source("image_folder", str(tmp_path / "tfds"), str(tmp_path / "images"))


def test_runlocal_trains_on_folder(tmp_path):
    write_folder(tmp_path / "images")
    config = helpers.two_step_config(
        image_folder_config.get_config("runlocal"),
        tmp_path / "tfds",
        source_dir=str(tmp_path / "images"),
    )
    workdir = tmp_path / "work"
    results = train.train_and_evaluate(config, str(workdir))
    protocol = json.loads((workdir / "protocol/protocol.json").read_text())
    # One query per class (10% of 10 images, or of 9 for the class with the corrupt file).
    assert protocol["num_query"] == 3
    assert protocol["num_database"] == 27
    assert math.isfinite(results["metrics"]["mAP@all"])
    setup = run_setup.prepare_run(config, workdir, create_split=False)
    assert setup.class_names == ("ankle boot", "sandal", "sneaker")


def test_prepared_folder_usable_after_source_removed(tmp_path):
    write_folder(tmp_path / "images", per_class=2, corrupt=False)
    registry.prepare("image_folder", str(tmp_path / "tfds"), str(tmp_path / "images"))
    (tmp_path / "images").rename(tmp_path / "moved")
    builder = registry.prepare("image_folder", str(tmp_path / "tfds"), str(tmp_path / "images"))
    assert tuple(builder.info.features["label"].names) == CLASSES
    assert len(builder.as_data_source(split="train")) == 6
