"""Tests for retrieval metrics: hand-computed cases and an exact enumeration reference.

The reference for tie-aware AP enumerates every placement of the relevant items inside
every group of equal distance, which is exact and independent of the closed forms in
the code under test.
"""

import itertools

import jax
import numpy as np
import pytest

from semhash_jax.retrieval.codes import pack_codes
from semhash_jax.retrieval.metrics import (
    curve_points,
    mean_average_precision,
    retrieval_metrics,
)


def codes_from_strings(*rows):
    return np.array([[char == "1" for char in row] for row in rows])


# Hand case: 2-bit codes, one query "00" of class 1.
#   item  code  class  distance
#   a     00    0      0
#   b     10    0      1
#   c     01    1      1
#   d     10    1      1
# Ranking with ties by index: a, b, c, d, relevance [0, 0, 1, 1].
#   AP@all = (1/3 + 2/4) / 2 = 5/12; AP@3 = (1/3) / 1 = 1/3; AP@2 = 0.
# Tie-aware: the group {b, c, d} contains 2 relevant items in random order. Each of the 3
# positions of its non-relevant item is equally likely:
#   [0,1,1,0] AP@all 7/12, AP@3 7/12, AP@2 1/2
#   [0,1,0,1] AP@all 1/2,  AP@3 1/2,  AP@2 1/2
#   [0,0,1,1] AP@all 5/12, AP@3 1/3,  AP@2 0
#   tie-aware AP@all = 1/2, AP@3 = 17/36, AP@2 = 1/3.
# Within radius 0 the ball is {a}: precision 0, recall 0. Within radius 1 it is
# everything: precision 2/4, recall 1.
HAND_QUERY = codes_from_strings("00")
HAND_DATABASE = codes_from_strings("00", "10", "01", "10")
HAND_QUERY_CLASSES = np.array([1])
HAND_DATABASE_CLASSES = np.array([0, 0, 1, 1])


def hand_metrics(top_k, radius=1, **kwargs):
    return retrieval_metrics(
        pack_codes(HAND_QUERY),
        HAND_QUERY_CLASSES,
        pack_codes(HAND_DATABASE),
        HAND_DATABASE_CLASSES,
        bits=2,
        top_k=top_k,
        radius=radius,
        **kwargs,
    )


@pytest.mark.parametrize(
    "top_k, name, index_ap, tie_aware_ap",
    [(None, "all", 5 / 12, 1 / 2), (3, "3", 1 / 3, 17 / 36), (2, "2", 0.0, 1 / 3)],
)
def test_hand_case_ap(top_k, name, index_ap, tie_aware_ap):
    metrics = hand_metrics(top_k)["metrics"]

    assert metrics[f"mAP@{name}"] == pytest.approx(index_ap, abs=1e-12)
    assert metrics[f"tie_aware_mAP@{name}"] == pytest.approx(tie_aware_ap, abs=1e-12)


def test_hand_case_radius():
    within_0 = hand_metrics(None, radius=0)["metrics"]
    within_1 = hand_metrics(None, radius=1)["metrics"]

    assert within_0["precision@H<=0"] == 0.0
    assert within_0["recall@H<=0"] == 0.0
    assert within_0["empty_balls@H<=0"] == 0
    assert within_1["precision@H<=1"] == pytest.approx(0.5)
    assert within_1["recall@H<=1"] == pytest.approx(1.0)


def test_hand_case_curves():
    curves = hand_metrics(None)["curves"]

    # P@N along [0, 0, 1, 1]: 0, 0, 1/3, 1/2; R@N with 2 relevant: 0, 0, 1/2, 1.
    at_n = curves["precision@N"]
    assert at_n["N"] == [1, 2, 3, 4]
    np.testing.assert_allclose(at_n["precision"], [0, 0, 1 / 3, 1 / 2])
    np.testing.assert_allclose(at_n["recall"], [0, 0, 1 / 2, 1])
    by_radius = curves["pr_by_radius"]
    assert by_radius["radius"] == [0, 1, 2]
    np.testing.assert_allclose(by_radius["precision"], [0, 1 / 2, 1 / 2])
    np.testing.assert_allclose(by_radius["recall"], [0, 1, 1])


def test_empty_ball_counts_as_zero_precision():
    # The query "11" is at distance >= 1 from every item, so its radius-0 ball is empty.
    result = retrieval_metrics(
        pack_codes(codes_from_strings("00", "11")),
        np.array([1, 1]),
        pack_codes(HAND_DATABASE),
        HAND_DATABASE_CLASSES,
        bits=2,
        radius=0,
    )

    assert result["metrics"]["empty_balls@H<=0"] == 1
    assert result["metrics"]["precision@H<=0"] == 0.0
    assert result["empty_ball_rule"].startswith("a query with no database item")


def test_queries_without_relevant_are_excluded():
    # The second query has class 7, absent from the database: left out and counted.
    result = retrieval_metrics(
        pack_codes(codes_from_strings("00", "00")),
        np.array([1, 7]),
        pack_codes(HAND_DATABASE),
        HAND_DATABASE_CLASSES,
        bits=2,
    )

    assert result["metrics"]["queries_without_relevant"] == 1
    assert result["metrics"]["mAP@all"] == pytest.approx(5 / 12)


def test_no_query_with_relevant_gives_nan():
    result = retrieval_metrics(
        pack_codes(HAND_QUERY), np.array([9]), pack_codes(HAND_DATABASE), HAND_DATABASE_CLASSES
    )

    assert np.isnan(result["metrics"]["mAP@all"])
    assert np.isnan(result["metrics"]["tie_aware_mAP@all"])
    assert result["metrics"]["queries_without_relevant"] == 1


def reference_ap(relevance, top_k):
    relevance = np.asarray(relevance[:top_k], dtype=float)
    hits = np.cumsum(relevance)
    if hits[-1] == 0:
        return 0.0
    return float(np.sum(relevance * hits / np.arange(1, len(relevance) + 1)) / hits[-1])


def reference_tie_aware_ap(distances, relevance, top_k):
    """Average AP@K over every placement of relevant items inside each distance group."""
    groups = []
    for value in np.unique(distances):
        members = relevance[distances == value]
        size, num_relevant = len(members), int(members.sum())
        groups.append(list(itertools.combinations(range(size), num_relevant)))
        groups[-1] = [(size, placement) for placement in groups[-1]]
    total, count = 0.0, 0
    for choice in itertools.product(*groups):
        sequence = []
        for size, placement in choice:
            sequence += [1 if position in placement else 0 for position in range(size)]
        total += reference_ap(sequence, top_k)
        count += 1
    return total / count


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("multi_label", [False, True])
def test_random_cases_match_enumeration(seed, multi_label):
    rng = np.random.default_rng(seed)
    bits, num_database, num_queries = 5, 14, 6
    query_bits = rng.random((num_queries, bits)) < 0.5
    database_bits = rng.random((num_database, bits)) < 0.5
    if multi_label:
        query_labels = rng.random((num_queries, 3)) < 0.4
        database_labels = rng.random((num_database, 3)) < 0.4
        relevant = (query_labels.astype(int) @ database_labels.T.astype(int)) > 0
    else:
        query_labels = rng.integers(0, 3, num_queries)
        database_labels = rng.integers(0, 3, num_database)
        relevant = query_labels[:, None] == database_labels[None, :]
    distances = (query_bits[:, None, :] != database_bits[None, :, :]).sum(-1)
    included = relevant.any(axis=1)

    for top_k in (1, 4, 9, None):
        result = retrieval_metrics(
            pack_codes(query_bits),
            query_labels,
            pack_codes(database_bits),
            database_labels,
            bits=bits,
            top_k=top_k,
        )
        ranked = top_k or num_database
        index_ap, tie_ap = [], []
        for query in np.flatnonzero(included):
            order = np.lexsort((np.arange(num_database), distances[query]))
            index_ap.append(reference_ap(relevant[query][order], ranked))
            tie_ap.append(reference_tie_aware_ap(distances[query], relevant[query], ranked))
        name = "all" if top_k is None else str(top_k)
        metrics = result["metrics"]
        assert metrics[f"mAP@{name}"] == pytest.approx(np.mean(index_ap), abs=1e-12)
        assert metrics[f"tie_aware_mAP@{name}"] == pytest.approx(np.mean(tie_ap), abs=1e-9)
        assert metrics["queries_without_relevant"] == int(np.sum(~included))


def test_large_tie_group_matches_enumeration_of_placements():
    # One group of 12 items with 5 relevant, cut by K = 4 after 2 closer items.
    # C(12, 5) = 792 placements are enumerated by the reference.
    query_bits = np.zeros((1, 4), bool)
    database_bits = np.ones((14, 4), bool)
    database_bits[:12, 0] = False
    database_bits[:12, 1:] = [[True, True, True]] * 12  # Distance 3 for the group.
    database_bits[12:] = False  # Distance 0 for the last two items.
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0])
    distances = database_bits.sum(1)

    result = mean_average_precision(
        pack_codes(query_bits), np.array([1]), pack_codes(database_bits), labels, 4, bits=4
    )

    expected = reference_tie_aware_ap(distances, labels == 1, 4)
    assert result["tie_aware_mAP@4"] == pytest.approx(expected, abs=1e-12)


def test_class_ids_match_one_hot():
    rng = np.random.default_rng(8)
    query_bits = rng.random((9, 12)) < 0.5
    database_bits = rng.random((70, 12)) < 0.5
    query_classes = rng.integers(0, 4, 9)
    database_classes = rng.integers(0, 4, 70)

    for top_k in (None, 10):
        by_id = retrieval_metrics(
            pack_codes(query_bits),
            query_classes,
            pack_codes(database_bits),
            database_classes,
            bits=12,
            top_k=top_k,
        )
        by_one_hot = retrieval_metrics(
            pack_codes(query_bits),
            np.eye(4, dtype=np.int32)[query_classes],
            pack_codes(database_bits),
            np.eye(4, dtype=bool)[database_classes],
            bits=12,
            top_k=top_k,
        )
        assert by_id == by_one_hot


def test_top_k_beyond_database_is_all():
    whole = hand_metrics(None)
    for top_k in (4, 5, 10**6):
        clamped = hand_metrics(top_k)
        assert clamped == whole
        assert clamped["top_k"] is None


def test_sharded_database_matches_one_device():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(10)
    query_bits = rng.random((12, 24)) < 0.5
    database_bits = rng.random((3000, 24)) < 0.5
    query_labels = rng.integers(0, 5, 12)
    database_labels = rng.integers(0, 5, 3000)
    arguments = (
        pack_codes(query_bits),
        query_labels,
        pack_codes(database_bits),
        database_labels,
    )

    for top_k in (None, 100):
        one_device = retrieval_metrics(*arguments, bits=24, top_k=top_k)
        sharded = retrieval_metrics(*arguments, bits=24, top_k=top_k, mesh=mesh)
        assert sharded == one_device


def test_radius_counts_without_curve_match_histograms():
    rng = np.random.default_rng(12)
    arguments = (
        pack_codes(rng.random((10, 12)) < 0.5),
        rng.integers(0, 3, 10),
        pack_codes(rng.random((200, 12)) < 0.5),
        rng.integers(0, 3, 200),
    )
    for radius in (0, 2, 5, 12):
        with_curve = retrieval_metrics(*arguments, bits=12, radius=radius)
        without_curve = retrieval_metrics(*arguments, bits=12, radius=radius, pr_curve=False)
        assert without_curve["metrics"] == with_curve["metrics"]
        assert "pr_by_radius" not in without_curve["curves"]


def test_inputs_unchanged():
    rng = np.random.default_rng(13)
    arguments = [
        pack_codes(rng.random((5, 40)) < 0.5),
        (rng.random((5, 3)) < 0.5).astype(np.int64),
        pack_codes(rng.random((30, 40)) < 0.5),
        (rng.random((30, 3)) < 0.5).astype(np.int64),
    ]
    originals = [argument.copy() for argument in arguments]

    retrieval_metrics(*arguments, bits=40, top_k=7)

    for argument, original in zip(arguments, originals, strict=True):
        np.testing.assert_array_equal(argument, original)
        assert argument.dtype == original.dtype


def test_curve_points():
    assert curve_points(1) == [1]
    assert curve_points(4) == [1, 2, 3, 4]
    points = curve_points(1000)
    assert points[:4] == [1, 5, 10, 20]
    assert points[-1] == 1000
    assert points == sorted(set(points))


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"radius must be an integer in \[0, 2\]"):
        hand_metrics(None, radius=3)
    with pytest.raises(ValueError, match="radius must be an integer"):
        hand_metrics(None, radius=1.5)
    with pytest.raises(ValueError, match="bits = 40 does not match"):
        retrieval_metrics(
            pack_codes(HAND_QUERY),
            HAND_QUERY_CLASSES,
            pack_codes(HAND_DATABASE),
            HAND_DATABASE_CLASSES,
            bits=40,
        )


def test_large_class_ids_match_small_ones():
    rng = np.random.default_rng(14)
    query_bits = rng.random((6, 16)) < 0.5
    database_bits = rng.random((90, 16)) < 0.5
    query_classes = rng.integers(0, 4, 6)
    database_classes = rng.integers(0, 4, 90)
    offset = 1_000_000_000  # Fits int32, too large to count with np.bincount.

    small = retrieval_metrics(
        pack_codes(query_bits),
        query_classes,
        pack_codes(database_bits),
        database_classes,
        bits=16,
        top_k=20,
    )
    large = retrieval_metrics(
        pack_codes(query_bits),
        query_classes + offset,
        pack_codes(database_bits),
        database_classes + offset,
        bits=16,
        top_k=20,
    )

    assert large == small


def test_all_ties_case():
    # Three identical database codes, so every distance is 0. The only relevant item is
    # the last one: by index it is ranked third, AP@all = 1/3. In random order it is
    # at rank 1, 2 or 3 with probability 1/3 each: (1 + 1/2 + 1/3) / 3 = 11/18.
    result = retrieval_metrics(
        pack_codes(codes_from_strings("101")),
        np.array([1]),
        pack_codes(codes_from_strings("101", "101", "101")),
        np.array([0, 0, 1]),
        bits=3,
    )

    assert result["metrics"]["mAP@all"] == pytest.approx(1 / 3, abs=1e-12)
    assert result["metrics"]["tie_aware_mAP@all"] == pytest.approx(11 / 18, abs=1e-12)
    assert result["metrics"]["precision@H<=2"] == pytest.approx(1 / 3)
