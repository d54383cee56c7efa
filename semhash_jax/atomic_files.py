"""Atomic writes: a reader sees the old file or the complete new one, never a partial file."""

import json
import os
import pathlib

import numpy as np


def write_json(path: str | os.PathLike, payload: dict):
    """Write `payload` as indented JSON to `path` through a temporary file."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def save_npz(path: str | os.PathLike, **arrays):
    """Save `arrays` to the .npz file `path` through a temporary file."""
    path = pathlib.Path(path)
    # np.savez appends ".npz" to names without it, so the temporary name keeps it.
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
