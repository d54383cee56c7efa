"""Code files: binary codes and labels in .npz files that any toolkit can write or read.

One file contains one set of items (for example query.npz and database.npz):
- `codes`: either N x K values in {-1, +1}, in {0, 1} or bools (any integer, float or
  bool dtype), or N x ceil(K / 8) uint8 bytes from `numpy.packbits(bits, axis=1)`
  (bit j of a code is bit 7 - j % 8 of byte j // 8), in which case `bits` is required;
- `bits`: the code length K, a scalar; required for packed bytes, checked otherwise;
- `labels`: N integer class ids, or N x C multi-hot rows of 0/1 or bools;
- `ids` (optional): N integer item ids; `class_names` (optional): C strings.
Files this project writes store packed bytes with `bits`. Bit order does not change
any Hamming distance, as long as queries and database use the same one.
"""

from __future__ import annotations

import dataclasses
import pathlib
import zipfile

import numpy as np

from semhash_jax import atomic_files
from semhash_jax.retrieval.codes import pack_codes


@dataclasses.dataclass
class CodeSet:
    """Codes read from a code file: packed uint32 words [N, W] (see `codes.pack_codes`)."""

    packed: np.ndarray
    bits: int
    labels: np.ndarray
    ids: np.ndarray | None = None
    class_names: np.ndarray | None = None

    def __len__(self) -> int:
        return self.packed.shape[0]


def write_code_file(path, codes, labels, *, ids=None, class_names=None) -> None:
    """Write N x K codes ({-1, +1}, {0, 1} or bool) and their labels as a code file, atomically."""
    codes = np.asarray(codes)
    bits = _as_bits(codes, "codes")
    arrays = {
        "codes": np.packbits(bits, axis=1),
        "bits": np.int64(bits.shape[1]),
        "labels": np.asarray(labels),
    }
    if ids is not None:
        arrays["ids"] = np.asarray(ids)
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    atomic_files.save_npz(path, **arrays)


def read_code_file(path) -> CodeSet:
    """Read and validate a code file. Raises ValueError naming the array and the expected form."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"code file {path} not found. Pass the path of an .npz file.")
    arrays = load_npz(path, "Store codes and labels as numeric arrays.")

    for required in ("codes", "labels"):
        if required not in arrays:
            raise ValueError(
                f"{path} has no array '{required}' (it has {sorted(arrays)}). A code file "
                "needs 'codes' (N x K, or packed uint8 with 'bits') and 'labels'."
            )
    packed, bits = _read_codes(arrays, path)
    num_items = packed.shape[0]
    labels = _read_labels(arrays["labels"], num_items, path)

    ids = arrays.get("ids")
    if ids is not None and (ids.ndim != 1 or len(ids) != num_items):
        raise ValueError(f"{path}: 'ids' must be a 1-D array of {num_items} ids, got {ids.shape}")
    return CodeSet(packed, bits, labels, ids, arrays.get("class_names"))


def load_npz(path: pathlib.Path, object_hint: str) -> dict[str, np.ndarray]:
    """Return every array of an .npz file; raise ValueError for unreadable files.

    Object arrays are not loaded (no pickle); `object_hint` says how to store the data instead.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a readable .npz file (not a zip archive). Save it with numpy.savez."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz file ({error})") from error
    except ValueError as error:
        raise ValueError(
            f"{path} contains object arrays, which are not read for safety ({error}). {object_hint}"
        ) from error


def _read_codes(arrays: dict, path) -> tuple[np.ndarray, int]:
    codes = arrays["codes"]
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise ValueError(
            f"{path}: 'codes' must be a 2-D array [N, K] (or packed uint8 [N, ceil(K / 8)]), "
            f"got shape {codes.shape}"
        )
    bits = arrays.get("bits")
    if bits is not None:
        if bits.shape != () or not np.issubdtype(bits.dtype, np.integer) or int(bits) <= 0:
            raise ValueError(f"{path}: 'bits' must be a positive integer scalar, got {bits!r}")
        bits = int(bits)

    if _is_packed(codes, bits):
        unpacked = np.unpackbits(codes, axis=1)
        if unpacked[:, bits:].any():
            raise ValueError(
                f"{path}: 'codes' has set bits after bit {bits - 1}, so it was not packed "
                f"from {bits}-bit codes with numpy.packbits. Check 'bits'."
            )
        return pack_codes(unpacked[:, :bits].astype(bool)), bits

    if codes.dtype == np.uint8 and bits is not None and codes.shape[1] != bits:
        raise ValueError(
            f"{path}: 'bits' is {bits}, so uint8 'codes' must have {-(-bits // 8)} packed "
            f"columns or {bits} unpacked columns, got {codes.shape[1]}"
        )
    if bits is not None and codes.shape[1] != bits:
        raise ValueError(
            f"{path}: 'codes' has {codes.shape[1]} columns but 'bits' is {bits}. "
            "Unpacked codes have one column per bit."
        )
    if codes.dtype == np.uint8 and bits is None and not np.isin(codes, (0, 1)).all():
        raise ValueError(
            f"{path}: 'codes' is uint8 with values other than 0 and 1 and there is no "
            "'bits' entry. Add 'bits' for packed codes from numpy.packbits."
        )
    return pack_codes(_as_bits(codes, f"{path}: 'codes'")), codes.shape[1]


def _is_packed(codes: np.ndarray, bits: int | None) -> bool:
    if codes.dtype != np.uint8 or bits is None or codes.shape[1] != -(-bits // 8):
        return False
    # One column is both the packed and the unpacked width of a 1-bit code: unpacked
    # 1-bit codes hold only 0 and 1, packed ones only 0 and 128.
    return not (codes.shape[1] == bits and np.isin(codes, (0, 1)).all())


def _as_bits(codes: np.ndarray, name: str) -> np.ndarray:
    """Return bool [N, K] from codes in {-1, +1}, {0, 1} or bool; raise ValueError otherwise."""
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array [N, K] with K >= 1, got shape {codes.shape}")
    if codes.dtype == np.bool_:
        return codes
    if not (np.issubdtype(codes.dtype, np.integer) or np.issubdtype(codes.dtype, np.floating)):
        raise ValueError(f"{name} must have an integer, float or bool dtype, got {codes.dtype}")
    values = np.unique(codes)
    if np.isin(values, (-1, 1)).all():
        return codes == 1
    if np.isin(values, (0, 1)).all():
        return codes == 1
    raise ValueError(
        f"{name} must contain only -1/+1 or only 0/1 (sign-binarised codes), but contains "
        f"{values[~np.isin(values, (-1, 0, 1))][:3].tolist() or values[:3].tolist()}"
    )


def _read_labels(labels: np.ndarray, num_items: int, path) -> np.ndarray:
    if labels.ndim not in (1, 2) or labels.shape[0] != num_items:
        raise ValueError(
            f"{path}: 'labels' must be {num_items} integer class ids [N] or multi-hot rows "
            f"[N, C] for the {num_items} codes, got shape {labels.shape}"
        )
    if labels.ndim == 1 and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 1-D 'labels' must be integer class ids, got dtype {labels.dtype}. "
            "Store multi-hot labels as a 2-D array."
        )
    if labels.ndim == 2 and not (labels.dtype == np.bool_ or np.isin(labels, (0, 1)).all()):
        raise ValueError(f"{path}: 2-D 'labels' must be multi-hot rows of 0 and 1 only")
    return labels
