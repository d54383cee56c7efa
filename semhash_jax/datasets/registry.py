"""Dataset lookup by config name and one-time preparation into the TFDS data dir.

A dataset is either one of this package's own builders (which read local
files) or any builder registered with TFDS. Everything downstream sees only
a prepared TFDS builder, so no pipeline code is specific to one dataset.
"""

import os
import pathlib

from absl import logging
import tensorflow_datasets as tfds

from semhash_jax.datasets import fashion_mnist, image_folder

# This package's builders, by the name used in `config.dataset`.
LOCAL_BUILDERS = {
    "fashion_mnist": fashion_mnist.FashionMnistIdx,
}

# Checks of the local source files, by dataset name: each returns an error
# message, or None when every file is in place.
_SOURCE_CHECKS = {
    "fashion_mnist": fashion_mnist.source_error,
    image_folder.NAME: image_folder.source_error,
}

FILE_FORMAT = "array_record"


def default_data_dir() -> str:
    """Return the TFDS data dir used when the config leaves it empty."""
    return os.environ.get("TFDS_DATA_DIR", str(pathlib.Path.home() / "tensorflow_datasets"))


def get_builder(
    name: str, data_dir: str | None, source_dir: str | None = None
) -> tfds.core.DatasetBuilder:
    """Return the TFDS builder for `name`, writing array_record files.

    The image folder builder (`name` "image_folder") takes its folder from `source_dir`.
    """
    data_dir = data_dir or default_data_dir()
    if name == image_folder.NAME:
        if not source_dir:
            raise ValueError(
                "config.dataset='image_folder' needs --config.source_dir: "
                f"{image_folder.INSTRUCTIONS}"
            )
        # An unprepared folder is scanned when the builder is created, so a bad folder
        # is reported here, before TFDS wraps the error. A prepared one is not scanned.
        if not image_folder.is_prepared(data_dir, source_dir):
            message = image_folder.source_error(source_dir)
            if message:
                raise FileNotFoundError(message)
        return image_folder.ImageFolder(root=source_dir, data_dir=data_dir, file_format=FILE_FORMAT)
    if name in LOCAL_BUILDERS:
        return LOCAL_BUILDERS[name](data_dir=data_dir, file_format=FILE_FORMAT)
    try:
        return tfds.builder(name, data_dir=data_dir, file_format=FILE_FORMAT)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"Unknown dataset {name!r}: it is neither one of this package's "
            f"builders ({', '.join(sorted([*LOCAL_BUILDERS, image_folder.NAME]))}) nor a "
            "TFDS dataset. "
            "Set --config.dataset to one of those names."
        ) from e


def check_source(name: str, data_dir: str | None, source_dir: str | None):
    """Raise FileNotFoundError when `name` is neither prepared nor preparable."""
    builder = get_builder(name, data_dir, source_dir)
    if builder.is_prepared():
        return
    check = _SOURCE_CHECKS.get(name)
    if check is None:
        return
    if not source_dir:
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in {builder.data_dir} and "
            "--config.source_dir is empty. Set it to the folder with the source "
            "files."
        )
    message = check(source_dir)
    if message:
        raise FileNotFoundError(message)


def prepare(name: str, data_dir: str | None, source_dir: str | None) -> tfds.core.DatasetBuilder:
    """Prepare `name` once into the TFDS data dir and return its builder.

    `source_dir` is handed to TFDS as the manual download directory; builders
    that download ignore it.
    """
    builder = get_builder(name, data_dir, source_dir)
    if builder.is_prepared():
        logging.info("Dataset %s found prepared in %s.", name, builder.data_dir)
        return builder
    check_source(name, data_dir, source_dir)
    logging.info("Preparing dataset %s from %s into %s.", name, source_dir, builder.data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=source_dir)
    builder.download_and_prepare(download_config=download_config)
    logging.info("Finished preparing dataset %s.", name)
    return builder
