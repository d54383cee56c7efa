"""Mean average precision (mAP@K) of Hamming ranking over packed binary codes.

Ranking rule: each query ranks the whole database by Hamming distance, and ties in
distance are broken by database index, lower index first. This is also the order that
FAISS binary indexes return. The rule matters because codes of 32 bits or fewer give
many equal distances, and a different order inside a tie changes AP.

AP@K of one query is the sum over ranks k <= K of P@k * rel_k, divided by the number of
relevant items within the top K. The result is 0 when the top K contains no relevant
item. mAP@K is the mean over queries that have at least one relevant item in the whole
database. Queries with no relevant database item are left out of the mean and counted
in "queries_without_relevant".

Per-query AP is computed in float32 on the device and the mean in float64. A different
query_chunk can change the last float32 bits, because XLA may order the sums differently.

NOTE: only this fixed tie order is computed. A tie-aware AP (the expected AP over a
random order within equal distances) is not reported.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from semhash_jax.retrieval.codes import check_packed_pair
from semhash_jax.retrieval.hamming import hamming_distances

TIE_RULE = "ties in Hamming distance are broken by database index (lower first)"

# Peak device memory per chunk is an estimate of 12 to 24 bytes x query_chunk x N:
# int32 distances, top-k buffers and, for multi-hot labels, a float32 count of shared labels.
DEFAULT_QUERY_CHUNK = 256


def mean_average_precision(
    query_packed,
    query_labels,
    database_packed,
    database_labels,
    top_k: int | None,
    *,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
) -> dict:
    """Compute mAP@K of Hamming ranking, with ties broken by database index (lower first).

    Args:
      query_packed, database_packed: uint32 arrays [Q, words] and [N, words] from
        `pack_codes`, with the same number of words.
      query_labels, database_labels: either 1-D integer class ids (relevant means the
        same id) or 2-D multi-hot arrays [*, C] of 0/1 or bools (relevant means at
        least one shared label). Both must be of the same kind. An integer label and
        its one-hot row give the same result.
      top_k: the number of ranked database items K, or None for the whole database.
        A value larger than N is clamped to N.
      query_chunk: the number of queries ranked in one jitted call. Device memory
        grows as O(query_chunk x N). The last chunk is padded to the same size, so the
        ranking function compiles once per call shape.

    Returns:
      A dict with the mean AP under the key "mAP@K", or "mAP@all" when top_k is None or
      >= N, and "queries_without_relevant", "num_queries", "num_database", "top_k" (K
      as passed, or None when the whole database is ranked) and "tie_rule". The mean is
      NaN when no query has a relevant database item.

    Raises ValueError for invalid shapes, dtypes or label values, empty query or
    database sets, top_k <= 0 and query_chunk <= 0. Inputs are never modified.
    """
    query_packed = np.asarray(query_packed)
    database_packed = np.asarray(database_packed)
    check_packed_pair(query_packed, database_packed)
    num_queries = query_packed.shape[0]
    num_database = database_packed.shape[0]
    if num_queries == 0 or num_database == 0:
        raise ValueError(
            f"mAP needs at least one query and one database item, got {num_queries} "
            f"queries and {num_database} database items"
        )

    ranked_count = _resolve_top_k(top_k, num_database)
    chunk_size = _resolve_query_chunk(query_chunk, num_queries)
    query_labels, database_labels, multi_label = _prepare_labels(
        query_labels, database_labels, num_queries, num_database
    )
    has_relevant = _queries_with_relevant(query_labels, database_labels, multi_label)

    database_packed_device = jnp.asarray(database_packed)
    database_labels_device = jnp.asarray(database_labels)
    chunk_results = []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        chunk_ap = _chunk_average_precision(
            _pad_rows(query_packed[start:stop], chunk_size),
            _pad_rows(query_labels[start:stop], chunk_size),
            database_packed_device,
            database_labels_device,
            top_k=ranked_count,
            multi_label=multi_label,
        )
        chunk_results.append((chunk_ap, stop - start))
    average_precision = np.concatenate(
        [np.asarray(chunk_ap, dtype=np.float64)[:size] for chunk_ap, size in chunk_results]
    )

    included = average_precision[has_relevant]
    mean_ap = float(included.mean()) if included.size else float("nan")
    ranks_all = ranked_count == num_database
    return {
        "mAP@all" if ranks_all else f"mAP@{ranked_count}": mean_ap,
        "queries_without_relevant": int(num_queries - has_relevant.sum()),
        "num_queries": int(num_queries),
        "num_database": int(num_database),
        "top_k": None if ranks_all else ranked_count,
        "tie_rule": TIE_RULE,
    }


@functools.partial(jax.jit, static_argnames=("top_k", "multi_label"))
def _chunk_average_precision(
    query_packed, query_labels, database_packed, database_labels, *, top_k, multi_label
):
    """Return AP@top_k [chunk] for one query chunk, 0 where the top K has no relevant item."""
    distances = hamming_distances(query_packed, database_packed)
    # jax.lax.top_k puts the lower index first among equal values (documented in its
    # docstring, jax 0.10.2), so ranking by -distance breaks ties by database index.
    _, ranked_indices = jax.lax.top_k(-distances, top_k)

    if multi_label:
        # Labels are 0/1, so every input format of the matmul (float32, TF32 or bf16)
        # is exact, and float32 accumulation counts exactly below 2**24 classes.
        shared_labels = jnp.einsum("qc,nc->qn", query_labels, database_labels)
        relevant = jnp.take_along_axis(shared_labels, ranked_indices, axis=1) > 0
    else:
        relevant = database_labels[ranked_indices] == query_labels[:, None]

    relevant = relevant.astype(jnp.float32)
    hits_so_far = jnp.cumsum(relevant, axis=1)
    ranks = jnp.arange(1, top_k + 1, dtype=jnp.float32)
    precision_sum = jnp.sum(hits_so_far / ranks * relevant, axis=1)
    hits = hits_so_far[:, -1]
    return jnp.where(hits > 0, precision_sum / jnp.maximum(hits, 1.0), 0.0)


def _resolve_top_k(top_k, num_database: int) -> int:
    """Return the number of ranked items: top_k clamped to N, or N for None."""
    if top_k is None:
        return num_database
    if isinstance(top_k, (bool, np.bool_)):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    try:
        top_k = operator.index(top_k)
    except TypeError:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}") from None
    if top_k <= 0:
        raise ValueError(f"top_k must be a positive integer or None (whole database), got {top_k}")
    return min(top_k, num_database)


def _resolve_query_chunk(query_chunk, num_queries: int) -> int:
    if isinstance(query_chunk, (bool, np.bool_)):
        raise ValueError(f"query_chunk must be a positive integer, got {query_chunk!r}")
    try:
        query_chunk = operator.index(query_chunk)
    except TypeError:
        raise ValueError(f"query_chunk must be a positive integer, got {query_chunk!r}") from None
    if query_chunk <= 0:
        raise ValueError(f"query_chunk must be a positive integer, got {query_chunk}")
    return min(query_chunk, num_queries)


def _prepare_labels(query_labels, database_labels, num_queries: int, num_database: int):
    """Validate labels and return (query, database, multi_label) as new device-ready arrays.

    Class ids become int32 indices into their sorted union, so ids of any integer
    dtype compare correctly without 64-bit jax. Multi-hot labels become float32 0/1.
    """
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    if query_labels.ndim not in (1, 2) or database_labels.ndim not in (1, 2):
        raise ValueError(
            "labels must be 1-D integer class ids or 2-D multi-hot arrays, got "
            f"query_labels shape {query_labels.shape} and database_labels shape "
            f"{database_labels.shape}"
        )
    if query_labels.ndim != database_labels.ndim:
        raise ValueError(
            "query_labels and database_labels must be of the same kind (both 1-D class "
            f"ids or both 2-D multi-hot), got shapes {query_labels.shape} and "
            f"{database_labels.shape}"
        )
    if query_labels.shape[0] != num_queries:
        raise ValueError(
            f"query_labels has {query_labels.shape[0]} rows but query_packed has {num_queries}"
        )
    if database_labels.shape[0] != num_database:
        raise ValueError(
            f"database_labels has {database_labels.shape[0]} rows but database_packed "
            f"has {num_database}"
        )

    if query_labels.ndim == 1:
        return (*_class_ids_as_indices(query_labels, database_labels), False)

    if query_labels.shape[1] != database_labels.shape[1]:
        raise ValueError(
            f"query_labels has {query_labels.shape[1]} classes but database_labels has "
            f"{database_labels.shape[1]}"
        )
    return (
        _multi_hot_as_float(query_labels, "query_labels"),
        _multi_hot_as_float(database_labels, "database_labels"),
        True,
    )


def _class_ids_as_indices(query_labels: np.ndarray, database_labels: np.ndarray):
    for name, labels in (("query_labels", query_labels), ("database_labels", database_labels)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"1-D {name} must be integer class ids, got dtype {labels.dtype}. "
                "Pass multi-hot labels as a 2-D array."
            )
    common_dtype = np.result_type(query_labels.dtype, database_labels.dtype)
    if not np.issubdtype(common_dtype, np.integer):
        raise ValueError(
            f"query_labels ({query_labels.dtype}) and database_labels "
            f"({database_labels.dtype}) have no common integer dtype. Cast both to one."
        )
    all_labels = np.concatenate([query_labels, database_labels]).astype(common_dtype)
    _, indices = np.unique(all_labels, return_inverse=True)
    indices = indices.astype(np.int32)
    return indices[: len(query_labels)], indices[len(query_labels) :]


def _multi_hot_as_float(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype != np.bool_:
        if not (
            np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
        ):
            raise ValueError(f"2-D {name} must be multi-hot 0/1 or bool, got dtype {labels.dtype}")
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError(
                f"2-D {name} must be multi-hot with values 0 and 1 only. Pass class ids as a 1-D array."
            )
    return labels.astype(np.float32)


def _queries_with_relevant(query_labels, database_labels, multi_label: bool) -> np.ndarray:
    """Return a bool [Q] that is True where some database item is relevant to the query."""
    if multi_label:
        classes_in_database = database_labels.any(axis=0)
        return (query_labels.astype(bool) & classes_in_database).any(axis=1)
    return np.isin(query_labels, database_labels)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Pad `array` with zero rows to `rows` rows, so every chunk has the same shape."""
    missing = rows - array.shape[0]
    if missing == 0:
        return array
    padding = [(0, missing)] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, padding)
