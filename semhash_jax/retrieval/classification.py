"""Classification by the nearest class prototype in Hamming distance.

An image is assigned the class whose binary prototype is nearest to its binary
code. With K bits several prototypes can be equally near, so the accuracy is the
expected one under a uniformly random choice among the nearest prototypes: a
query scores |nearest and correct| / |nearest|. A query is correct for a class
among its labels (any positive label of a multi-hot row).
"""

from __future__ import annotations

import numpy as np

TIE_RULE = (
    "nearest prototype by Hamming distance; a query scores |nearest and correct| / |nearest| "
    "when several prototypes are equally near"
)

# Queries per block of the [queries, classes, words] XOR.
_BLOCK = 1024


def _as_words(bits: np.ndarray) -> np.ndarray:
    """Pack bool [N, K] into uint8 [N, ceil(K / 8)]."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def hamming_to_prototypes(query_bits: np.ndarray, prototype_bits: np.ndarray) -> np.ndarray:
    """Return int [Q, C] Hamming distances between bool codes [Q, K] and prototypes [C, K]."""
    if query_bits.shape[1] != prototype_bits.shape[1]:
        raise ValueError(
            f"Query codes have {query_bits.shape[1]} bits but prototypes have "
            f"{prototype_bits.shape[1]}."
        )
    queries = _as_words(query_bits)
    prototypes = _as_words(prototype_bits)
    distances = np.empty((len(queries), len(prototypes)), np.int32)
    for start in range(0, len(queries), _BLOCK):
        block = queries[start : start + _BLOCK, None, :] ^ prototypes[None, :, :]
        distances[start : start + _BLOCK] = np.bitwise_count(block).sum(axis=2)
    return distances


def _positive_matrix(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels[:, None] == np.arange(num_classes)[None, :]
    return labels.astype(bool)


def nearest_prototype_accuracy(
    query_bits: np.ndarray,
    query_labels: np.ndarray,
    prototype_bits: np.ndarray,
    candidates: np.ndarray | None = None,
) -> float:
    """Return the tie-aware accuracy of nearest-prototype classification.

    Args:
      query_bits: bool [Q, K] codes (True for +1).
      query_labels: class ids [Q] or multi-hot rows [Q, C].
      prototype_bits: bool [C, K] class prototypes.
      candidates: ids of the classes to choose among (e.g. only the unseen classes
        in conventional zero-shot classification); None for every class.

    Returns:
      The mean over queries of |nearest and correct| / |nearest|, or NaN for no queries.
    """
    num_classes = prototype_bits.shape[0]
    if candidates is None:
        candidates = np.arange(num_classes)
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(query_bits) == 0:
        return float("nan")
    distances = hamming_to_prototypes(query_bits, prototype_bits[candidates])
    nearest = distances == distances.min(axis=1, keepdims=True)
    correct = _positive_matrix(query_labels, num_classes)[:, candidates]
    scores = (nearest & correct).sum(axis=1) / nearest.sum(axis=1)
    return float(scores.mean())
