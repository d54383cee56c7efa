"""Fixed binary class codes for CSQ and OrthoHash: Hadamard rows or random
codes with a guaranteed minimum pairwise Hamming distance.

`hash_centres(C, K)` returns a [C, K] array of -1/+1:
  - K a power of two and C <= 2K: the first C rows of [H; -H], where H is the
    K x K Sylvester Hadamard matrix (CSQ's rule). Any two rows of H differ in
    exactly K/2 bits, and h and -h in K bits, so the minimum distance is K/2.
  - otherwise: random codes drawn so that every pair differs in at least d
    bits. d is the largest distance for which a greedy draw cannot get stuck
    (below), unless `min_distance` asks for a given one.

Why the draw always finishes: a code set with C codes and minimum distance d
covers at most C * V(K, d - 1) codes within distance d - 1 of a member, where
V(K, r) is the number of K-bit codes within Hamming radius r of a code. When
C * V(K, d - 1) <= 2^(K-1), at least half of all codes stay free until the
last centre is drawn, so each random candidate is accepted with probability
at least 1/2 (the Gilbert-Varshamov argument with a factor of two to spare).
The default d is the largest with that property, then raised while a bounded
search still finds a code set (small C often allows much more than the bound).

Multi-label images: `multi_label_centres` takes the sign of the sum of the
centres of an image's positive classes. A bit where the sum is zero (a tie
between an even number of classes) takes the value of the image's positive
class with the lowest index, so every bit stays -1 or +1.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

# Candidates drawn per round of the random search.
_ROUND = 4096
# Rounds in a row without a new code after which a draw gives up.
_PATIENCE = 8


def hadamard(size: int) -> np.ndarray:
    """Return the Sylvester Hadamard matrix of order `size` (a power of two), int8 +-1."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"A Sylvester Hadamard matrix needs a power of two, got {size}.")
    matrix = np.ones((1, 1), np.int8)
    while len(matrix) < size:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def uses_hadamard(num_classes: int, bits: int) -> bool:
    return bits & (bits - 1) == 0 and num_classes <= 2 * bits


def ball_size(bits: int, radius: int) -> int:
    """Number of `bits`-bit codes within Hamming distance `radius` of a code."""
    return sum(math.comb(bits, i) for i in range(radius + 1))


def guaranteed_distance(num_classes: int, bits: int) -> int:
    """Largest d with num_classes * V(bits, d - 1) <= 2^(bits - 1); 0 if none."""
    distance = 0
    while distance < bits and num_classes * ball_size(bits, distance) <= 2 ** (bits - 1):
        distance += 1
    return distance


def _pack(codes: np.ndarray) -> np.ndarray:
    """Pack +-1 codes [N, K] into uint64 words [N, ceil(K / 64)] for XOR-popcount."""
    packed = np.packbits(codes > 0, axis=1)
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances [len(a), len(b)] of packed codes."""
    out = np.zeros((len(a), len(b)), np.uint8 if a.shape[1] < 4 else np.int32)
    for word in range(a.shape[1]):
        out += np.bitwise_count(a[:, word, None] ^ b[None, :, word])
    return out


def min_pairwise_distance(codes: np.ndarray) -> int:
    """Smallest Hamming distance between two rows of +-1 codes [N, K] (K if N < 2)."""
    if len(codes) < 2:
        return codes.shape[1]
    packed = _pack(codes)
    smallest = codes.shape[1]
    for start in range(0, len(packed), 1024):
        block = _distances(packed[start : start + 1024], packed)
        rows = np.arange(start, min(start + 1024, len(packed)))
        block[np.arange(len(rows)), rows] = codes.shape[1] + 1
        smallest = min(smallest, int(block.min()))
    return smallest


def _draw(num_classes: int, bits: int, distance: int, rng, *, max_rounds: int | None = None):
    """Return num_classes random codes with pairwise distance >= distance, or None.

    Each round draws up to _ROUND candidates, keeps those at distance >= `distance`
    from every accepted code and from every earlier kept candidate of the round,
    and accepts them. Gives up after _PATIENCE rounds in a row that add nothing,
    or after `max_rounds` rounds.
    """
    accepted = np.zeros((0, (bits + 63) // 64), np.uint64)
    codes = np.zeros((0, bits), np.int8)
    idle = rounds = 0
    while len(codes) < num_classes:
        rounds += 1
        if max_rounds is not None and rounds > max_rounds:
            return None
        size = min(_ROUND, 4 * (num_classes - len(codes)) + 64)
        candidates = np.where(rng.random((size, bits)) < 0.5, -1, 1).astype(np.int8)
        packed = _pack(candidates)
        keep = np.ones(len(candidates), bool)
        if len(accepted):
            for start in range(0, len(accepted), 4096):
                near = _distances(packed, accepted[start : start + 4096]) < distance
                keep &= ~near.any(axis=1)
        kept = np.flatnonzero(keep)
        inner = _distances(packed[kept], packed[kept]) < distance
        # Candidate i of the round survives if no kept candidate before it is near.
        inner = np.tril(inner, k=-1)
        kept = kept[~inner.any(axis=1)][: num_classes - len(codes)]
        if len(kept) == 0:
            idle += 1
            if idle >= _PATIENCE:
                return None
            continue
        idle = 0
        accepted = np.concatenate([accepted, packed[kept]])
        codes = np.concatenate([codes, candidates[kept]])
    return codes


@functools.lru_cache(maxsize=32)
def _random_centres(num_classes: int, bits: int, min_distance: int | None, seed: int):
    if num_classes > 2**bits:
        raise ValueError(
            f"{num_classes} classes cannot have distinct {bits}-bit codes (there are "
            f"only {2**bits}). Set --config.bits to at least "
            f"{math.ceil(math.log2(num_classes))}."
        )
    rng = np.random.default_rng(seed)
    floor = guaranteed_distance(num_classes, bits)
    if min_distance is not None:
        if min_distance > bits:
            raise ValueError(
                f"A minimum distance of {min_distance} bits is impossible with {bits}-bit codes."
            )
        codes = _draw(num_classes, bits, min_distance, rng)
        if codes is None:
            raise ValueError(
                f"Found no {num_classes} codes of {bits} bits with pairwise distance >= "
                f"{min_distance}; {floor} is guaranteed. Lower the minimum distance or "
                "raise --config.bits."
            )
        return codes
    if floor == 0:
        # More than half of all codes are needed: distinct codes (distance 1).
        values = rng.choice(2**bits, size=num_classes, replace=False)
        bit_values = (values[:, None] >> np.arange(bits)[None, :]) & 1
        return np.where(bit_values == 1, 1, -1).astype(np.int8)
    best = _draw(num_classes, bits, floor, rng)
    if best is None:  # Each candidate is accepted with probability >= 1/2.
        raise RuntimeError(
            f"The draw of {num_classes} codes of {bits} bits at the guaranteed distance "
            f"{floor} failed, which has probability below 2^-{_PATIENCE}. Report it."
        )
    # Raise the distance while a bounded search still succeeds (binary search).
    # Each try gets twice the rounds that a draw at acceptance 1/2 needs.
    max_rounds = 2 * math.ceil(4 * num_classes / _ROUND) + _PATIENCE
    low, high = floor, bits // 2 + 1
    while high - low > 1:
        middle = (low + high) // 2
        codes = _draw(num_classes, bits, middle, rng, max_rounds=max_rounds)
        if codes is None:
            high = middle
        else:
            low, best = middle, codes
    return best


def hash_centres(
    num_classes: int, bits: int, *, seed: int = 0, min_distance: int | None = None
) -> np.ndarray:
    """Return [num_classes, bits] int8 centres of -1/+1 (see the module docstring).

    `min_distance` forces the random draw (not Hadamard rows) at that distance.
    """
    if num_classes < 1 or bits < 1:
        raise ValueError(f"Need at least one class and one bit, got {num_classes} and {bits}.")
    if min_distance is None and uses_hadamard(num_classes, bits):
        matrix = hadamard(bits)
        return np.concatenate([matrix, -matrix])[:num_classes]
    return _random_centres(num_classes, bits, min_distance, seed).copy()


def multi_label_centres(centres, labels):
    """Return the target code [B, K] of each image from its multi-hot labels [B, C].

    The sign of the sum of its positive classes' centres; a zero sum takes the bit
    of the positive class with the lowest index. Rows without a positive class get
    the first class's centre (such rows carry no loss weight in `losses`).
    """
    positive = labels > 0
    total = positive.astype(centres.dtype) @ centres
    first = jnp.argmax(positive, axis=-1)
    return jnp.where(total == 0, centres[first], jnp.sign(total))
