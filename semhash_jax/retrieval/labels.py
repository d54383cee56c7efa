"""Validation of retrieval labels and their device form.

Two kinds of labels are accepted, the same kind for queries and database:
- class ids, a 1-D integer array: a database item is relevant when its id equals the
  query's;
- multi-hot rows, a 2-D array [N, C] of 0/1 or bools: relevant when at least one label
  is shared. A row with no label is relevant to nothing.
An integer id and its one-hot row give the same relevance. Inputs are never modified.
"""

from __future__ import annotations

import numpy as np

from semhash_jax.retrieval.codes import pack_codes


def prepare_labels(query_labels, database_labels, num_queries: int, num_database: int):
    """Validate labels and return (query, database, multi_label) as new arrays.

    Class ids become int32: unchanged when they are in [0, 2**31), else indices into
    their sorted union, so ids of any integer dtype compare correctly without 64-bit jax. Multi-hot rows become uint32 label
    bits [N, ceil(C / 32)] with the layout of `pack_codes`.
    """
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    if query_labels.ndim not in (1, 2) or database_labels.ndim not in (1, 2):
        raise ValueError(
            "labels must be 1-D integer class ids or 2-D multi-hot arrays, got "
            f"query labels shape {query_labels.shape} and database labels shape "
            f"{database_labels.shape}"
        )
    if query_labels.ndim != database_labels.ndim:
        raise ValueError(
            "query labels and database labels must be of the same kind (both 1-D class "
            f"ids or both 2-D multi-hot), got shapes {query_labels.shape} and "
            f"{database_labels.shape}"
        )
    if query_labels.shape[0] != num_queries:
        raise ValueError(
            f"query labels have {query_labels.shape[0]} rows but there are {num_queries} query codes"
        )
    if database_labels.shape[0] != num_database:
        raise ValueError(
            f"database labels have {database_labels.shape[0]} rows but there are "
            f"{num_database} database codes"
        )

    if query_labels.ndim == 1:
        return (*_class_ids_as_indices(query_labels, database_labels), False)

    if query_labels.shape[1] != database_labels.shape[1]:
        raise ValueError(
            f"query labels have {query_labels.shape[1]} classes but database labels have "
            f"{database_labels.shape[1]}"
        )
    if query_labels.shape[1] == 0:
        raise ValueError("multi-hot labels must have at least one class column, got 0")
    return (
        pack_codes(_multi_hot_as_bool(query_labels, "query labels")),
        pack_codes(_multi_hot_as_bool(database_labels, "database labels")),
        True,
    )


def relevant_counts(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray | None:
    """Return int64 [Q], the relevant database items of each query, for class indices.

    Returns None for multi-hot label bits, whose counts need a pass over the database.
    """
    if query_labels.ndim != 1:
        return None
    largest = int(max(query_labels.max(initial=0), database_labels.max(initial=0)))
    if largest < 2**20:
        per_class = np.bincount(database_labels, minlength=largest + 1)
        return per_class[query_labels].astype(np.int64)
    classes, counts = np.unique(database_labels, return_counts=True)
    position = np.clip(np.searchsorted(classes, query_labels), 0, len(classes) - 1)
    return np.where(classes[position] == query_labels, counts[position], 0).astype(np.int64)


def _class_ids_as_indices(query_labels: np.ndarray, database_labels: np.ndarray):
    for name, labels in (("query labels", query_labels), ("database labels", database_labels)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"1-D {name} must be integer class ids, got dtype {labels.dtype}. "
                "Pass multi-hot labels as a 2-D array."
            )
    common_dtype = np.result_type(query_labels.dtype, database_labels.dtype)
    if not np.issubdtype(common_dtype, np.integer):
        raise ValueError(
            f"query labels ({query_labels.dtype}) and database labels "
            f"({database_labels.dtype}) have no common integer dtype. Cast both to one."
        )
    all_labels = np.concatenate([query_labels, database_labels]).astype(common_dtype)
    if all_labels.size and 0 <= all_labels.min() and all_labels.max() < 2**31:
        # Ids already fit int32 unchanged, and np.unique would sort every label.
        indices = all_labels.astype(np.int32)
    else:
        _, indices = np.unique(all_labels, return_inverse=True)
        indices = indices.astype(np.int32)
    return indices[: len(query_labels)], indices[len(query_labels) :]


def _multi_hot_as_bool(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype == np.bool_:
        return labels
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"2-D {name} must be multi-hot 0/1 or bool, got dtype {labels.dtype}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(
            f"2-D {name} must be multi-hot with values 0 and 1 only. Pass class ids as a 1-D array."
        )
    return labels == 1
