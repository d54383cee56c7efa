"""Tests for binarisation, packing, Hamming distances and mAP.

Expected mAP values are computed by hand in the comments, not by a second implementation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semhash_jax.retrieval import ranking
from semhash_jax.retrieval.codes import binarize, pack_codes, pack_codes_jax, unpack_codes
from semhash_jax.retrieval.hamming import hamming_distances
from semhash_jax.retrieval.metrics import TIE_RULE, mean_average_precision

CODE_LENGTHS = (1, 12, 24, 32, 48, 64, 100)


def codes_from_strings(*rows):
    """Turn strings such as "1100" into {-1, +1} rows, with bit 0 first."""
    return np.array([[1 if char == "1" else -1 for char in row] for row in rows], dtype=np.int8)


def random_codes(rng, num_codes, bits):
    return np.where(rng.random((num_codes, bits)) < 0.5, 1, -1).astype(np.int8)


# The hand-made retrieval case: 4-bit codes, 3 queries, 6 database items.
HAND_DATABASE = codes_from_strings("1100", "0000", "1000", "0100", "1111", "0010")
HAND_QUERIES = codes_from_strings("0000", "1111", "1010")
# Hamming distances, counted by hand bit by bit:
#   q0 = 0000: [2, 0, 1, 1, 4, 1]
#   q1 = 1111: [2, 4, 3, 3, 0, 3]
#   q2 = 1010: [2, 2, 1, 3, 2, 1]
HAND_DISTANCES = np.array([[2, 0, 1, 1, 4, 1], [2, 4, 3, 3, 0, 3], [2, 2, 1, 3, 2, 1]])
# Rankings with ties broken by database index:
#   q0: d1 (0), d2 (1), d3 (1), d5 (1), d0 (2), d4 (4)
#   q1: d4 (0), d0 (2), d2 (3), d3 (3), d5 (3), d1 (4)
HAND_QUERY_CLASSES = np.array([0, 1, 3])
HAND_DATABASE_CLASSES = np.array([0, 1, 0, 1, 0, 2])
# Single-label relevance along those rankings (q2 has class 3, absent from the database,
# so it is left out of every mean and counted):
#   q0 (relevant d0, d2, d4): [0, 1, 0, 0, 1, 1]
#   q1 (relevant d1, d3):     [0, 0, 0, 1, 0, 1]
# AP@all: q0 = (1/2 + 2/5 + 3/6) / 3 = 7/15, q1 = (1/4 + 2/6) / 2 = 7/24,
#   mAP@all = (7/15 + 7/24) / 2 = 91/240.
#   If the whole database were the slice [:-1], q0 would lose d4 and score (1/2 + 2/5) / 2.
# AP@3: q0 = (1/2) / 1 = 1/2, q1 has no relevant item in its top 3 and scores 0,
#   mAP@3 = 1/4.
# AP@5: q0 = (1/2 + 2/5) / 2 = 9/20, q1 = (1/4) / 1 = 1/4, mAP@5 = 7/20.
SINGLE_LABEL_MAP = {None: 91 / 240, 3: 1 / 4, 5: 7 / 20}

HAND_QUERY_MULTI_HOT = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
HAND_DATABASE_MULTI_HOT = np.array(
    [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]]
)
# Multi-label relevance means at least one shared label. q2 has no label, so it is left out:
#   q0 (class 0: d0, d2, d4):           [0, 1, 0, 0, 1, 1]
#   q1 (class 1 or 2: d1, d2, d3, d4):  [1, 0, 1, 1, 0, 1]
# AP@all: q0 = 7/15, q1 = (1 + 2/3 + 3/4 + 4/6) / 4 = 37/48,
#   mAP@all = (112/240 + 185/240) / 2 = 297/480.
# AP@3: q0 = 1/2, q1 = (1 + 2/3) / 2 = 5/6, mAP@3 = 2/3.
MULTI_LABEL_MAP = {None: 297 / 480, 3: 2 / 3}


# --- binarize -----------------------------------------------------------------


def test_binarize_zero_is_plus_one_numpy():
    features = np.array([[0.0, -0.0, 1.5, -2.0, 1e-30, -1e-30]], dtype=np.float32)
    original = features.copy()

    codes = binarize(features)

    assert isinstance(codes, np.ndarray)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, [[1, 1, 1, -1, 1, -1]])
    np.testing.assert_array_equal(features, original)


def test_binarize_zero_is_plus_one_jax():
    features = jnp.array([[0.0, -0.0, 1.5, -2.0]], dtype=jnp.float32)

    codes = binarize(features)
    jitted_codes = jax.jit(binarize)(features)

    assert isinstance(codes, jax.Array)
    assert codes.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(codes), [[1, 1, 1, -1]])
    np.testing.assert_array_equal(np.asarray(jitted_codes), [[1, 1, 1, -1]])


def test_binarize_integer_input():
    np.testing.assert_array_equal(binarize(np.array([0, 3, -3])), [1, 1, -1])


def test_binarize_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        binarize(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="dtype"):
        binarize(np.array([True, False]))


# --- pack_codes / unpack_codes ------------------------------------------------


@pytest.mark.parametrize("bits", CODE_LENGTHS)
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    codes = random_codes(rng, 9, bits)

    packed = pack_codes(codes)

    assert packed.dtype == np.uint32
    assert packed.shape == (9, -(-bits // 32))
    np.testing.assert_array_equal(unpack_codes(packed, bits), codes)


@pytest.mark.parametrize("bits", CODE_LENGTHS)
def test_jax_packer_matches_numpy(bits):
    rng = np.random.default_rng(100 + bits)
    codes = random_codes(rng, 9, bits)

    jax_packed = jax.jit(pack_codes_jax)(jnp.asarray(codes))

    assert jax_packed.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(jax_packed), pack_codes(codes))


def test_pack_bit_layout():
    # Bits 0 and 33 set in a 40-bit code: word 0 = 1 << 0, word 1 = 1 << (33 - 32).
    codes = -np.ones((1, 40), dtype=np.int8)
    codes[0, 0] = 1
    codes[0, 33] = 1

    np.testing.assert_array_equal(pack_codes(codes), [[1, 2]])
    np.testing.assert_array_equal(np.asarray(pack_codes_jax(codes)), [[1, 2]])


def test_pack_accepts_zero_one_and_bool():
    signs = codes_from_strings("1011", "0001")
    zero_one = (signs > 0).astype(np.int32)
    as_bool = signs > 0
    # 1011 sets bits 0, 2 and 3, so 1 + 4 + 8 = 13. 0001 sets bit 3, so 8.
    expected = [[13], [8]]

    np.testing.assert_array_equal(pack_codes(signs), expected)
    np.testing.assert_array_equal(pack_codes(zero_one), expected)
    np.testing.assert_array_equal(pack_codes(as_bool), expected)
    np.testing.assert_array_equal(pack_codes(jnp.asarray(signs)), expected)
    np.testing.assert_array_equal(np.asarray(pack_codes_jax(jnp.asarray(as_bool))), expected)


def test_code_alone_matches_batch():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(5, 48)).astype(np.float32)
    features[2, 10] = 0.0

    batch_packed = pack_codes(binarize(features))
    batch_packed_jax = np.asarray(pack_codes_jax(binarize(jnp.asarray(features))))

    for row in range(5):
        alone = pack_codes(binarize(features[row : row + 1]))
        alone_jax = np.asarray(pack_codes_jax(binarize(jnp.asarray(features[row : row + 1]))))
        np.testing.assert_array_equal(alone[0], batch_packed[row])
        np.testing.assert_array_equal(alone_jax[0], batch_packed[row])
    np.testing.assert_array_equal(batch_packed_jax, batch_packed)


def test_pack_leaves_input_unchanged():
    codes = codes_from_strings("1100", "0011")
    original = codes.copy()

    pack_codes(codes)
    pack_codes_jax(codes)

    np.testing.assert_array_equal(codes, original)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(np.array([1, -1, 1]))
    with pytest.raises(ValueError, match="K >= 1"):
        pack_codes(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="codes must contain only -1/\\+1"):
        pack_codes(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="codes must contain only -1/\\+1"):
        pack_codes(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="mixes -1 and 0"):
        pack_codes(np.array([[1, 0, -1]]))
    with pytest.raises(ValueError, match="2-D"):
        pack_codes_jax(jnp.ones((2, 3, 4)))


def test_unpack_rejects_bad_input():
    packed = pack_codes(codes_from_strings("1" * 40))  # two words, bits 32..39 used

    with pytest.raises(ValueError, match="bits must be >= 1"):
        unpack_codes(packed, 0)
    with pytest.raises(ValueError, match="larger than the packed width"):
        unpack_codes(packed, 65)
    with pytest.raises(ValueError, match="32-bit codes use 1"):
        unpack_codes(packed, 32)
    with pytest.raises(ValueError, match="set bits after bit 35"):
        unpack_codes(packed, 36)
    with pytest.raises(ValueError, match="dtype uint32"):
        unpack_codes(packed.astype(np.int64), 40)
    with pytest.raises(ValueError, match="2-D"):
        unpack_codes(packed[0], 40)


# --- hamming_distances --------------------------------------------------------


def test_hamming_hand_counts():
    distances = hamming_distances(pack_codes(HAND_QUERIES), pack_codes(HAND_DATABASE))

    assert distances.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(distances), HAND_DISTANCES)


def test_hamming_across_words():
    # 40-bit codes: all +1 and all -1 differ in 40 bits, and one flip at bit 35 gives 1.
    all_plus = np.ones((1, 40), dtype=np.int8)
    flipped = all_plus.copy()
    flipped[0, 35] = -1
    database = pack_codes(np.concatenate([-all_plus, flipped, all_plus]))

    distances = hamming_distances(pack_codes(all_plus), database)

    np.testing.assert_array_equal(np.asarray(distances), [[40, 1, 0]])


def test_hamming_counts_differing_entries():
    rng = np.random.default_rng(3)
    queries = random_codes(rng, 4, 100)
    database = random_codes(rng, 7, 100)
    differing_entries = (queries[:, None, :] != database[None, :, :]).sum(axis=-1)

    distances = hamming_distances(pack_codes(queries), pack_codes(database))

    np.testing.assert_array_equal(np.asarray(distances), differing_entries)


def test_hamming_rejects_mismatched_words():
    with pytest.raises(ValueError, match="words per code"):
        hamming_distances(np.zeros((2, 1), np.uint32), np.zeros((3, 2), np.uint32))
    with pytest.raises(ValueError, match="dtype uint32"):
        hamming_distances(np.zeros((2, 1), np.int32), np.zeros((3, 1), np.int32))


# --- ranking and mAP ----------------------------------------------------------


def hand_case_map(top_k, multi_label=False, **kwargs):
    query_labels = HAND_QUERY_MULTI_HOT if multi_label else HAND_QUERY_CLASSES
    database_labels = HAND_DATABASE_MULTI_HOT if multi_label else HAND_DATABASE_CLASSES
    return mean_average_precision(
        pack_codes(HAND_QUERIES),
        query_labels,
        pack_codes(HAND_DATABASE),
        database_labels,
        top_k,
        **kwargs,
    )


def test_map_hand_case_all():
    result = hand_case_map(None)

    assert result["mAP@all"] == pytest.approx(SINGLE_LABEL_MAP[None], rel=1e-6)
    assert result["queries_without_relevant"] == 1
    assert result["num_queries"] == 3
    assert result["num_database"] == 6
    assert result["top_k"] is None
    assert result["tie_rule"] == TIE_RULE


@pytest.mark.parametrize("top_k", [3, 5])
def test_map_hand_case_top_k(top_k):
    result = hand_case_map(top_k)

    assert set(result) == {
        f"mAP@{top_k}",
        f"tie_aware_mAP@{top_k}",
        "queries_without_relevant",
        "num_queries",
        "num_database",
        "top_k",
        "tie_rule",
    }
    assert result[f"mAP@{top_k}"] == pytest.approx(SINGLE_LABEL_MAP[top_k], rel=1e-6)
    assert result["top_k"] == top_k
    assert result["queries_without_relevant"] == 1


@pytest.mark.parametrize("top_k", [6, 7, 1000])
def test_map_top_k_clamped_to_database(top_k):
    result = hand_case_map(top_k)

    assert "mAP@all" in result
    assert result["mAP@all"] == pytest.approx(SINGLE_LABEL_MAP[None], rel=1e-6)
    assert result["top_k"] is None


def test_map_ties_broken_by_index():
    # Every database item is at distance 0 from the query, so the ranking is the index order.
    # The only relevant item is d3: AP@all = (1/4) / 1, and AP@3 = 0 because d3 is ranked 4th.
    codes = codes_from_strings("1010")
    database = pack_codes(np.repeat(codes, 4, axis=0))
    labels = np.array([5, 5, 5, 7])

    result_all = mean_average_precision(pack_codes(codes), np.array([7]), database, labels, None)
    result_top3 = mean_average_precision(pack_codes(codes), np.array([7]), database, labels, 3)

    assert result_all["mAP@all"] == pytest.approx(0.25, rel=1e-6)
    assert result_top3["mAP@3"] == 0.0
    assert result_top3["queries_without_relevant"] == 0


def test_map_multi_label_hand_case():
    result_all = hand_case_map(None, multi_label=True)
    result_top3 = hand_case_map(3, multi_label=True)

    assert result_all["mAP@all"] == pytest.approx(MULTI_LABEL_MAP[None], rel=1e-6)
    assert result_all["queries_without_relevant"] == 1
    assert result_top3["mAP@3"] == pytest.approx(MULTI_LABEL_MAP[3], rel=1e-6)
    assert result_top3["queries_without_relevant"] == 1


def test_map_bool_multi_hot_matches_integer():
    bool_result = mean_average_precision(
        pack_codes(HAND_QUERIES),
        HAND_QUERY_MULTI_HOT.astype(bool),
        pack_codes(HAND_DATABASE),
        HAND_DATABASE_MULTI_HOT.astype(bool),
        None,
    )

    assert bool_result == hand_case_map(None, multi_label=True)


@pytest.mark.parametrize("top_k", [None, 1, 3, 5])
def test_map_class_ids_match_one_hot(top_k):
    one_hot = np.eye(4, dtype=np.int64)

    class_ids_result = hand_case_map(top_k)
    one_hot_result = mean_average_precision(
        pack_codes(HAND_QUERIES),
        one_hot[HAND_QUERY_CLASSES],
        pack_codes(HAND_DATABASE),
        one_hot[HAND_DATABASE_CLASSES],
        top_k,
    )

    assert one_hot_result == class_ids_result


def test_map_no_relevant_anywhere_is_nan():
    result = mean_average_precision(
        pack_codes(HAND_QUERIES),
        np.array([7, 8, 9]),
        pack_codes(HAND_DATABASE),
        HAND_DATABASE_CLASSES,
        None,
    )

    assert np.isnan(result["mAP@all"])
    assert result["queries_without_relevant"] == 3


def test_map_leaves_inputs_unchanged():
    arguments = [
        pack_codes(HAND_QUERIES),
        HAND_QUERY_MULTI_HOT.copy(),
        pack_codes(HAND_DATABASE),
        HAND_DATABASE_MULTI_HOT.copy(),
    ]
    originals = [argument.copy() for argument in arguments]

    mean_average_precision(*arguments, 3)
    mean_average_precision(
        arguments[0], HAND_QUERY_CLASSES, arguments[2], HAND_DATABASE_CLASSES, None
    )

    for argument, original in zip(arguments, originals):
        np.testing.assert_array_equal(argument, original)
        assert argument.dtype == original.dtype
    np.testing.assert_array_equal(HAND_QUERY_CLASSES, [0, 1, 3])
    np.testing.assert_array_equal(HAND_DATABASE_CLASSES, [0, 1, 0, 1, 0, 2])


@pytest.mark.parametrize("multi_label", [False, True])
def test_map_query_blocks_match_one_block(multi_label, monkeypatch):
    rng = np.random.default_rng(5)
    queries = pack_codes(random_codes(rng, 23, 12))
    database = pack_codes(random_codes(rng, 80, 12))
    if multi_label:
        query_labels = (rng.random((23, 6)) < 0.3).astype(np.int32)
        database_labels = (rng.random((80, 6)) < 0.3).astype(np.int32)
    else:
        query_labels = rng.integers(0, 6, size=23)
        database_labels = rng.integers(0, 5, size=80)

    for top_k in (None, 10):
        one_block = mean_average_precision(queries, query_labels, database, database_labels, top_k)
        for block in (1, 5, 7):
            monkeypatch.setattr(ranking, "MAX_BLOCK", block)
            blocked = mean_average_precision(
                queries, query_labels, database, database_labels, top_k
            )
            monkeypatch.undo()
            assert blocked == one_block, f"block={block}, top_k={top_k}"


def test_map_compiles_once_across_blocks(monkeypatch):
    # _select_bit runs only while jit traces: once in the boundary stage and twice in
    # the selection stage. The shapes here are used by no other test, so no earlier
    # trace is reused.
    trace_count = 0
    traced_function = ranking._select_bit

    def counting_select_bit(words, rank):
        nonlocal trace_count
        trace_count += 1
        return traced_function(words, rank)

    monkeypatch.setattr(ranking, "_select_bit", counting_select_bit)
    monkeypatch.setattr(ranking, "MAX_BLOCK", 3)
    rng = np.random.default_rng(9)
    queries = pack_codes(random_codes(rng, 7, 20))
    database = pack_codes(random_codes(rng, 3037, 20))

    mean_average_precision(queries, rng.integers(0, 3, 7), database, rng.integers(0, 3, 3037), 5)

    assert trace_count == 3


def test_map_class_ids_of_wide_dtypes():
    # Ids beyond the int32 range must not wrap: 2**32 + 1 would wrap to 1 and make d5
    # relevant to q1. Without wrapping, relevance is that of the single-label hand case.
    query_labels = np.array([2**40, 1, 2], dtype=np.int64)
    database_labels = np.array([2**40, 1, 2**40, 1, 2**40, 2**32 + 1], dtype=np.int64)

    result = mean_average_precision(
        pack_codes(HAND_QUERIES), query_labels, pack_codes(HAND_DATABASE), database_labels, None
    )

    assert result["mAP@all"] == pytest.approx(SINGLE_LABEL_MAP[None], rel=1e-6)


def test_map_rejects_bad_input():
    queries = pack_codes(HAND_QUERIES)
    database = pack_codes(HAND_DATABASE)

    def call(
        top_k=None, query_labels=HAND_QUERY_CLASSES, database_labels=HAND_DATABASE_CLASSES, **kwargs
    ):
        return mean_average_precision(
            kwargs.pop("queries", queries),
            query_labels,
            kwargs.pop("database", database),
            database_labels,
            top_k,
            **kwargs,
        )

    for top_k in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            call(top_k)
    with pytest.raises(ValueError, match="words per code"):
        call(database=np.zeros((6, 2), np.uint32))
    with pytest.raises(ValueError, match="dtype uint32"):
        call(queries=queries.astype(np.int64))
    with pytest.raises(ValueError, match="at least one query"):
        call(queries=queries[:0], query_labels=HAND_QUERY_CLASSES[:0])
    with pytest.raises(ValueError, match="query labels have 2 rows"):
        call(query_labels=HAND_QUERY_CLASSES[:2])
    with pytest.raises(ValueError, match="database labels have 5 rows"):
        call(database_labels=HAND_DATABASE_CLASSES[:5])
    with pytest.raises(ValueError, match="integer class ids"):
        call(query_labels=HAND_QUERY_CLASSES.astype(np.float32))
    with pytest.raises(ValueError, match="same kind"):
        call(query_labels=HAND_QUERY_MULTI_HOT)
    with pytest.raises(ValueError, match="values 0 and 1 only"):
        call(query_labels=HAND_QUERY_MULTI_HOT * 2, database_labels=HAND_DATABASE_MULTI_HOT)
    with pytest.raises(ValueError, match="classes"):
        call(query_labels=HAND_QUERY_MULTI_HOT[:, :2], database_labels=HAND_DATABASE_MULTI_HOT)
    with pytest.raises(ValueError, match="no common integer dtype"):
        call(
            query_labels=HAND_QUERY_CLASSES.astype(np.uint64),
            database_labels=HAND_DATABASE_CLASSES.astype(np.int64),
        )
