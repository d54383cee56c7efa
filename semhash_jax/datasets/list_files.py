"""Protocols defined by list files: one row per image, "path label_1 ... label_C".

The hashing benchmarks ImageNet-100, NUS-WIDE and MS-COCO are defined by the
list files published with HashNet and DeepHash-pytorch: train.txt, test.txt (the
queries) and database.txt. A row names an image by a path whose last component is
the image's file name, then gives C columns of 0/1 labels. The user supplies the
files (`config.list_dir`). This module checks each file's line count and, where
the file is known, its SHA-256. It parses every row and finds each image among the
records of the prepared TFDS dataset by file name.

Policy for rows without any label: they are dropped and counted in the log (some
published NUS-WIDE lists contain such rows). A single-label protocol rejects a row
with several labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

from absl import logging
import numpy as np

ROLES = ("train", "query", "database")


@dataclasses.dataclass(frozen=True)
class ListFile:
    """One list file of a protocol: its role, name, line count, the dataset split
    whose records it names, and, if known, its SHA-256."""

    role: str
    file_name: str
    # Expected line count; None where no list is published (not checked).
    lines: int | None
    splits: tuple[str, ...] = ("train",)
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class ParsedList:
    """The rows of a list file that carry a label."""

    file_names: tuple[str, ...]
    labels: np.ndarray  # uint8 [rows, C]
    line_numbers: np.ndarray  # int64 [rows], 1-based
    dropped_unlabelled: int


def base_name(path: str) -> str:
    """Return the last component of a path with / or \\ separators."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _digest(path: pathlib.Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def read_list(
    list_dir: str | os.PathLike,
    spec: ListFile,
    num_columns: int,
    *,
    check: bool = True,
    source: str = "",
) -> ParsedList:
    """Parse one list file; raise ValueError naming the file and line of any problem.

    With `check`, a line count or checksum that differs from `spec` is an error.
    """
    path = pathlib.Path(list_dir) / spec.file_name
    if not path.is_file():
        raise FileNotFoundError(
            f"List file {str(path)!r} not found. Put the protocol's {spec.role} list "
            f"({spec.file_name}{', ' + source if source else ''}) in "
            "--config.list_dir."
        )
    text = path.read_text(encoding="utf-8")
    rows = text.splitlines()
    if check and spec.lines is not None and len(rows) != spec.lines:
        raise ValueError(
            f"{path} has {len(rows)} lines but the {spec.role} list of this protocol has "
            f"{spec.lines}. A short or different list would train or evaluate on other "
            "images: get the published list, or set --config.check_counts=False to use "
            "this one anyway."
        )
    if check and spec.sha256 is not None and _digest(path) != spec.sha256:
        raise ValueError(
            f"{path} has the expected {spec.lines} lines but not the published contents "
            f"(SHA-256 {_digest(path)}, expected {spec.sha256}). Get the published list, "
            "or set --config.check_counts=False to use this one anyway."
        )
    file_names, labels, line_numbers = [], [], []
    dropped = 0
    for number, row in enumerate(rows, start=1):
        fields = row.split()
        if not fields:
            raise ValueError(f"{path}:{number}: empty line")
        if len(fields) != num_columns + 1:
            raise ValueError(
                f"{path}:{number}: expected a path and {num_columns} label columns, got "
                f"{len(fields) - 1} columns"
            )
        if any(value not in ("0", "1") for value in fields[1:]):
            raise ValueError(f"{path}:{number}: label columns must be 0 or 1, got {row!r}")
        row_labels = [value == "1" for value in fields[1:]]
        if not any(row_labels):
            dropped += 1
            continue
        file_names.append(base_name(fields[0]))
        labels.append(row_labels)
        line_numbers.append(number)
    if dropped:
        logging.warning("Dropped %d rows without any label from %s.", dropped, path)
    return ParsedList(
        file_names=tuple(file_names),
        labels=np.asarray(labels, dtype=np.uint8).reshape(-1, num_columns),
        line_numbers=np.asarray(line_numbers, dtype=np.int64),
        dropped_unlabelled=dropped,
    )


def name_index(names, first_id: int) -> tuple[dict[str, int], set[str]]:
    """Return ({file name: pool id}, names that occur more than once) of one split."""
    index, repeated = {}, set()
    for offset, name in enumerate(names):
        if name in index:
            repeated.add(name)
        index[name] = first_id + offset
    return index, repeated


def find_records(parsed: ParsedList, path_for_errors, splits, indexes) -> np.ndarray:
    """Return the pool id of every row; raise naming the first row whose image is missing.

    `indexes` maps each split name to its `name_index`; a row's image is looked up
    in `splits` in order.
    """
    ids = np.empty(len(parsed.file_names), dtype=np.int64)
    for row, name in enumerate(parsed.file_names):
        where = f"{path_for_errors}:{parsed.line_numbers[row]}: image {name!r}"
        matches = [split for split in splits if name in indexes[split][0]]
        if not matches:
            raise ValueError(
                f"{where} is not in split(s) {', '.join(splits)} of the prepared dataset. "
                "Prepare the full dataset, or check that the list belongs to this dataset. "
                "An image folder is prepared once: after adding images, delete its prepared "
                "copy (<data_dir>/image_folder/<name>_<hash>) to prepare it again."
            )
        split = matches[0]
        if len(matches) > 1 or name in indexes[split][1]:
            raise ValueError(f"{where} names several records of split(s) {', '.join(splits)}.")
        ids[row] = indexes[split][0][name]
    return ids


def single_labels(parsed: ParsedList, path_for_errors) -> np.ndarray:
    """Return class ids [rows] of a one-hot list; raise naming a row with several labels."""
    counts = parsed.labels.sum(axis=1)
    several = np.flatnonzero(counts > 1)
    if len(several):
        raise ValueError(
            f"{path_for_errors}:{parsed.line_numbers[several[0]]}: {counts[several[0]]} labels "
            "in a single-label protocol"
        )
    return np.argmax(parsed.labels, axis=1).astype(np.int64)
