"""Class name embeddings from static word vectors (GloVe, word2vec text format, fastText .vec).

A class name is embedded as the mean of the vectors of its words. The vector file is
streamed line by line and only the vectors of the needed words are kept, so a
multi-GB file such as GloVe 840B takes little memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from absl import logging

_ACCEPTED_FORMATS = (
    "GloVe .txt (no header line), word2vec text format or fastText .vec (a first line "
    '"<count> <dimension>"), each optionally compressed as .gz'
)

# Bytes hashed into file_identity, in _IDENTITY_SAMPLE_COUNT evenly spaced chunks.
# Files up to this size are hashed whole.
_IDENTITY_SAMPLE_BYTES = 1 << 20
_IDENTITY_SAMPLE_COUNT = 16

# Characters that separate the words of a class name.
_WORD_SEPARATORS = re.compile(r"[\s/_,]+")
_HEADER = re.compile(r"\d+")

# The out-of-vocabulary warning lists at most this many class names and counts the rest.
_MAX_NAMES_IN_WARNING = 20


@dataclasses.dataclass
class NameEmbeddings:
    """Word vector embeddings of class names.

    Attributes:
        embeddings: float32 [N, D], one row per name: the mean of the vectors of its
            in-vocabulary words, L2-normalised when embed_names was called with
            normalize=True.
        out_of_vocabulary: name -> its words that were not found, for names with at
            least one such word. A hyphenated word embedded from some of its parts
            contributes the missing parts instead.
        dim: D, the dimension of the word vectors.
    """

    embeddings: np.ndarray
    out_of_vocabulary: dict[str, list[str]]
    dim: int


class OutOfVocabularyError(ValueError):
    """Raised when no word of a name is in the word vector file."""


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Word vector file {path} not found. Accepted formats: {_ACCEPTED_FORMATS}."
        )
    if not path.is_file():
        raise IsADirectoryError(
            f"Word vector path {path} is not a file. Accepted formats: {_ACCEPTED_FORMATS}."
        )
    return path.resolve()


def file_identity(path: str | os.PathLike) -> str:
    """Return a cache key for a file: its absolute path, size and a sampled SHA-256.

    Files up to 1 MiB are hashed whole. Of larger files, 16 evenly spaced chunks of
    64 KiB are hashed, the first at the start and the last ending at the end of the
    file, so a multi-GB GloVe file is not read in full.
    NOTE: two files of the same size that differ only outside the sampled chunks
    get the same identity.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = _require_file(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        if size <= _IDENTITY_SAMPLE_BYTES:
            digest.update(file.read())
        else:
            chunk = _IDENTITY_SAMPLE_BYTES // _IDENTITY_SAMPLE_COUNT
            for index in range(_IDENTITY_SAMPLE_COUNT):
                file.seek(index * (size - chunk) // (_IDENTITY_SAMPLE_COUNT - 1))
                digest.update(file.read(chunk))
    return f"{path}|size:{size}|sample-sha256:{digest.hexdigest()}"


def tokenize(name: str) -> list[str]:
    """Split a class name into words at whitespace, '/', '_' and ','.

    Hyphens do not separate words: 'T-shirt/top' -> ['T-shirt', 'top'].
    """
    return [word for word in _WORD_SEPARATORS.split(name) if word]


def _hyphen_parts(word: str) -> list[str]:
    return [part for part in word.split("-") if part] if "-" in word else []


def _lookup_forms(words: set[str]) -> set[str]:
    """Return every form of `words` that embed_names may look up in the vector file."""
    forms = set()
    for word in words:
        for form in [word, *_hyphen_parts(word)]:
            forms.add(form)
            forms.add(form.lower())
    return forms


def _binary_lines(path: Path) -> Iterator[bytes]:
    """Yield the lines of a plain or gzip-compressed file as bytes."""
    if path.suffix.lower() != ".gz":
        with open(path, "rb") as file:
            yield from file
        return

    try:
        with gzip.open(path, "rb") as file:
            yield from file
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: invalid or truncated gzip file: {error}") from error


def _decode(raw_line: bytes, path: Path, line_number: int) -> str:
    try:
        return raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}:{line_number}: invalid UTF-8 at byte {error.start} of the line. "
            "Word vector files must be UTF-8 text."
        ) from error


def _parse_header(line: str) -> tuple[int, int] | None:
    """Return (count, dimension) if `line` is a word2vec or fastText header, else None."""
    fields = line.split()
    if len(fields) == 2 and all(_HEADER.fullmatch(field) for field in fields):
        return int(fields[0]), int(fields[1])
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_vector(values: list[str], word: str, path: Path, line_number: int) -> np.ndarray:
    try:
        vector = np.array(values, dtype=np.float64)
    except ValueError:
        invalid = next(value for value in values if not _is_float(value))
        raise ValueError(
            f"{path}:{line_number}: invalid value {invalid!r} in the vector of {word!r}; "
            f"expected {len(values)} numbers separated by single spaces."
        ) from None
    if not np.isfinite(vector).all():
        raise ValueError(f"{path}:{line_number}: the vector of {word!r} contains NaN or Inf.")
    return vector


@dataclasses.dataclass
class _VectorFileContents:
    vectors: dict[str, np.ndarray]
    dim: int
    lines_read: int
    stopped_early: bool


def _read_vectors(path: Path, forms: set[str], stop_forms: set[str]) -> _VectorFileContents:
    """Stream a word vector file and keep the first vector of each word in `forms`.

    The last `dim` space-separated fields of a row are the vector and everything
    before them is the word, because some files (GloVe 840B) contain words with
    spaces. Reading stops once every word in `stop_forms` has been found.
    NOTE: the field count is checked on every row read, but the values are parsed,
    and so checked, only in the rows of the words in `forms`.
    """
    vectors: dict[str, np.ndarray] = {}
    dim = None
    header = None
    rows = 0
    line_number = 0
    # closing() ends the generator, and so closes the file, when reading stops early.
    with contextlib.closing(_binary_lines(path)) as raw_lines:
        for line_number, raw_line in enumerate(raw_lines, start=1):
            line = _decode(raw_line, path, line_number).rstrip("\r\n").rstrip(" ")
            if not line:
                continue

            if line_number == 1:
                header = _parse_header(line)
                if header is not None:
                    dim = header[1]
                    if dim == 0:
                        raise ValueError(
                            f"{path}:1: invalid header line {line!r}: the dimension is 0."
                        )
                    continue

            if dim is None:
                dim = line.count(" ")
                if dim == 0:
                    raise ValueError(
                        f"{path}:{line_number}: expected a word followed by its vector values "
                        f"separated by spaces, found a single field. Accepted formats: "
                        f"{_ACCEPTED_FORMATS}."
                    )
            word = _row_word(line, dim, forms, path, line_number)
            rows += 1
            if word not in forms or word in vectors:
                continue

            vectors[word] = _parse_vector(line.rsplit(" ", dim)[1:], word, path, line_number)
            if stop_forms.issubset(vectors):
                return _VectorFileContents(vectors, dim, line_number, stopped_early=True)

    if rows == 0:
        location = " after its header line" if header is not None else ""
        raise ValueError(f"Word vector file {path} contains no word vectors{location}.")
    if header is not None and header[0] != rows:
        logging.warning(
            "Word vector file %s has %d vectors, but its header line gives %d.",
            path,
            rows,
            header[0],
        )
    return _VectorFileContents(vectors, dim, line_number, stopped_early=False)


def _row_word(line: str, dim: int, forms: set[str], path: Path, line_number: int) -> str:
    """Return the word of a vector row after checking that the row has `dim` values."""
    field_count = line.count(" ") + 1
    if field_count < dim + 1:
        raise ValueError(
            f"{path}:{line_number}: expected a word followed by {dim} values, "
            f"found {field_count} fields."
        )
    if field_count == dim + 1:
        return line[: line.index(" ")]

    # A word with spaces, or a needed word followed by too many values.
    word = line.rsplit(" ", dim)[0]
    head, *rest = word.split(" ")
    if head in forms and all(_is_float(field) for field in rest):
        raise ValueError(
            f"{path}:{line_number}: expected {dim} values after the word {head!r}, "
            f"found {dim + len(rest)}."
        )
    return word


def _find(form: str, vectors: dict[str, np.ndarray]) -> np.ndarray | None:
    """Return the vector of the exact form, else of its lowercase form, else None."""
    if form in vectors:
        return vectors[form]
    return vectors.get(form.lower())


def _word_vector(word: str, vectors: dict[str, np.ndarray]) -> tuple[np.ndarray | None, list[str]]:
    """Return the vector of `word` (None if not found) and the missing words or parts.

    A hyphenated word that is not found whole, in its exact or lowercase form, is
    embedded as the mean of those of its hyphen-separated parts that are found.
    """
    vector = _find(word, vectors)
    if vector is not None:
        return vector, []

    parts = _hyphen_parts(word)
    part_vectors = [_find(part, vectors) for part in parts]
    found = [vector for vector in part_vectors if vector is not None]
    if not found:
        return None, [word]
    missing = [part for part, vector in zip(parts, part_vectors) if vector is None]
    return np.mean(found, axis=0), missing


def _validate_names(names: Sequence[str]) -> list[list[str]]:
    """Return the words of each name; raise on an empty list or a name without words."""
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of class names, not the single str {names!r}.")
    if len(names) == 0:
        raise ValueError("names is empty; expected at least one class name.")

    words_of_names = []
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"names[{index}] has type {type(name).__name__}, expected str.")
        words = tokenize(name)
        if not words:
            raise ValueError(f"names[{index}] = {name!r} contains no words.")
        words_of_names.append(words)
    return words_of_names


def _warn_out_of_vocabulary(out_of_vocabulary: dict[str, list[str]], path: Path) -> None:
    listed = [
        f"{name!r} (missing: {', '.join(words)})"
        for name, words in list(out_of_vocabulary.items())[:_MAX_NAMES_IN_WARNING]
    ]
    unlisted = len(out_of_vocabulary) - len(listed)
    logging.warning(
        "%d class names contain words not in %s and are embedded from their other words: %s%s",
        len(out_of_vocabulary),
        path,
        "; ".join(listed),
        f"; and {unlisted} more" if unlisted else "",
    )


def embed_names(
    names: Sequence[str], path: str | os.PathLike, *, normalize: bool = True
) -> NameEmbeddings:
    """Embed each class name as the mean of the word vectors of its words.

    Words come from tokenize. Each word is looked up in its exact form, then in
    lowercase, and a hyphenated word then as the mean of its hyphen-separated parts
    found by the same rule ('T-shirt' -> 't-shirt', else the mean of 't' and 'shirt').
    Names with words that are not found are logged in one warning and listed in
    `out_of_vocabulary`.

    Args:
        names: class names, one per class.
        path: a word vector file: GloVe .txt, word2vec text format or fastText .vec,
            optionally compressed with a .gz suffix.
        normalize: whether to L2-normalise each row. A zero row stays zero.

    Raises:
        FileNotFoundError: `path` does not exist.
        TypeError: `names` is a str, or an entry is not a str; the message names its index.
        ValueError: `names` is empty, a name has no words, or no word of a name is in
            the file. Also raised when the file is empty, is not UTF-8, or has a row with
            another field count or an invalid value, and then the message gives the line.
    """
    words_of_names = _validate_names(names)
    path = _require_file(path)
    words = {word for words in words_of_names for word in words}
    logging.info(
        "Reading word vectors for %d class names (%d distinct words) from %s.",
        len(names),
        len(words),
        path,
    )

    contents = _read_vectors(path, _lookup_forms(words), stop_forms=words)
    word_vectors = {word: _word_vector(word, contents.vectors) for word in words}
    found_count = sum(vector is not None for vector, _ in word_vectors.values())
    logging.info(
        "Read word vectors from %s: found %d of %d words, dimension %d, %d lines read%s.",
        path,
        found_count,
        len(words),
        contents.dim,
        contents.lines_read,
        " (stopped early)" if contents.stopped_early else "",
    )

    rows = []
    out_of_vocabulary: dict[str, list[str]] = {}
    unembeddable = []
    for name, name_words in zip(names, words_of_names):
        vectors = [word_vectors[word][0] for word in name_words]
        missing = [item for word in name_words for item in word_vectors[word][1]]
        found = [vector for vector in vectors if vector is not None]
        if not found:
            unembeddable.append(f"{name!r} (words: {', '.join(name_words)})")
            continue
        if missing:
            out_of_vocabulary[name] = missing
        rows.append(np.mean(found, axis=0))

    if unembeddable:
        raise OutOfVocabularyError(
            f"Class names with no word in {path}: "
            f"{'; '.join(unembeddable)}. Use a word vector file that contains these words, "
            "or rename these classes in a class-name file given by --config.class_names."
        )
    if out_of_vocabulary:
        _warn_out_of_vocabulary(out_of_vocabulary, path)

    embeddings = np.stack(rows)
    if normalize:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.where(norms > 0, norms, 1.0)
    return NameEmbeddings(embeddings.astype(np.float32), out_of_vocabulary, contents.dim)
