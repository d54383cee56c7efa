"""Hamming distances between packed codes, and exact counting over a database on device.

Distances are XOR plus population count on uint32 words. Counting never stores a
query x database distance matrix: one jitted reduction computes the distances of a
block of queries to the whole database, tests each distance against a few conditions
("fields"), and sums the results in place. The fields share one uint32 word per pair,
each in FIELD_BITS bits (SIMD within a register). Summing CHUNK pairs at a time
cannot carry from one field into the next, because a field counts at most CHUNK.

Measured on a 2-core x86-64 CPU (AVX-512, jax 0.10.2): one reduction of this kind over
64 queries x 1M database items takes about 0.2 ns per pair for up to five fields. A
second reduction in the same jitted call, or a row length of 64 or more, made XLA fall
back to code several times slower, so every counting pass is one reduction.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from semhash_jax.retrieval import scans
from semhash_jax.retrieval.codes import check_packed_pair

FIELD_BITS = 6
FIELDS_PER_WORD = 32 // FIELD_BITS
# A chunk of 2**FIELD_BITS - 1 pairs would fit too. A power of two keeps XLA's
# reduction fast (see the module docstring).
CHUNK = 2 ** (FIELD_BITS - 1)
# The database is padded to a multiple of this many items per device, so that per-chunk
# counts split into whole blocks of scans.BLOCK without padding.
ITEM_ALIGNMENT = CHUNK * scans.BLOCK


@jax.jit
def hamming_distances(query_packed: jax.Array, database_packed: jax.Array) -> jax.Array:
    """Compute the int32 Hamming distance matrix [Q, N] between packed codes.

    Both inputs are uint32 arrays from `pack_codes` or `pack_codes_jax` with the same
    number of words. The distance is the popcount of the XOR, summed over words. The
    result has Q x N entries, so call this on small sets only; `count_fields` and the
    ranking functions never build this matrix.
    Raises ValueError, when jit traces, for wrong ranks, dtypes or word counts.
    """
    check_packed_pair(query_packed, database_packed)

    differing_bits = jnp.bitwise_xor(query_packed[:, None, :], database_packed[None, :, :])
    return jnp.sum(jax.lax.population_count(differing_bits), axis=-1, dtype=jnp.int32)


class Field(NamedTuple):
    """One counted condition on the distance d of a pair, relative to a per-query base.

    op "le" counts pairs with d <= base + offset, op "eq" pairs with d == base + offset.
    With `relevant` set, only pairs whose database item is relevant to the query count.
    """

    op: str
    offset: int
    relevant: bool = False


@dataclasses.dataclass(frozen=True)
class DeviceDatabase:
    """Packed database codes and labels on device, padded to a multiple of ITEM_ALIGNMENT.

    words: uint32 [W, P], code word w of item i at [w, i] (transposed, so that each
      word of all items is contiguous).
    chunks: the same words as uint32 [P / CHUNK, W, CHUNK], so that reading all words
      of one chunk reads one contiguous row.
    labels: int32 [P] class indices, or uint32 [L, P] multi-hot label bits.
    num_items: N, the number of real items. Items N..P-1 are padding and never count.
    """

    words: jax.Array
    chunks: jax.Array | None
    labels: jax.Array
    num_items: int
    bits: int

    @property
    def padded_size(self) -> int:
        return self.words.shape[1]


def put_database(packed: np.ndarray, labels: np.ndarray, bits: int, mesh=None) -> DeviceDatabase:
    """Copy packed codes [N, W] and prepared labels to device, padded with unused items.

    `labels` are int32 class indices [N] or uint32 multi-hot label bits [N, L] (see
    `labels.prepare_labels`). With a `mesh` that has an axis "data", the database is
    split along N across that axis. Results are identical to one device, because every
    count is an integer.
    """
    num_items = packed.shape[0]
    num_devices = 1 if mesh is None else mesh.shape["data"]
    block = ITEM_ALIGNMENT * num_devices
    padded_size = -(-num_items // block) * block
    missing = padded_size - num_items

    words = np.pad(packed, ((0, missing), (0, 0))).T.copy()
    if labels.ndim == 1 and labels.size and labels.max() < 2**8:
        # Narrow class indices cut the memory read by every counting pass.
        labels = labels.astype(np.uint8)
    elif labels.ndim == 1 and labels.size and labels.max() < 2**16:
        labels = labels.astype(np.uint16)
    chunks = words.reshape(words.shape[0], -1, CHUNK).transpose(1, 0, 2).copy()
    if labels.ndim == 1:
        labels = np.pad(labels, (0, missing))
    else:
        labels = np.pad(labels, ((0, missing), (0, 0))).T.copy()

    if mesh is None:
        words, chunks, labels = jnp.asarray(words), jnp.asarray(chunks), jnp.asarray(labels)
    else:
        along_items = NamedSharding(mesh, PartitionSpec(*([None] * (labels.ndim - 1)), "data"))
        words = jax.device_put(words, NamedSharding(mesh, PartitionSpec(None, "data")))
        chunks = jax.device_put(chunks, NamedSharding(mesh, PartitionSpec("data")))
        labels = jax.device_put(labels, along_items)
    return DeviceDatabase(words=words, chunks=chunks, labels=labels, num_items=num_items, bits=bits)


def distances(query_words: jax.Array, database_words: jax.Array) -> jax.Array:
    """Return int32 distances [Q, *S] between query words [Q, W] and database words [W, *S]."""
    expand = (slice(None),) + (None,) * (database_words.ndim - 1)
    total = jax.lax.population_count(query_words[:, 0][expand] ^ database_words[0][None])
    for word in range(1, query_words.shape[1]):
        total = total + jax.lax.population_count(
            query_words[:, word][expand] ^ database_words[word][None]
        )
    return total.astype(jnp.int32)


def distances_to_chunks(query_words: jax.Array, chunks: jax.Array, chunk_ids: jax.Array):
    """Return int32 [Q, T, CHUNK]: distances from each query to the items of its chunks.

    chunks: uint32 [P / CHUNK, W, CHUNK] (`DeviceDatabase.chunks`); chunk_ids: int32
    [Q, T]. Each chunk is read as one contiguous row.
    """
    num_words = chunks.shape[1]
    rows = chunks.reshape(chunks.shape[0], num_words * CHUNK)
    gathered = rows[chunk_ids].reshape(chunk_ids.shape + (num_words, CHUNK))
    total = jax.lax.population_count(query_words[:, None, 0, None] ^ gathered[:, :, 0])
    for word in range(1, num_words):
        total = total + jax.lax.population_count(
            query_words[:, None, word, None] ^ gathered[:, :, word]
        )
    return total.astype(jnp.int32)


def relevance(query_labels: jax.Array, database_labels: jax.Array) -> jax.Array:
    """Return bool [Q, *S]: whether each database item is relevant to each query.

    Class indices: query [Q] and database [*S], relevant when equal. Label bits: query
    [Q, L] and database [L, *S], relevant when at least one bit is shared.
    """
    if query_labels.ndim == 1:
        # Class indices of the query in the database's dtype, which may be narrower;
        # a query index that does not fit matches no item.
        fits = query_labels <= jnp.iinfo(database_labels.dtype).max
        narrow = query_labels.astype(database_labels.dtype)
        shape = (-1,) + (1,) * database_labels.ndim
        return (fits.reshape(shape)) & (narrow.reshape(shape) == database_labels[None])

    expand = (slice(None),) + (None,) * (database_labels.ndim - 1)
    shared = query_labels[:, 0][expand] & database_labels[0][None]
    for word in range(1, query_labels.shape[1]):
        shared = shared | (query_labels[:, word][expand] & database_labels[word][None])
    return shared != 0


@functools.partial(jax.jit, static_argnames=("fields", "num_items", "per_chunk"))
def count_fields(
    query_words: jax.Array,
    query_labels: jax.Array,
    database_words: jax.Array,
    database_labels: jax.Array,
    base: jax.Array,
    *,
    fields: tuple[Field, ...],
    num_items: int,
    per_chunk: bool,
) -> jax.Array:
    """Count, for each query, the database items that meet each field.

    Args:
      query_words: uint32 [Q, W]; query_labels: as for `relevance`.
      database_words: uint32 [W, P], P a multiple of CHUNK; database_labels: as
        for `relevance`. Items at index num_items or later are never counted.
      base: int32 [Q], the distance that field offsets are relative to.
      fields: at most FIELDS_PER_WORD fields.
      per_chunk: return the packed counts of each chunk of CHUNK consecutive items
        instead of totals. `unpack_fields` turns them into counts.

    Returns:
      uint32 [Q, P / CHUNK] packed counts when per_chunk, else int32 totals [Q, F].
    """
    if not 1 <= len(fields) <= FIELDS_PER_WORD:
        raise ValueError(f"count_fields takes 1 to {FIELDS_PER_WORD} fields, got {len(fields)}")
    num_queries = query_words.shape[0]
    padded_size = database_words.shape[1]

    distance = distances(query_words, database_words)
    valid = jax.lax.broadcasted_iota(jnp.int32, (1, padded_size), 1) < num_items
    relevant = None
    if any(field.relevant for field in fields):
        relevant = relevance(query_labels, database_labels)

    packed = jnp.zeros(distance.shape, jnp.uint32)
    for position, field in enumerate(fields):
        threshold = base[:, None] + field.offset
        hit = distance <= threshold if field.op == "le" else distance == threshold
        hit = hit & valid
        if field.relevant:
            hit = hit & relevant
        packed = packed | jnp.where(hit, jnp.uint32(1 << (FIELD_BITS * position)), jnp.uint32(0))

    chunk_words = jnp.sum(packed.reshape(num_queries, -1, CHUNK), axis=2, dtype=jnp.uint32)
    # Keep XLA from fusing later reductions into this one (see the module docstring).
    chunk_words = jax.lax.optimization_barrier(chunk_words)
    if per_chunk:
        return chunk_words
    counts = unpack_fields(chunk_words, len(fields))
    return jnp.stack([scans.sum_last_axis(count) for count in counts], axis=1)


def unpack_fields(chunk_words: jax.Array, num_fields: int) -> list[jax.Array]:
    """Return one int32 array of counts per field, each shaped like `chunk_words`."""
    mask = jnp.uint32((1 << FIELD_BITS) - 1)
    return [
        ((chunk_words >> (FIELD_BITS * position)) & mask).astype(jnp.int32)
        for position in range(num_fields)
    ]


def count_many_fields(
    query_words, query_labels, database: DeviceDatabase, base, fields: tuple[Field, ...]
) -> jax.Array:
    """Return int32 [Q, len(fields)] totals for any number of fields, one pass per word of fields."""
    totals = []
    for start in range(0, len(fields), FIELDS_PER_WORD):
        totals.append(
            count_fields(
                query_words,
                query_labels,
                database.words,
                database.labels,
                base,
                fields=tuple(fields[start : start + FIELDS_PER_WORD]),
                num_items=database.num_items,
                per_chunk=False,
            )
        )
    return jnp.concatenate(totals, axis=1)
