"""Retrieval metrics of Hamming ranking over packed binary codes.

Definitions (K is the number of ranked items, "all" when it is the whole database):
- Ranking: each query ranks the database by Hamming distance. Ties in distance are
  broken by database index, lower index first, which is the order FAISS binary
  indexes return.
- AP@K = sum over ranks k <= K of P@k * rel_k, divided by the number of relevant items
  within the top K; 0 when the top K contains none. mAP@K is its mean.
- tie_aware_AP@K: the expected AP@K when the items of every group of equal distance are
  ranked in uniformly random order, with the same normaliser as AP@K. Computed exactly
  from per-distance counts: closed forms for groups inside the top K, and a
  hypergeometric sum over the relevant items drawn from the group cut by rank K.
- precision@H<=r and recall@H<=r: the items within Hamming radius r of the query. A
  query whose ball is empty has precision 0; "empty_balls@H<=r" counts those queries.
- precision@N and recall@N for N <= K, and the precision-recall curve over radii
  0..bits.
- Queries with no relevant item in the whole database are left out of every mean and
  counted in "queries_without_relevant". A mean over no query is NaN.
Means are in float64 on the host; counts and rankings are exact integers from the
device (`ranking`, `hamming`).
"""

from __future__ import annotations

import operator

import numpy as np
import scipy.special

from semhash_jax.retrieval import hamming, ranking
from semhash_jax.retrieval import labels as labels_lib
from semhash_jax.retrieval.codes import WORD_BITS, check_packed_pair

TIE_RULE = "ties in Hamming distance are broken by database index (lower first)"
NO_RELEVANT_RULE = "queries with no relevant database item are left out of every mean"
EMPTY_BALL_RULE = "a query with no database item within the radius has precision 0"

# Rows of [queries x terms] float64 arrays processed at once on the host.
_HOST_ELEMENTS = 1 << 22


def retrieval_metrics(
    query_packed,
    query_labels,
    database_packed,
    database_labels,
    *,
    bits: int | None = None,
    top_k: int | None = None,
    radius: int = 2,
    pr_curve: bool = True,
    mesh=None,
) -> dict:
    """Compute every metric of the module docstring.

    Args:
      query_packed, database_packed: uint32 [Q, W] and [N, W] from `pack_codes`.
      query_labels, database_labels: 1-D class ids or 2-D multi-hot rows, the same kind.
      bits: the code length K; defaults to 32 * W. Distances range over 0..bits.
      top_k: the number of ranked items, None for the whole database; clamped to N.
      radius: the Hamming radius r of precision@H<=r and recall@H<=r.
      pr_curve: also compute the curve over radii 0..bits, which costs about
        2 (bits + 1) / 5 extra counting passes over the database.
      mesh: a jax Mesh with an axis "data" to split the database over; None for one
        device. Results are identical.

    Returns:
      {"metrics": {name: value}, "curves": {...}, and the settings used}. Inputs are
      never modified.
    """
    prepared = _prepare(query_packed, query_labels, database_packed, database_labels, bits, mesh)
    query_words, query_labels, database, total_relevant = prepared
    ranked_count = _resolve_top_k(top_k, database.num_items)
    radius = _resolve_radius(radius, database.bits)

    result = ranking.rank_top_k(query_words, query_labels, database, ranked_count, total_relevant)
    included = result.total_relevant > 0
    suffix = _k_suffix(ranked_count, database.num_items)
    metrics = {
        f"mAP@{suffix}": _mean(average_precision(result), included),
        f"tie_aware_mAP@{suffix}": _mean(
            tie_aware_average_precision(result, database.bits), included
        ),
    }

    if pr_curve:
        total, relevant = _device_histograms(query_words, query_labels, database)
        within_total = np.cumsum(total, axis=1)[:, radius]
        within_relevant = np.cumsum(relevant, axis=1)[:, radius]
    else:
        within_total, within_relevant = _device_radius_counts(
            query_words, query_labels, database, radius
        )
    precision, recall = _radius_precision_recall(
        within_total, within_relevant, result.total_relevant
    )
    metrics[f"precision@H<={radius}"] = _mean(precision, included)
    metrics[f"recall@H<={radius}"] = _mean(recall, included)
    metrics[f"empty_balls@H<={radius}"] = int(np.sum((within_total == 0) & included))
    metrics["queries_without_relevant"] = int(np.sum(~included))

    curves = {"precision@N": precision_recall_at_n(result, included)}
    if pr_curve:
        curves["pr_by_radius"] = _pr_by_radius(total, relevant, result.total_relevant, included)
    return {
        "metrics": metrics,
        "curves": curves,
        "num_queries": int(query_words.shape[0]),
        "num_database": int(database.num_items),
        "bits": int(database.bits),
        "top_k": None if suffix == "all" else ranked_count,
        "radius": radius,
        "tie_rule": TIE_RULE,
        "no_relevant_rule": NO_RELEVANT_RULE,
        "empty_ball_rule": EMPTY_BALL_RULE,
    }


def mean_average_precision(
    query_packed,
    query_labels,
    database_packed,
    database_labels,
    top_k: int | None,
    *,
    bits: int | None = None,
    mesh=None,
) -> dict:
    """Compute mAP@K and tie-aware mAP@K only (no radius metrics or curves).

    Arguments are as for `retrieval_metrics`. Returns a flat dict with "mAP@K" (or
    "mAP@all"), "tie_aware_mAP@K", "queries_without_relevant", "num_queries",
    "num_database", "top_k" (None for the whole database) and "tie_rule".
    """
    prepared = _prepare(query_packed, query_labels, database_packed, database_labels, bits, mesh)
    query_words, query_labels, database, total_relevant = prepared
    ranked_count = _resolve_top_k(top_k, database.num_items)
    result = ranking.rank_top_k(query_words, query_labels, database, ranked_count, total_relevant)
    included = result.total_relevant > 0
    suffix = _k_suffix(ranked_count, database.num_items)
    return {
        f"mAP@{suffix}": _mean(average_precision(result), included),
        f"tie_aware_mAP@{suffix}": _mean(
            tie_aware_average_precision(result, database.bits), included
        ),
        "queries_without_relevant": int(np.sum(~included)),
        "num_queries": int(query_words.shape[0]),
        "num_database": int(database.num_items),
        "top_k": None if suffix == "all" else ranked_count,
        "tie_rule": TIE_RULE,
    }


def format_table(header_rows: list[tuple[str, object]], results: dict, footer_rows=()) -> str:
    """Return header rows, the scalar metrics, the tie rule and footer rows as a plain-text table."""
    rows = list(header_rows)
    rows += [
        (name, f"{value:.4f}" if isinstance(value, float) else value)
        for name, value in results["metrics"].items()
    ]
    rows.append(("tie rule", results["tie_rule"]))
    rows += [
        (name, f"{value:.4f}" if isinstance(value, float) else value) for name, value in footer_rows
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def average_precision(result: ranking.Ranking) -> np.ndarray:
    """Return AP@K [Q] of the ranked lists, 0 where the top K contains no relevant item."""
    num_queries = result.relevant.shape[0]
    # Only relevant ranks add to AP, so the work follows them, not all K ranks.
    rows, columns = np.nonzero(result.relevant)
    found = np.bincount(rows, minlength=num_queries)
    first_of_row = np.cumsum(found) - found
    hit_number = np.arange(len(rows)) - first_of_row[rows] + 1
    precision_sum = np.bincount(rows, weights=hit_number / (columns + 1.0), minlength=num_queries)
    return np.where(found > 0, precision_sum / np.maximum(found, 1), 0.0)


def tie_aware_average_precision(result: ranking.Ranking, bits: int) -> np.ndarray:
    """Return the expected AP@K [Q] over random orders within equal distances.

    Groups of equal distance closer than the cutoff lie wholly inside the top K. A
    group of n items with r relevant, after s items of which R are relevant, adds in
    expectation (r / n) (R + 1) A + r (r - 1) / (n (n - 1)) (n - (s + 1) A) to the sum
    of P@k * rel_k, where A = sum_{i=1..n} 1 / (s + i). The group at the cutoff
    distance contributes m = K - s of its G items; the number j of relevant items among
    them is hypergeometric, and the normaliser R + j depends on it, so the expectation
    is a sum over j.
    """
    num_queries, top_k = result.distances.shape
    # Each row is sorted by distance, so its groups are runs of equal distances. Find
    # the last column of every run, then each run's size and relevant count from the
    # run before it. Only runs closer than the cutoff are summed here.
    distances = result.distances
    run_ends = np.ones(distances.shape, dtype=bool)
    run_ends[:, :-1] = distances[:, 1:] != distances[:, :-1]
    rows, last = np.nonzero(run_ends)
    previous_last = np.empty_like(last)
    previous_last[0] = -1
    previous_last[1:] = np.where(rows[1:] == rows[:-1], last[:-1], -1)
    # Relevant items up to a column, from the sorted flat positions of the relevant
    # items: much less work than a cumulative sum over all Q x K ranks.
    hits = np.flatnonzero(result.relevant)
    row_start = rows * top_k
    hits_before_row = np.searchsorted(hits, row_start)
    relevant_at_last = np.searchsorted(hits, row_start + last, side="right") - hits_before_row
    relevant_before = np.searchsorted(hits, row_start + previous_last, side="right")
    relevant_before = relevant_before - hits_before_row
    closer_run = distances[rows, last] < result.cutoff[rows]
    size = (last - previous_last).astype(np.float64)
    run_relevant = (relevant_at_last - relevant_before).astype(np.float64)
    contribution = _expected_precision_sum(
        size, run_relevant, (previous_last + 1).astype(np.float64), relevant_before
    )
    inside_sum = np.bincount(
        rows, weights=np.where(closer_run, contribution, 0.0), minlength=num_queries
    )
    relevant_closer = np.bincount(
        rows, weights=np.where(closer_run, run_relevant, 0.0), minlength=num_queries
    )

    ties_in_top_k = (top_k - result.closer).astype(np.float64)
    harmonic_taken = _harmonic(result.closer + ties_in_top_k) - _harmonic(result.closer)
    spread_sum = ties_in_top_k - (result.closer + 1) * harmonic_taken
    output = np.zeros(num_queries)
    low = np.maximum(0, result.tie_relevant + (top_k - result.closer) - result.tie_size)
    high = np.minimum(top_k - result.closer, result.tie_relevant)
    for rows in _row_blocks(num_queries, int(np.max(high - low, initial=0)) + 1):
        drawn = low[rows, None] + np.arange(int(np.max(high[rows] - low[rows])) + 1)[None, :]
        possible = drawn <= high[rows, None]
        probability = _hypergeometric_pmf(
            drawn, result.tie_size[rows], result.tie_relevant[rows], ties_in_top_k[rows], low[rows]
        )
        probability = np.where(possible, probability, 0.0)
        pairs = np.where(ties_in_top_k[rows, None] > 1, drawn * (drawn - 1.0), 0.0)
        pair_norm = np.maximum(ties_in_top_k[rows, None] * (ties_in_top_k[rows, None] - 1.0), 1.0)
        boundary = (
            drawn
            / ties_in_top_k[rows, None]
            * (relevant_closer[rows, None] + 1)
            * harmonic_taken[rows, None]
            + pairs / pair_norm * spread_sum[rows, None]
        )
        normaliser = relevant_closer[rows, None] + drawn
        value = np.where(
            normaliser > 0, (inside_sum[rows, None] + boundary) / np.maximum(normaliser, 1), 0.0
        )
        output[rows] = np.sum(probability * value, axis=1)
    return output


def precision_recall_at_n(result: ranking.Ranking, included: np.ndarray) -> dict:
    """Return mean precision@N and recall@N at the points of `curve_points(K)`."""
    top_k = result.relevant.shape[1]
    points = curve_points(top_k)
    hits = np.cumsum(result.relevant.view(np.uint8), axis=1, dtype=np.int32)
    hits = hits[:, np.asarray(points) - 1]
    precision = hits / np.asarray(points, dtype=np.float64)
    recall = hits / np.maximum(result.total_relevant, 1)[:, None]
    return {
        "N": points,
        "precision": [_mean(column, included) for column in precision.T],
        "recall": [_mean(column, included) for column in recall.T],
    }


def curve_points(top_k: int) -> list[int]:
    """Return the values of N, up to top_k, at which precision@N and recall@N are reported."""
    points = {1, 5, 10, 20, 50, 100, top_k}
    points.update(round(top_k * step / 50) for step in range(1, 51))
    return sorted(point for point in points if 1 <= point <= top_k)


def _hypergeometric_pmf(drawn, population, successes, draws, low):
    """Return P(j relevant among `draws` items drawn from `population` holding `successes`).

    Rows are queries and columns j = low, low + 1, ...; columns beyond the support get
    meaningless values and are masked by the caller. The pmf at `low` comes from log
    binomial coefficients and the rest from the ratio of consecutive terms, which is
    much faster than scipy.stats.hypergeom and agrees with it to about 1e-13.
    """
    population = population.astype(np.float64)[:, None]
    successes = successes.astype(np.float64)[:, None]
    draws = draws.astype(np.float64)[:, None]
    low = low.astype(np.float64)[:, None]
    log_first = (
        _log_binomial(successes, low)
        + _log_binomial(population - successes, draws - low)
        - _log_binomial(population, draws)
    )
    # P(j + 1) / P(j) = (K - j)(n - j) / ((j + 1)(N - K - n + j + 1)).
    j = drawn[:, :-1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(
            np.maximum((successes - j) * (draws - j), 1e-300)
            / np.maximum((j + 1) * (population - successes - draws + j + 1), 1e-300)
        )
    log_pmf = np.concatenate([log_first, log_first + np.cumsum(log_ratio, axis=1)], axis=1)
    return np.exp(log_pmf)


def _log_binomial(n, k):
    return (
        scipy.special.gammaln(n + 1)
        - scipy.special.gammaln(k + 1)
        - scipy.special.gammaln(n - k + 1)
    )


def _expected_precision_sum(size, relevant, before, relevant_before):
    """Return the expected sum of P@k * rel_k over each group (0 for empty groups)."""
    safe_size = np.maximum(size, 1.0)
    harmonic = _harmonic(before + size) - _harmonic(before)
    spread = size - (before + 1) * harmonic
    pair_norm = np.maximum(size * (size - 1), 1.0)
    value = relevant / safe_size * (relevant_before + 1) * harmonic
    value = value + relevant * (relevant - 1) / pair_norm * spread
    return np.where(size > 0, value, 0.0)


def _harmonic(n):
    """Return the harmonic number H(n) = sum_{i=1..n} 1 / i in float64."""
    return scipy.special.digamma(np.asarray(n, dtype=np.float64) + 1.0) + np.euler_gamma


def _radius_precision_recall(within_total, within_relevant, total_relevant):
    precision = np.where(within_total > 0, within_relevant / np.maximum(within_total, 1), 0.0)
    recall = within_relevant / np.maximum(total_relevant, 1)
    return precision, recall


def _pr_by_radius(total, relevant, total_relevant, included) -> dict:
    within_total = np.cumsum(total, axis=1)
    within_relevant = np.cumsum(relevant, axis=1)
    precision, recall = _radius_precision_recall(
        within_total, within_relevant, total_relevant[:, None]
    )
    return {
        "radius": list(range(total.shape[1])),
        "precision": [_mean(column, included) for column in precision.T],
        "recall": [_mean(column, included) for column in recall.T],
    }


def _device_histograms(query_words, query_labels, database):
    """Return int64 histograms (total [Q, bits + 1], relevant [Q, bits + 1]) of distances.

    Entry b counts the database items at Hamming distance exactly b from the query, in
    about 2 (bits + 1) / 5 counting passes over the database.
    """
    bins = range(database.bits + 1)
    fields = [hamming.Field("eq", b) for b in bins]
    fields += [hamming.Field("eq", b, relevant=True) for b in bins]
    counts = ranking.count_per_query(query_words, query_labels, database, fields)
    return counts[:, : len(bins)], counts[:, len(bins) :]


def _device_radius_counts(query_words, query_labels, database, radius: int):
    fields = (hamming.Field("le", radius), hamming.Field("le", radius, relevant=True))
    counts = ranking.count_per_query(query_words, query_labels, database, fields)
    return counts[:, 0], counts[:, 1]


def _prepare(query_packed, query_labels, database_packed, database_labels, bits, mesh):
    query_packed = np.asarray(query_packed)
    database_packed = np.asarray(database_packed)
    check_packed_pair(query_packed, database_packed)
    num_queries, num_words = query_packed.shape
    num_database = database_packed.shape[0]
    if num_queries == 0 or num_database == 0:
        raise ValueError(
            f"retrieval needs at least one query and one database item, got {num_queries} "
            f"queries and {num_database} database items"
        )
    if bits is None:
        bits = num_words * WORD_BITS
    bits = operator.index(bits)
    if not (num_words - 1) * WORD_BITS < bits <= num_words * WORD_BITS:
        raise ValueError(
            f"bits = {bits} does not match packed codes of {num_words} words per code; "
            f"expected {(num_words - 1) * WORD_BITS + 1} to {num_words * WORD_BITS}"
        )

    query_labels, database_labels, _ = labels_lib.prepare_labels(
        query_labels, database_labels, num_queries, num_database
    )
    total_relevant = labels_lib.relevant_counts(query_labels, database_labels)
    database = hamming.put_database(database_packed, database_labels, bits, mesh)
    return query_packed, query_labels, database, total_relevant


def _resolve_top_k(top_k, num_database: int) -> int:
    """Return the number of ranked items: top_k clamped to N, or N for None."""
    if top_k is None:
        return num_database
    if isinstance(top_k, (bool, np.bool_)):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")  # noqa: TRY004
    try:
        top_k = operator.index(top_k)
    except TypeError:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}") from None
    if top_k <= 0:
        raise ValueError(f"top_k must be a positive integer or None (whole database), got {top_k}")
    return min(top_k, num_database)


def _resolve_radius(radius, bits: int) -> int:
    if isinstance(radius, (bool, np.bool_)):
        raise ValueError(f"radius must be an integer in [0, {bits}], got {radius!r}")  # noqa: TRY004
    try:
        radius = operator.index(radius)
    except TypeError:
        raise ValueError(f"radius must be an integer in [0, {bits}], got {radius!r}") from None
    if not 0 <= radius <= bits:
        raise ValueError(
            f"radius must be an integer in [0, {bits}] for {bits}-bit codes, got {radius}"
        )
    return radius


def _k_suffix(ranked_count: int, num_database: int) -> str:
    return "all" if ranked_count == num_database else str(ranked_count)


def _mean(values: np.ndarray, included: np.ndarray) -> float:
    selected = np.asarray(values, dtype=np.float64)[included]
    return float(selected.mean()) if selected.size else float("nan")


def _row_blocks(num_rows: int, columns: int):
    """Yield slices of rows such that rows x columns stays near _HOST_ELEMENTS."""
    step = max(1, _HOST_ELEMENTS // max(columns, 1))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))
