"""Human-readable class names, read from the text files shipped in `data/`.

A class-name file has one line per class, in label order: a key (the label index,
a WordNet synset id or a COCO category id), then one or more names, separated by
tabs. Lines that start with "#" state the source. Several names of one class (the
lemmas of an ImageNet synset) can be embedded and averaged, see `run_setup`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

DATA_DIR = pathlib.Path(__file__).parent / "data"

# Shipped files, by the name used in `config.class_names`.
SHIPPED = {
    "cifar10": "cifar10.txt",
    "coco": "coco.txt",
    "imagenet2012": "imagenet2012.txt",
    "imagenet100": "imagenet100.txt",
    "nuswide21": "nuswide21.txt",
    "nuswide81": "nuswide81.txt",
}


@dataclasses.dataclass(frozen=True)
class ClassNames:
    """Names of every class in label order; `names[c][0]` is the main name of class c."""

    keys: tuple[str, ...]
    names: tuple[tuple[str, ...], ...]
    source: str

    def __len__(self) -> int:
        return len(self.names)

    @property
    def first(self) -> tuple[str, ...]:
        return tuple(names[0] for names in self.names)


def read_file(path: str | os.PathLike) -> ClassNames:
    """Parse a class-name file; raise ValueError naming the line of any malformed row."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Class-name file {str(path)!r} not found. Set --config.class_names to one of "
            f"{', '.join(sorted(SHIPPED))} or to a text file with one 'key<TAB>name' line "
            "per class."
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"Class-name file {str(path)!r} is not UTF-8 text: {e}") from e
    keys, names = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) < 2 or not all(fields):
            raise ValueError(
                f"{path}:{number}: expected 'key<TAB>name[<TAB>more names]', got {line!r}"
            )
        keys.append(fields[0])
        names.append(tuple(fields[1:]))
    if not names:
        raise ValueError(f"Class-name file {str(path)!r} lists no class.")
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"Class-name file {str(path)!r} repeats the keys {duplicates}.")
    return ClassNames(tuple(keys), tuple(names), str(path))


def load(name_or_path: str) -> ClassNames:
    """Return a shipped class-name list by name, or read one from a file path."""
    if name_or_path in SHIPPED:
        return read_file(DATA_DIR / SHIPPED[name_or_path])
    return read_file(name_or_path)


def for_dataset(name_or_path: str | None, builder_names, num_classes: int) -> ClassNames:
    """Return the class names of a dataset with `num_classes` classes.

    `name_or_path` (config.class_names) selects a shipped list or a file; when it is
    empty, the names come from the dataset builder's label feature (`builder_names`).
    """
    if name_or_path:
        class_names = load(name_or_path)
    else:
        if builder_names and all(str(name).isdigit() for name in builder_names):
            raise ValueError(
                "The dataset's label feature names its classes only by number "
                f"({', '.join(map(str, builder_names[:3]))}, ...), which a text encoder "
                "cannot use. Set --config.class_names to one of "
                f"{', '.join(sorted(SHIPPED))} or to a class-name file."
            )
        class_names = ClassNames(
            keys=tuple(str(index) for index in range(len(builder_names))),
            # Folder names such as "ankle_boot" read as "ankle boot".
            names=tuple((name.replace("_", " "),) for name in builder_names),
            source="the dataset's label feature",
        )
    if len(class_names) != num_classes:
        raise ValueError(
            f"{class_names.source} names {len(class_names)} classes but the dataset has "
            f"{num_classes}. Set --config.class_names to a list with one line per class."
        )
    builder_names = tuple(str(name) for name in builder_names)
    if (
        name_or_path
        and set(class_names.keys) == set(builder_names)
        and class_names.keys != builder_names
    ):
        raise ValueError(
            f"{class_names.source} lists the dataset's classes ({', '.join(builder_names[:3])}, "
            "...) as keys, but in another order than the dataset's labels. Write one line per "
            f"class in label order: {', '.join(builder_names)}."
        )
    return class_names
