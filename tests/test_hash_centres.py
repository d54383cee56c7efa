"""Hash centres of CSQ and OrthoHash: Hadamard rows, random codes with a guaranteed
minimum distance, and multi-label targets. Distances are recounted here bit by bit."""

import itertools
import math
import time

import jax.numpy as jnp
import numpy as np
import pytest

from semhash_jax.models import hash_centres


def brute_min_distance(codes):
    codes = np.asarray(codes)
    return min(int(np.sum(a != b)) for a, b in itertools.combinations(codes, 2))


def test_hadamard_order_8_by_hand():
    h = hash_centres.hadamard(8)
    # Sylvester's construction: entry (i, j) is (-1)^popcount(i & j).
    expected = np.array([[(-1) ** bin(i & j).count("1") for j in range(8)] for i in range(8)])
    np.testing.assert_array_equal(h, expected)
    np.testing.assert_array_equal(h @ h.T, 8 * np.eye(8))


def test_hadamard_centres_when_power_of_two_and_few_classes():
    centres = hash_centres.hash_centres(10, 16)
    h = hash_centres.hadamard(16)
    np.testing.assert_array_equal(centres, h[:10])
    assert brute_min_distance(centres) == 8
    # Up to 2K classes, the negated rows follow.
    centres = hash_centres.hash_centres(24, 16)
    np.testing.assert_array_equal(centres[16:], -h[:8])
    assert brute_min_distance(centres) == 8


@pytest.mark.parametrize("classes, bits", [(10, 12), (10, 24), (100, 12), (100, 48), (40, 16)])
def test_random_centres_meet_the_guaranteed_distance(classes, bits):
    centres = hash_centres.hash_centres(classes, bits, seed=3)
    assert centres.shape == (classes, bits)
    assert set(np.unique(centres)) == {-1, 1}
    # d from the bound, counted here: classes * sum_{i < d} C(bits, i) <= 2^(bits - 1).
    bound = 0
    while sum(math.comb(bits, i) for i in range(bound + 1)) * classes <= 2 ** (bits - 1):
        bound += 1
    assert brute_min_distance(centres) >= max(bound, 1)
    assert hash_centres.min_pairwise_distance(centres) == brute_min_distance(centres)


def test_small_class_counts_get_more_than_the_bound():
    # 10 codes of 12 bits: the bound guarantees 3; the search finds at least 5.
    centres = hash_centres.hash_centres(10, 12, seed=0)
    assert hash_centres.guaranteed_distance(10, 12) == 3
    assert brute_min_distance(centres) >= 5


def test_centres_are_reproducible_by_seed():
    a = hash_centres.hash_centres(30, 24, seed=1)
    np.testing.assert_array_equal(a, hash_centres.hash_centres(30, 24, seed=1))
    assert not np.array_equal(a, hash_centres.hash_centres(30, 24, seed=2))


@pytest.mark.parametrize("bits, expected_floor", [(24, 3), (48, 11)])
def test_ten_thousand_classes_fast(bits, expected_floor):
    start = time.perf_counter()
    centres = hash_centres.hash_centres(10_000, bits, seed=0)
    elapsed = time.perf_counter() - start
    assert centres.shape == (10_000, bits)
    assert hash_centres.guaranteed_distance(10_000, bits) == expected_floor
    # Counted independently on a sample of pairs, and fully by the packed count.
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 10_000, (2, 20_000))
    i, j = i[i != j], j[i != j]
    assert np.sum(centres[i] != centres[j], axis=1).min() >= expected_floor
    assert hash_centres.min_pairwise_distance(centres) >= expected_floor
    assert elapsed < 60  # Loose: a few seconds on a 2-core machine.


def test_twelve_bits_for_thousands_of_classes():
    centres = hash_centres.hash_centres(3000, 12, seed=0)
    assert len({tuple(row) for row in centres}) == 3000  # Distinct codes.
    with pytest.raises(
        ValueError, match=r"10000 classes cannot have distinct 12-bit codes.*at least 14"
    ):
        hash_centres.hash_centres(10_000, 12)


def test_forced_distance_and_impossible_distance():
    centres = hash_centres.hash_centres(16, 16, min_distance=6, seed=0)
    assert brute_min_distance(centres) >= 6
    with pytest.raises(ValueError, match="Lower the minimum distance"):
        hash_centres.hash_centres(200, 8, min_distance=5)


def test_multi_label_centres_sign_of_sum_with_tie_rule():
    centres = jnp.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1]], jnp.float32)
    labels = jnp.array([[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], jnp.float32)
    expected = np.array(
        [
            [1, 1, 1],  # sums 2, 0, 0: the ties take class 0's bits.
            [1, -1, -1],  # sums 0, 0, -2: the ties take class 1's bits.
            [1, 1, -1],  # sums 1, 1, -1: no tie.
            [-1, 1, -1],  # one class: its centre.
        ]
    )
    np.testing.assert_array_equal(hash_centres.multi_label_centres(centres, labels), expected)
