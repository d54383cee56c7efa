"""Hamming distances between packed binary codes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from semhash_jax.retrieval.codes import check_packed_pair


@jax.jit
def hamming_distances(query_packed: jax.Array, database_packed: jax.Array) -> jax.Array:
    """Compute the int32 Hamming distance matrix [Q, N] between packed codes.

    Both inputs are uint32 arrays from `pack_codes` or `pack_codes_jax` with the same
    number of words. The distance is the popcount of the XOR, summed over words. The
    result has Q x N entries, so call this on query chunks, not on a whole large set.
    Raises ValueError, when jit traces, for wrong ranks, dtypes or word counts.
    """
    check_packed_pair(query_packed, database_packed)

    differing_bits = jnp.bitwise_xor(query_packed[:, None, :], database_packed[None, :, :])
    return jnp.sum(jax.lax.population_count(differing_bits), axis=-1, dtype=jnp.int32)
