"""TFDS builder for Fashion-MNIST that reads local IDX files.

TFDS's own `fashion_mnist` builder downloads the same four files. This builder
takes them from a local folder instead (the TFDS manual directory), so that
preparing the dataset works offline. Debian's `dataset-fashion-mnist` package
installs the files under /usr/share/datasets/fashion-mnist.
"""

import gzip
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"

# Class names as the dataset's authors write them (zalandoresearch/fashion-mnist).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049

INSTRUCTIONS = (
    "Fashion-MNIST is read from its four IDX files "
    f"({', '.join(name for pair in SPLIT_FILES.values() for name in pair)}). "
    "Install them with `apt-get install dataset-fashion-mnist` (they land in "
    f"{DEFAULT_SOURCE_DIR}), or download them from "
    "https://github.com/zalandoresearch/fashion-mnist into a folder of your own "
    "and set --config.source_dir to that folder."
)


def missing_files(source_dir: str | os.PathLike) -> list[str]:
    """Return the IDX file names that are not present in `source_dir`."""
    folder = pathlib.Path(source_dir)
    return [name for pair in SPLIT_FILES.values() for name in pair if not (folder / name).is_file()]


def source_error(source_dir: str | os.PathLike) -> str | None:
    """Return an error message naming the missing files, or None."""
    missing = missing_files(source_dir)
    if not missing:
        return None
    return (
        f"Fashion-MNIST files missing in {str(source_dir)!r}: {', '.join(missing)}. {INSTRUCTIONS}"
    )


def _read_idx(path: pathlib.Path, magic: int, item_shape: tuple[int, ...]):
    """Read one gzip-compressed IDX file into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    found_magic = int.from_bytes(data[0:4], "big")
    if found_magic != magic:
        raise ValueError(
            f"{path} is not a valid IDX file: magic number {found_magic}, "
            f"expected {magic}. Reinstall the file; {INSTRUCTIONS}"
        )
    count = int.from_bytes(data[4:8], "big")
    header = 8 + 4 * len(item_shape)
    values = np.frombuffer(data, dtype=np.uint8, offset=header)
    expected = count * int(np.prod(item_shape, dtype=np.int64))
    if values.size != expected:
        raise ValueError(
            f"{path} is truncated: {values.size} bytes of data, expected "
            f"{expected} for {count} items. Reinstall the file; {INSTRUCTIONS}"
        )
    return values.reshape((count,) + item_shape)


def read_split(source_dir: str | os.PathLike, split: str):
    """Return (images [N, 28, 28, 1] uint8, labels [N] int64) of one split."""
    folder = pathlib.Path(source_dir)
    image_file, label_file = SPLIT_FILES[split]
    images = _read_idx(folder / image_file, _IMAGE_MAGIC, (28, 28))
    labels = _read_idx(folder / label_file, _LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise ValueError(
            f"{folder}: {len(images)} images but {len(labels)} labels in split "
            f"{split!r}. Reinstall the files; {INSTRUCTIONS}"
        )
    return images[..., None], labels.astype(np.int64)


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (60,000 train and 10,000 test images) from local IDX files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images, labels and per-split indices."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    # Tests may prepare a slice of each split by setting this on a subclass.
    MAX_EXAMPLES_PER_SPLIT: int | None = None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            # Keep the IDX order, so record i of a split is image i of its file.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source_dir = dl_manager.manual_dir
        message = source_error(source_dir)
        if message:
            raise FileNotFoundError(message)
        return {split: self._generate_examples(source_dir, split) for split in SPLIT_FILES}

    def _generate_examples(self, source_dir, split: str):
        images, labels = read_split(source_dir, split)
        if self.MAX_EXAMPLES_PER_SPLIT is not None:
            images = images[: self.MAX_EXAMPLES_PER_SPLIT]
            labels = labels[: self.MAX_EXAMPLES_PER_SPLIT]
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image, "label": int(label)}
