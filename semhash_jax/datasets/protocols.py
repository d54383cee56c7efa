"""Retrieval protocols: which images are queries, database and training set.

A protocol turns the splits of a prepared dataset into three id lists. An id is
a position in the "pool", the protocol's splits laid end to end in the order
the protocol names them (for `("train", "test")`, ids 0..59999 are the
Fashion-MNIST training images and 60000..69999 the test images). The lists are
drawn once by seed, saved in the workdir and reused by every later run and by
the evaluation binary, so training and evaluation always see the same split.
"""

import dataclasses
import json
import os
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from semhash_jax import atomic_files
from semhash_jax.datasets import class_names as class_names_lib
from semhash_jax.datasets import list_files

SPLIT_FILE = "protocol/ids.npz"
METADATA_FILE = "protocol/protocol.json"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Rules that split a dataset into query, database and training ids.

    Two kinds exist. A sampled protocol (`queries_per_class` or `query_fraction`
    set) pools `splits`, draws `queries_per_class` queries per class (or that
    fraction of each class, at least one image) from `query_split`, and makes every
    other pooled image a database item. It draws `train_per_class` training images
    per class from the database, or trains on the whole database when that is None.
    A fixed protocol uses whole splits: queries are `query_split`, database and
    training set are `database_split`. A list protocol (`lists` set) takes the
    three sets and their labels from list files (see `list_files`) whose images
    are found among the records of `splits` by file name.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    query_split: str
    database_split: str | None = None
    queries_per_class: int | None = None
    query_fraction: float | None = None
    train_per_class: int | None = None
    # List protocols: the list files, their label column count, the shipped class
    # names whose keys (synset ids) the dataset's own labels must match, and where
    # the files are published.
    lists: tuple[list_files.ListFile, ...] = ()
    list_columns: int | None = None
    list_class_names: str | None = None
    list_source: str = ""
    # Multi-label lists keep every label of a row (multi-hot labels [N, C]).
    multi_label: bool = False
    # The record feature with the image's file name.
    file_name_key: str = "file_name"
    # Object-label protocols (`objects_key` set) take multi-hot labels from the class
    # ids of each record's objects. They draw `queries_total` queries and
    # `train_total` training images at random from the images with an object.
    objects_key: str | None = None
    queries_total: int | None = None
    train_total: int | None = None


PROTOCOLS = {
    # The classic CIFAR-10 hashing protocol, applied to all 70,000 images.
    "query1000_per_class": Protocol(
        name="query1000_per_class",
        description=(
            "100 queries per class from the test split; database: every other "
            "image of train and test; training set: 500 per class from the "
            "database"
        ),
        splits=("train", "test"),
        query_split="test",
        queries_per_class=100,
        train_per_class=500,
    ),
    # Whole splits: train on the training split, which is also the database.
    "train_test_split": Protocol(
        name="train_test_split",
        description=("queries: the test split; database and training set: the train split"),
        splits=("train", "test"),
        query_split="test",
        database_split="train",
    ),
    # For a folder of images with no split: a tenth of each class as queries.
    "holdout_per_class": Protocol(
        name="holdout_per_class",
        description=(
            "10% of each class of the train split (at least one image) as queries; "
            "database and training set: the other images"
        ),
        splits=("train",),
        query_split="train",
        query_fraction=0.1,
    ),
    # ImageNet-100 (HashNet): 100 classes, lists of DeepHash-pytorch's data/imagenet.
    "imagenet100_lists": Protocol(
        name="imagenet100_lists",
        description=(
            "ImageNet-100 list files: 13,000 training images, 5,000 validation queries, "
            "128,503 database images of 100 classes"
        ),
        splits=("train", "validation"),
        query_split="validation",
        lists=(
            list_files.ListFile(
                "train",
                "train.txt",
                13_000,
                splits=("train",),
                sha256="c141cb443b3c674cd2b1e69700eadf85208a280f33ea15bd70edc082f94716d4",
            ),
            list_files.ListFile(
                "query",
                "test.txt",
                5_000,
                splits=("validation",),
                sha256="0aadea2e9afadd0e79ea734278b9dc390e66f6c10234d0b029c12fc6514885ed",
            ),
            # NOTE: no SHA-256 for the database lists: they are not in the public
            # repository snapshot, so only their line counts are checked.
            list_files.ListFile("database", "database.txt", 128_503, splits=("train",)),
        ),
        list_columns=100,
        list_class_names="imagenet100",
        list_source="published in data/imagenet of github.com/swuxyj/DeepHash-pytorch",
    ),
    # MS-COCO 2014 (HashNet): 80 categories, multi-label, images of train2014 and
    # val2014 in every list.
    "coco_lists": Protocol(
        name="coco_lists",
        description=(
            "MS-COCO list files: 10,000 training images, 5,000 queries, 117,218 database "
            "images, 80 categories, multi-label"
        ),
        splits=("train", "validation"),
        query_split="validation",
        lists=(
            list_files.ListFile(
                "train",
                "train.txt",
                10_000,
                splits=("train", "validation"),
                sha256="4708c66fa87bac20c85d470c29422c564b0a6811fc48d32a4714c23212e9500c",
            ),
            list_files.ListFile(
                "query",
                "test.txt",
                5_000,
                splits=("train", "validation"),
                sha256="3f0e2c49e363bccbf5ed67cf8cd59cce2b04a7238417ba0c3baf876be3be90b7",
            ),
            list_files.ListFile(
                "database", "database.txt", 117_218, splits=("train", "validation")
            ),
        ),
        list_columns=80,
        list_source="published in data/coco of github.com/swuxyj/DeepHash-pytorch",
        multi_label=True,
        file_name_key="image/filename",
    ),
    # MS-COCO without list files: the same sizes as HashNet's lists, drawn by seed
    # from the train and validation images that have at least one object.
    "coco_sampled": Protocol(
        name="coco_sampled",
        description=(
            "5,000 queries and 10,000 training images drawn from the COCO images with "
            "at least one object; database: every other such image; multi-label"
        ),
        splits=("train", "validation"),
        query_split="validation",
        multi_label=True,
        objects_key="objects",
        queries_total=5_000,
        train_total=10_000,
    ),
    # NUS-WIDE (HashNet): the 21 most frequent concepts, multi-label, from a folder
    # that contains the images (prepared with the image_folder builder).
    "nuswide21_lists": Protocol(
        name="nuswide21_lists",
        description=(
            "NUS-WIDE-21 list files: 10,500 training images, 2,100 queries, 193,734 "
            "database images, 21 concepts, multi-label"
        ),
        splits=("train",),
        query_split="train",
        lists=(
            list_files.ListFile(
                "train",
                "train.txt",
                10_500,
                sha256="c31007d63075cc173cb368f91475e4072a76b312b7dca0d14e88b1cc23586851",
            ),
            list_files.ListFile(
                "query",
                "test.txt",
                2_100,
                sha256="bbdbc13c08e340068064eb4f9849f33800139816fbe0e0792d5a49953581b41f",
            ),
            list_files.ListFile("database", "database.txt", 193_734),
        ),
        list_columns=21,
        list_source="published in data/nuswide_21 of github.com/swuxyj/DeepHash-pytorch",
        multi_label=True,
    ),
    # All 81 NUS-WIDE concepts, from lists of the same format that the user makes
    # (no published lists to check against).
    "nuswide81_lists": Protocol(
        name="nuswide81_lists",
        description="NUS-WIDE-81 list files (user-made): 81 concepts, multi-label",
        splits=("train",),
        query_split="train",
        lists=(
            list_files.ListFile("train", "train.txt", None),
            list_files.ListFile("query", "test.txt", None),
            list_files.ListFile("database", "database.txt", None),
        ),
        list_columns=81,
        list_source="made by the user in the format of the 21-concept lists",
        multi_label=True,
    ),
    # The same for datasets whose held-out split is called "validation" (ImageNet).
    "train_validation_split": Protocol(
        name="train_validation_split",
        description=("queries: the validation split; database and training set: the train split"),
        splits=("train", "validation"),
        query_split="validation",
        database_split="train",
    ),
}


@dataclasses.dataclass(frozen=True)
class Split:
    """The id lists of one protocol applied to one dataset."""

    protocol: str
    dataset: str
    seed: int
    splits: tuple[str, ...]
    split_sizes: tuple[int, ...]
    train_ids: np.ndarray
    query_ids: np.ndarray
    database_ids: np.ndarray
    labels: np.ndarray  # Labels of the whole pool, indexed by id.
    # The prepared data the ids refer to: TFDS name/config/version, e.g.
    # "image_folder/photos_1a2b3c4d/1.0.0". Empty in splits saved before it was recorded.
    source: str = ""

    def metadata(self) -> dict:
        return {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "source": self.source,
            "seed": self.seed,
            "splits": list(self.splits),
            "split_sizes": list(self.split_sizes),
            "num_train": int(len(self.train_ids)),
            "num_query": int(len(self.query_ids)),
            "num_database": int(len(self.database_ids)),
        }


def has_any_class(labels: np.ndarray, classes) -> np.ndarray:
    """Return bool [N]: whether each label (class id [N] or multi-hot row [N, C]) is in `classes`."""
    classes = np.asarray(classes, dtype=np.int64)
    if labels.ndim == 1:
        return np.isin(labels, classes)
    return labels[:, classes].astype(bool).any(axis=1)


def without_classes(split: Split, classes) -> Split:
    """Return `split` with every training image of `classes` removed (zero-shot training).

    A multi-label image is removed when any of its labels is in `classes`. Queries
    and database keep every image.
    """
    held_out = has_any_class(split.labels[split.train_ids], classes)
    return dataclasses.replace(split, train_ids=split.train_ids[~held_out])


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(
            f"Unknown protocol {name!r}. Set --config.protocol to one of: "
            f"{', '.join(sorted(PROTOCOLS))}."
        )
    return PROTOCOLS[name]


def read_field(
    builder: tfds.core.DatasetBuilder, split: str, key: str, chunk_size: int = 65536
) -> list:
    """Read one feature of every record of a split in record order, without decoding images."""
    decoders = {
        key: tfds.decode.SkipDecoding()
        for key, feature in builder.info.features.items()
        if isinstance(feature, tfds.features.Image)
    }
    source = builder.as_data_source(split=split, decoders=decoders)
    values = []
    for start in range(0, len(source), chunk_size):
        indices = list(range(start, min(start + chunk_size, len(source))))
        values.extend(record[key] for record in source.__getitems__(indices))
    return values


def as_text(value) -> str:
    """Return a text feature's value (bytes, str, or a 0-d array of either) as str."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_labels(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
    """Read the labels of one split in record order, without decoding images."""
    return np.asarray(read_field(builder, split, "label"), dtype=np.int64)


def make_list_split(
    protocol: Protocol,
    dataset: str,
    builder: tfds.core.DatasetBuilder,
    list_dir,
    *,
    seed: int,
    check: bool,
) -> Split:
    """Apply a list protocol: find every listed image in the pool and take its label.

    `seed` is recorded with the split only; list protocols draw nothing.
    """
    if not list_dir:
        raise ValueError(
            f"Protocol {protocol.name!r} reads list files "
            f"({', '.join(spec.file_name for spec in protocol.lists)}, "
            f"{protocol.list_source}). Set --config.list_dir to the folder that contains them."
        )
    # The keys of the shipped class names (synset ids) are checked against the
    # dataset's own labels where it has them.
    keys = None
    if protocol.list_class_names and "label" in builder.info.features:
        keys = class_names_lib.load(protocol.list_class_names).keys
        dataset_names = tuple(builder.info.features["label"].names)
    sizes, record_labels, indexes = [], [], {}
    first_id = 0
    for split in protocol.splits:
        # Rows and records are matched by the last component of their paths.
        names = [
            list_files.base_name(as_text(name))
            for name in read_field(builder, split, protocol.file_name_key)
        ]
        indexes[split] = list_files.name_index(names, first_id)
        sizes.append(len(names))
        first_id += len(names)
        if keys is not None:
            record_labels.append(read_labels(builder, split))
    sizes = tuple(sizes)
    if keys is not None:
        record_labels = np.concatenate(record_labels)
    if protocol.multi_label:
        labels = np.zeros((first_id, protocol.list_columns), dtype=np.uint8)
    else:
        labels = np.full(first_id, -1, dtype=np.int64)
    ids = {}
    for spec in protocol.lists:
        path = pathlib.Path(list_dir) / spec.file_name
        parsed = list_files.read_list(
            list_dir, spec, protocol.list_columns, check=check, source=protocol.list_source
        )
        role_ids = list_files.find_records(parsed, path, spec.splits, indexes)
        if protocol.multi_label:
            role_labels = parsed.labels
            assigned = labels[role_ids].any(axis=1)
            clash = assigned & (labels[role_ids] != role_labels).any(axis=1)
        else:
            role_labels = list_files.single_labels(parsed, path)
            clash = (labels[role_ids] >= 0) & (labels[role_ids] != role_labels)
        if keys is not None:
            found = [dataset_names[label] for label in record_labels[role_ids]]
            for row, (column, name) in enumerate(zip(role_labels, found)):
                if keys[column] != name:
                    raise ValueError(
                        f"{path}:{parsed.line_numbers[row]}: label column {column} is "
                        f"{keys[column]} in this protocol, but the image is a {name}. The "
                        "list's columns are in another order than the published list's."
                    )
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            raise ValueError(
                f"{path}:{parsed.line_numbers[row]}: image {parsed.file_names[row]!r} has "
                "another label in an earlier list."
            )
        labels[role_ids] = role_labels
        ids[spec.role] = np.sort(role_ids)
    return Split(
        protocol=protocol.name,
        dataset=dataset,
        seed=seed,
        splits=protocol.splits,
        split_sizes=sizes,
        train_ids=ids["train"],
        query_ids=ids["query"],
        database_ids=ids["database"],
        labels=labels,
    )


def _sample_per_class(
    rng: np.random.Generator,
    candidates: np.ndarray,
    labels: np.ndarray,
    per_class: int,
    num_classes: int,
    role: str,
) -> np.ndarray:
    """Draw `per_class` ids of every class from `candidates`, sorted."""
    chosen = []
    for label in range(num_classes):
        pool = candidates[labels[candidates] == label]
        if len(pool) < per_class:
            raise ValueError(
                f"Class {label} has {len(pool)} candidate {role} images, fewer than "
                f"the {per_class} per class that the protocol draws."
            )
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def objects_multi_hot(builder: tfds.core.DatasetBuilder, split: str, key: str) -> np.ndarray:
    """Return uint8 [N, C]: for each record, which classes its objects belong to."""
    num_classes = builder.info.features[key]["label"].num_classes
    objects = read_field(builder, split, key)
    multi_hot = np.zeros((len(objects), num_classes), dtype=np.uint8)
    for row, record_objects in enumerate(objects):
        multi_hot[row, np.asarray(record_objects["label"], dtype=np.int64)] = 1
    return multi_hot


def make_objects_split(
    protocol: Protocol, dataset: str, builder: tfds.core.DatasetBuilder, seed: int
) -> Split:
    """Apply an object-label protocol: multi-hot labels, random query and training sets.

    Images without any object are in no set, and their number is logged.
    """
    per_split = [
        objects_multi_hot(builder, split, protocol.objects_key) for split in protocol.splits
    ]
    labels = np.concatenate(per_split)
    labelled = np.flatnonzero(labels.any(axis=1))
    logging.info(
        "%d of %d images have at least one object; the others are left out.",
        len(labelled),
        len(labels),
    )
    needed = protocol.queries_total + protocol.train_total
    if len(labelled) < needed:
        raise ValueError(
            f"Protocol {protocol.name!r} draws {protocol.queries_total} queries and "
            f"{protocol.train_total} training images, but only {len(labelled)} images of "
            f"{dataset} have an object. Prepare the full dataset."
        )
    rng = np.random.default_rng(seed)
    query_ids = np.sort(rng.choice(labelled, size=protocol.queries_total, replace=False))
    database_ids = np.setdiff1d(labelled, query_ids)
    train_ids = np.sort(rng.choice(database_ids, size=protocol.train_total, replace=False))
    return Split(
        protocol=protocol.name,
        dataset=dataset,
        seed=seed,
        splits=protocol.splits,
        split_sizes=tuple(len(split_labels) for split_labels in per_split),
        train_ids=train_ids,
        query_ids=query_ids,
        database_ids=database_ids,
        labels=labels,
    )


def make_split(
    protocol: Protocol,
    dataset: str,
    split_labels: dict[str, np.ndarray],
    num_classes: int,
    seed: int,
) -> Split:
    """Apply `protocol` to a dataset whose labels per split are given."""
    sizes = tuple(len(split_labels[name]) for name in protocol.splits)
    offsets = dict(zip(protocol.splits, np.cumsum((0,) + sizes[:-1])))
    labels = np.concatenate([split_labels[name] for name in protocol.splits])
    pool_ids = np.arange(len(labels))

    def ids_of(split_name):
        start = offsets[split_name]
        return np.arange(start, start + len(split_labels[split_name]))

    if protocol.query_fraction is not None:
        rng = np.random.default_rng(seed)
        candidates = ids_of(protocol.query_split)
        chosen = []
        for label in range(num_classes):
            pool = candidates[labels[candidates] == label]
            count = min(len(pool), max(1, round(protocol.query_fraction * len(pool))))
            chosen.append(rng.choice(pool, size=count, replace=False))
        query_ids = np.sort(np.concatenate(chosen))
        database_ids = np.setdiff1d(pool_ids, query_ids)
        train_ids = database_ids
    elif protocol.queries_per_class is None:
        query_ids = ids_of(protocol.query_split)
        database_ids = ids_of(protocol.database_split)
        train_ids = database_ids
    else:
        rng = np.random.default_rng(seed)
        query_ids = _sample_per_class(
            rng,
            ids_of(protocol.query_split),
            labels,
            protocol.queries_per_class,
            num_classes,
            "query",
        )
        database_ids = np.setdiff1d(pool_ids, query_ids)
        train_ids = _sample_per_class(
            rng,
            database_ids,
            labels,
            protocol.train_per_class,
            num_classes,
            "training",
        )
    return Split(
        protocol=protocol.name,
        dataset=dataset,
        seed=seed,
        splits=protocol.splits,
        split_sizes=sizes,
        train_ids=train_ids,
        query_ids=query_ids,
        database_ids=database_ids,
        labels=labels,
    )


def save_split(split: Split, workdir: str | os.PathLike):
    """Write the id lists and their metadata into the workdir atomically."""
    path = pathlib.Path(workdir) / SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_files.save_npz(
        path,
        train_ids=split.train_ids,
        query_ids=split.query_ids,
        database_ids=split.database_ids,
        labels=split.labels,
    )
    atomic_files.write_json(pathlib.Path(workdir) / METADATA_FILE, split.metadata())


def load_split(workdir: str | os.PathLike) -> Split | None:
    """Return the split saved in the workdir, or None when there is none."""
    path = pathlib.Path(workdir) / SPLIT_FILE
    meta_path = pathlib.Path(workdir) / METADATA_FILE
    if not path.exists() or not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    with np.load(path) as arrays:
        return Split(
            protocol=meta["protocol"],
            dataset=meta["dataset"],
            seed=meta["seed"],
            splits=tuple(meta["splits"]),
            split_sizes=tuple(meta["split_sizes"]),
            train_ids=arrays["train_ids"],
            query_ids=arrays["query_ids"],
            database_ids=arrays["database_ids"],
            labels=arrays["labels"],
            source=meta.get("source", ""),
        )


def builder_source(builder: tfds.core.DatasetBuilder) -> str:
    """Return the name/config/version of the prepared data, e.g. "fashion_mnist_idx/1.0.0"."""
    return builder.info.full_name


def check_matches(split: Split, protocol: str, dataset: str, seed: int, workdir, source: str = ""):
    """Raise when a saved split was drawn for another protocol, dataset, seed or data source."""
    if split.source and source and split.source != source:
        raise ValueError(
            f"The workdir {workdir} contains a split of the prepared data {split.source!r}, "
            f"but the config reads {source!r} (another image folder, dataset config or "
            "version). Use a new --workdir for other data."
        )
    saved = (split.protocol, split.dataset, split.seed)
    requested = (protocol, dataset, seed)
    if saved != requested:
        raise ValueError(
            f"The workdir {workdir} contains a split for protocol {saved[0]!r}, "
            f"dataset {saved[1]!r}, seed {saved[2]}, but the config requests "
            f"protocol {protocol!r}, dataset {dataset!r}, seed {seed}. Use a new "
            "--workdir for another protocol, or set the config back."
        )


def get_or_create_split(
    builder: tfds.core.DatasetBuilder,
    protocol_name: str,
    dataset: str,
    seed: int,
    workdir: str | os.PathLike,
    create: bool = True,
    *,
    list_dir: str | None = None,
    check_lists: bool = True,
) -> Split:
    """Load the workdir's split, or draw and save it when `create` is set.

    List protocols read their files from `list_dir`; `check_lists` checks their line
    counts and checksums.
    """
    split = load_split(workdir)
    source = builder_source(builder)
    if split is not None:
        check_matches(split, protocol_name, dataset, seed, workdir, source)
        logging.info(
            "Loaded protocol %s split from %s: %d train, %d query, %d database.",
            split.protocol,
            workdir,
            len(split.train_ids),
            len(split.query_ids),
            len(split.database_ids),
        )
        return split
    if not create:
        raise FileNotFoundError(
            f"No protocol split in {pathlib.Path(workdir) / SPLIT_FILE}. Train "
            "first with `python -m semhash_jax.main --workdir=...` on this workdir."
        )
    protocol = get_protocol(protocol_name)
    if protocol.lists:
        split = make_list_split(protocol, dataset, builder, list_dir, seed=seed, check=check_lists)
    elif protocol.objects_key:
        split = make_objects_split(protocol, dataset, builder, seed)
    else:
        split_labels = {name: read_labels(builder, name) for name in protocol.splits}
        num_classes = builder.info.features["label"].num_classes
        split = make_split(protocol, dataset, split_labels, num_classes, seed)
    split = dataclasses.replace(split, source=source)
    save_split(split, workdir)
    origin = f"from the list files in {list_dir}" if protocol.lists else f"with seed {seed}"
    logging.info(
        "Made protocol %s split %s: %d train, %d query, %d database; saved to %s.",
        protocol.name,
        origin,
        len(split.train_ids),
        len(split.query_ids),
        len(split.database_ids),
        workdir,
    )
    return split
