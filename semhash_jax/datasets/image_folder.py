"""TFDS builder for a folder of labelled images: the class is the parent folder's name.

Two layouts are accepted:
- root/<class>/<image>: one split, "train";
- root/<split>/<class>/<image> with <split> among train, validation and test.

Class names are the folder names in sorted order, with "_" read as a space by the
text encoder (see `class_names.for_dataset`). Files whose names end in an image
extension are read with Pillow and converted to RGB; a file that cannot be decoded
is skipped, logged with its path, and counted in the summary that ends each split.
Each root folder gets its own builder config, named after the folder and a hash of
its absolute path, so several folders can be prepared into one data dir.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

NAME = "image_folder"
SPLIT_NAMES = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

INSTRUCTIONS = (
    "Set --config.source_dir to a folder with one subfolder per class "
    "(<root>/<class>/<image>), or with train/validation/test subfolders that each "
    "contain class folders (<root>/<split>/<class>/<image>)."
)


def config_name(root: str | os.PathLike) -> str:
    """Return the builder config name of a root folder: its name and a path hash."""
    absolute = str(pathlib.Path(root).expanduser().absolute())
    slug = re.sub(r"[^a-z0-9]+", "_", pathlib.Path(absolute).name.lower()).strip("_")
    digest = hashlib.sha256(absolute.encode("utf-8")).hexdigest()[:8]
    return f"{slug or 'root'}_{digest}"


def _subfolders(folder: pathlib.Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def scan(root: str | os.PathLike) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
    """Return (class names, {split: [(relative path, class index), ...]}) of a folder.

    Raises FileNotFoundError when the folder is missing and ValueError when it
    contains no class folder with an image.
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} not found. {INSTRUCTIONS}")
    top = _subfolders(root)
    if top and set(top) <= set(SPLIT_NAMES):
        split_dirs = {split: root / split for split in top}
    else:
        split_dirs = {"train": root}
    classes = sorted({name for folder in split_dirs.values() for name in _subfolders(folder)})
    if not classes:
        raise ValueError(f"Image folder {str(root)!r} has no class subfolders. {INSTRUCTIONS}")
    index = {name: i for i, name in enumerate(classes)}
    files = {}
    for split, folder in split_dirs.items():
        entries = []
        for name in _subfolders(folder):
            for path in sorted((folder / name).iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    entries.append((str(path.relative_to(root)), index[name]))
        files[split] = entries
    if not any(files.values()):
        raise ValueError(
            f"Image folder {str(root)!r} has class folders but no image files (extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}). {INSTRUCTIONS}"
        )
    return tuple(classes), files


def is_prepared(data_dir: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Return whether `root` has been prepared into `data_dir` (without scanning it)."""
    version_dir = pathlib.Path(data_dir) / NAME / config_name(root) / str(ImageFolder.VERSION)
    return (version_dir / "dataset_info.json").is_file()


def source_error(root: str | os.PathLike) -> str | None:
    """Return why `root` cannot be prepared as an image folder, or None."""
    try:
        scan(root)
    except (FileNotFoundError, ValueError) as e:
        return str(e)
    return None


def read_image(path: pathlib.Path) -> np.ndarray:
    """Decode an image file to uint8 RGB [H, W, 3]; raise OSError or ValueError if unreadable."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """Images in class folders, prepared into array_record files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images, labels from folder names, relative file names."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def __init__(self, *, root: str | os.PathLike, **kwargs):
        self._root = pathlib.Path(root).expanduser()
        self._classes = None
        config = tfds.core.BuilderConfig(name=config_name(root), description=str(self._root))
        super().__init__(config=config, **kwargs)

    def _class_names(self) -> tuple[str, ...]:
        if self._classes is None:
            # A prepared dataset keeps its class names, so it is not scanned again and
            # stays usable when the source folder is gone.
            prepared_names = pathlib.Path(self.data_path) / "label.labels.txt"
            if prepared_names.is_file():
                self._classes = tuple(prepared_names.read_text().split("\n")[:-1])
            else:
                self._classes = scan(self._root)[0]
        return self._classes

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=self._class_names()),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the sorted file order, so record ids are stable across preparations.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        classes, files = scan(self._root)
        if classes != self._class_names():
            raise ValueError(f"The class folders of {self._root} changed while preparing it.")
        return {split: self._generate_examples(split, entries) for split, entries in files.items()}

    def _generate_examples(self, split: str, entries):
        skipped = 0
        for relative, label in entries:
            try:
                image = read_image(self._root / relative)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                skipped += 1
                logging.warning("Skipping unreadable image %s: %s", self._root / relative, e)
                continue
            yield relative, {"image": image, "label": label, "file_name": relative}
        logging.info(
            "Image folder %s, split %s: %d images read, %d unreadable skipped.",
            self._root,
            split,
            len(entries) - skipped,
            skipped,
        )
        if skipped == len(entries):
            raise ValueError(
                f"No image of split {split!r} in {self._root} could be read ({skipped} files). "
                "Check the files, or remove that split's folder."
            )
