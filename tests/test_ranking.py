"""Tests for exact top-K ranking by counting, against a plain NumPy reference.

The reference computes the full distance matrix and sorts each row by (distance,
database index) with np.lexsort, the way the field usually ranks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semhash_jax.retrieval import hamming, ranking
from semhash_jax.retrieval import labels as labels_lib
from semhash_jax.retrieval.codes import pack_codes


def reference_top_k(query_bits, database_bits, query_labels, database_labels, top_k):
    distances = (query_bits[:, None, :] != database_bits[None, :, :]).sum(-1)
    if query_labels.ndim == 1:
        relevant = query_labels[:, None] == database_labels[None, :]
    else:
        relevant = (query_labels.astype(int) @ database_labels.T.astype(int)) > 0
    index = np.broadcast_to(np.arange(distances.shape[1]), distances.shape)
    order = np.lexsort((index, distances), axis=1)[:, :top_k]
    top_distances = np.take_along_axis(distances, order, axis=1)
    cutoff = top_distances[:, -1]
    at_cutoff = distances == cutoff[:, None]
    return {
        "ids": order,
        "distances": top_distances,
        "relevant": np.take_along_axis(relevant, order, axis=1),
        "cutoff": cutoff,
        "closer": (distances < cutoff[:, None]).sum(1),
        "tie_size": at_cutoff.sum(1),
        "tie_relevant": (at_cutoff & relevant).sum(1),
        "total_relevant": relevant.sum(1),
    }


def run_ranking(query_bits, database_bits, query_labels, database_labels, top_k, **kwargs):
    mesh = kwargs.pop("mesh", None)
    num_bits = query_bits.shape[1]
    query_prepared, database_prepared, _ = labels_lib.prepare_labels(
        query_labels, database_labels, len(query_bits), len(database_bits)
    )
    database = hamming.put_database(pack_codes(database_bits), database_prepared, num_bits, mesh)
    return ranking.rank_top_k(pack_codes(query_bits), query_prepared, database, top_k, **kwargs)


def assert_matches_reference(result, expected):
    for name, value in expected.items():
        np.testing.assert_array_equal(getattr(result, name), value, err_msg=name)


def random_case(seed, bits, num_database, num_queries, num_classes, duplicate_every=0):
    rng = np.random.default_rng(seed)
    query_bits = rng.random((num_queries, bits)) < 0.5
    database_bits = rng.random((num_database, bits)) < 0.5
    if duplicate_every:
        # Many identical codes give tie groups far larger than K.
        database_bits[::duplicate_every] = query_bits[0]
    query_labels = rng.integers(0, num_classes, num_queries)
    database_labels = rng.integers(0, num_classes, num_database)
    return query_bits, database_bits, query_labels, database_labels


CASES = [
    # bits, database, queries, K, classes, duplicate_every
    (12, 3000, 37, 100, 5, 0),
    (64, 20000, 20, 1000, 10, 0),
    (24, 5000, 9, 5000, 3, 0),
    (48, 40000, 11, 2500, 10, 0),
    (8, 9000, 13, 700, 4, 3),
    (100, 777, 5, 1, 2, 0),
    (1, 50, 4, 7, 2, 0),
    (300, 3000, 4, 200, 3, 0),  # Long codes: the cutoff estimate scans every 5th threshold.
]


@pytest.mark.parametrize("bits, num_database, num_queries, top_k, classes, duplicate", CASES)
def test_top_k_matches_reference(bits, num_database, num_queries, top_k, classes, duplicate):
    case = random_case(bits, bits, num_database, num_queries, classes, duplicate)

    result = run_ranking(*case, top_k)

    assert_matches_reference(result, reference_top_k(*case, top_k))


@pytest.mark.parametrize("method", ["counting", "sorting"])
def test_both_methods_match_reference(method):
    case = random_case(1, 24, 2000, 6, 4, duplicate_every=7)

    result = run_ranking(*case, 300, method=method)

    assert_matches_reference(result, reference_top_k(*case, 300))


def test_all_ties_keep_index_order():
    # Every database code equals the query, so every distance is 0 and the top K is
    # the first K indices.
    query_bits = np.zeros((2, 16), bool)
    database_bits = np.zeros((500, 16), bool)
    labels = np.arange(500) % 3

    result = run_ranking(query_bits, database_bits, np.array([0, 1]), labels, 40)

    np.testing.assert_array_equal(result.ids, np.tile(np.arange(40), (2, 1)))
    np.testing.assert_array_equal(result.cutoff, [0, 0])
    np.testing.assert_array_equal(result.closer, [0, 0])
    np.testing.assert_array_equal(result.tie_size, [500, 500])
    np.testing.assert_array_equal(result.tie_relevant, [167, 167])


def test_multi_label_relevance():
    rng = np.random.default_rng(4)
    query_bits = rng.random((6, 20)) < 0.5
    database_bits = rng.random((900, 20)) < 0.5
    query_labels = rng.random((6, 40)) < 0.05
    database_labels = rng.random((900, 40)) < 0.05
    query_labels[0] = False  # A query with no label is relevant to nothing.

    result = run_ranking(query_bits, database_bits, query_labels, database_labels, 50)

    expected = reference_top_k(query_bits, database_bits, query_labels, database_labels, 50)
    assert_matches_reference(result, expected)
    assert result.total_relevant[0] == 0


def test_wrong_estimates_still_exact(monkeypatch):
    # Brackets far below and far above the cutoff must move until they hold it.
    case = random_case(2, 32, 3000, 8, 3)
    expected = reference_top_k(*case, 200)
    for start in (-40, 0, 40):

        def wrong_estimate(query_words, *args, start=start, **kwargs):
            return jnp.full(query_words.shape[0], start, jnp.int32)

        monkeypatch.setattr(ranking, "_estimate_bracket", wrong_estimate)

        assert_matches_reference(run_ranking(*case, 200), expected)


def test_sharded_database_matches_one_device():
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    case = random_case(3, 48, 10000, 7, 5, duplicate_every=11)

    sharded = run_ranking(*case, 600, mesh=mesh)

    assert sharded.ids.shape == (7, 600)
    assert_matches_reference(sharded, reference_top_k(*case, 600))


def test_counts_on_padding_are_zero():
    # 33 items pad to a whole aligned block; padded items must count nowhere.
    case = random_case(6, 12, 33, 3, 2)
    result = run_ranking(*case, 33)

    assert_matches_reference(result, reference_top_k(*case, 33))
    assert result.ids.max() < 33


def test_rejects_top_k_outside_database():
    case = random_case(7, 12, 30, 2, 2)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 30\]"):
        run_ranking(*case, 31)
    with pytest.raises(ValueError, match="method must be"):
        run_ranking(*case, 3, method="heap")
