"""Tests for the shipped class-name lists and their use by the text encoder."""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from semhash_jax import run_setup
from semhash_jax.datasets import class_names
from semhash_jax.text import embeddings

# COCO's 80 category ids: 1..90 without the ten ids its annotations never use.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


@pytest.mark.parametrize(
    "name, count",
    [("cifar10", 10), ("coco", 80), ("imagenet2012", 1000), ("nuswide81", 81), ("nuswide21", 21)],
)
def test_shipped_list_sizes(name, count):
    names = class_names.load(name)
    assert len(names) == count
    assert len(set(names.first)) == count


def test_cifar10_names_in_label_order():
    assert class_names.load("cifar10").first == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip


def test_coco_keys_are_category_ids():
    names = class_names.load("coco")
    assert [int(key) for key in names.keys] == COCO_IDS
    assert names.first[0] == "person"
    assert names.first[-1] == "toothbrush"


def test_imagenet_synsets_in_tfds_label_order():
    labels_file = pathlib.Path(tfds.__file__).parent / "datasets/imagenet2012/labels.txt"
    names = class_names.load("imagenet2012")
    assert list(names.keys) == labels_file.read_text().split()
    assert names.names[0] == ("tench", "Tinca tinca")
    # The two cranes get their hypernyms, so every first name is distinct.
    assert "crane (wading bird)" in names.first
    assert "crane (lifting device)" in names.first


def test_nuswide21_is_ordered_subset_of_81():
    concepts81 = class_names.load("nuswide81").first
    concepts21 = class_names.load("nuswide21").first
    positions = [concepts81.index(concept) for concept in concepts21]
    assert positions == sorted(positions)
    assert concepts21[:3] == ("animal", "beach", "buildings")


def test_malformed_line_names_line_number(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("# source\n0\tcat\n1\n")
    with pytest.raises(ValueError, match=r"names.txt:3: expected"):
        class_names.read_file(path)


def test_missing_file_names_choices(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10, coco"):
        class_names.load(str(tmp_path / "absent.txt"))


def test_numeric_builder_names_rejected():
    with pytest.raises(ValueError, match="only by number"):
        class_names.for_dataset(None, ("0", "1", "2"), 3)


def test_class_count_mismatch_rejected():
    with pytest.raises(ValueError, match="names 10 classes but the dataset has 12"):
        class_names.for_dataset("cifar10", (), 12)


def test_lemma_average_is_normalised_mean(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("0\ttench\tTinca tinca\n1\tgoldfish\n")
    names = class_names.read_file(path)
    text_config = type(
        "Text",
        (),
        {"space": "bert", "model": embeddings.DEFAULT_TEXT_MODEL,
         "templates": ("a photo of a {}.",), "pooling": "mean", "normalize": True,
         "lemmas": "average"},
    )  # fmt: skip
    averaged = run_setup.embed_class_names(names, text_config, None)
    separate = embeddings.class_name_embeddings(
        ["tench", "Tinca tinca", "goldfish"],
        model=embeddings.DEFAULT_TEXT_MODEL,
        template="a photo of a {}.",
        cache_dir=None,
    )
    mean = (separate[0] + separate[1]) / 2
    np.testing.assert_allclose(averaged[0], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(averaged[1], separate[2], atol=1e-6)


def test_keys_in_another_order_rejected(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("sandal\tsandal\nankle_boot\tankle boot\nsneaker\tsneaker\n")
    with pytest.raises(ValueError, match="another order than the dataset's labels"):
        class_names.for_dataset(str(path), ("ankle_boot", "sandal", "sneaker"), 3)
    path.write_text("ankle_boot\tankle boot\nsandal\tsandal\nsneaker\tsneaker\n")
    names = class_names.for_dataset(str(path), ("ankle_boot", "sandal", "sneaker"), 3)
    assert names.first == ("ankle boot", "sandal", "sneaker")
