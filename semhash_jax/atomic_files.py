"""Atomic writes: a reader sees the old file or the complete new one, never a partial file.

Temporary names carry the process id, so processes of a multi-host run that write
the same file to a shared folder do not write into each other's temporary file.
"""

import json
import math
import os
import pathlib

import numpy as np


def write_json(path: str | os.PathLike, payload: dict):
    """Write `payload` as indented JSON to `path` through a temporary file.

    Float NaN (a mean over no query, for example) is written as null, because NaN is
    not valid JSON.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_nan_to_none(payload), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value


def save_npz(path: str | os.PathLike, **arrays):
    """Save `arrays` to the .npz file `path` through a temporary file."""
    path = pathlib.Path(path)
    # np.savez appends ".npz" to names without it, so the temporary name keeps it.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
