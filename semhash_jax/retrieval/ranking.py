"""Exact top-K Hamming ranking by counting, with ties broken by database index.

Hamming distances are integers 0..bits, so the top K of a query needs no comparison
sort of the database. For each block of queries, on device:
1. A sample of the database gives each query an estimate of its cutoff distance c,
   the distance of its K-th nearest item.
2. One counting pass (`hamming.count_fields`) counts, per chunk of CHUNK items, the
   items at distance <= a, a + 1, a + 2 and the relevant items at a + 1 and a + 2,
   for a bracket a chosen so that c is a + 1 or a + 2. A query whose c falls outside
   moves its bracket and the pass runs again. The final counts give c exactly, the
   number L of items closer than c and the size G of the tie group at c.
3. The top K is every item closer than c plus the K - L items at distance c with the
   lowest indices. Prefix sums over blocks of chunks locate the last of those ties.
   Per-block bit masks then list the chunks that contain a top-K item (at most K),
   and only those chunks are read again to find the items.
4. The K items are sorted by (distance, index).
Peak memory per block is O(block x (K x CHUNK + N / CHUNK)), never O(block x N).

When K x CHUNK is larger than twice the database, reading the chunks again would cost
more than sorting, so the block's distances are sorted instead (`_rank_block_sorting`).
Both paths give identical results.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from semhash_jax.retrieval import hamming, scans
from semhash_jax.retrieval.hamming import CHUNK, DeviceDatabase, Field

# The sample used to estimate cutoffs: at most this many chunks, evenly spaced.
SAMPLE_CHUNKS = 128
FINE_SAMPLE_FACTOR = 8
# Element budget of the largest per-block temporaries ([block, K, CHUNK] or [block, N]).
BLOCK_ELEMENTS = 1 << 22
MAX_BLOCK = 64

_BRACKET_FIELDS = (
    Field("le", 0),
    Field("le", 1),
    Field("le", 2),
    Field("eq", 1, relevant=True),
    Field("eq", 2, relevant=True),
)


@dataclasses.dataclass
class Ranking:
    """The top K of each query, ordered by (distance, database index), and its tie group.

    ids: int32 [Q, K] database indices. distances: int32 [Q, K]. relevant: bool [Q, K].
    cutoff: int32 [Q], c = the distance of the K-th item.
    closer: int64 [Q], L = the database items at distance < c (all of them are in the top K).
    tie_size: int64 [Q], G = the database items at distance c.
    tie_relevant: int64 [Q], the relevant database items at distance c.
    total_relevant: int64 [Q], the relevant items in the whole database.
    """

    ids: np.ndarray
    distances: np.ndarray
    relevant: np.ndarray
    cutoff: np.ndarray
    closer: np.ndarray
    tie_size: np.ndarray
    tie_relevant: np.ndarray
    total_relevant: np.ndarray


def rank_top_k(
    query_words: np.ndarray,
    query_labels: np.ndarray,
    database: DeviceDatabase,
    top_k: int,
    total_relevant: np.ndarray | None = None,
    method: str | None = None,
) -> Ranking:
    """Rank the database for every query and keep the top `top_k` (1 <= top_k <= N).

    query_words: uint32 [Q, W]; query_labels: prepared labels of the same kind as the
    database's. `total_relevant` [Q] is counted on device when None. `method` is
    "counting", "sorting" or None to choose by cost; both give identical results.
    """
    num_queries = query_words.shape[0]
    if not 1 <= top_k <= database.num_items:
        raise ValueError(f"top_k must be in [1, {database.num_items}], got {top_k}")
    if method not in (None, "counting", "sorting"):
        raise ValueError(f"method must be 'counting', 'sorting' or None, got {method!r}")

    if method is None:
        use_counting = top_k * CHUNK <= 2 * database.padded_size
    else:
        use_counting = method == "counting"
    per_query_elements = top_k * CHUNK if use_counting else database.padded_size
    block = int(np.clip(BLOCK_ELEMENTS // per_query_elements, 1, MAX_BLOCK))
    block = min(block, num_queries)

    kwargs = {"top_k": top_k, "num_items": database.num_items, "bits": database.bits}
    if use_counting:
        rank_block = functools.partial(_rank_block_counting, **kwargs)
    else:
        rank_block = functools.partial(_rank_block_sorting, **kwargs)

    merged = None
    for start in range(0, num_queries, block):
        stop = min(start + block, num_queries)
        block_words = pad_rows(query_words[start:stop], block)
        block_labels = pad_rows(query_labels[start:stop], block)
        result = rank_block(
            block_words, block_labels, database.words, database.chunks, database.labels
        )
        if merged is None:
            merged = {
                name: np.empty((num_queries,) + value.shape[1:], value.dtype)
                for name, value in result.items()
            }
        for name, value in result.items():
            merged[name][start:stop] = np.asarray(value)[: stop - start]

    if total_relevant is None:
        everything = Field("le", database.bits, relevant=True)
        total_relevant = count_per_query(query_words, query_labels, database, (everything,))[:, 0]
    return Ranking(
        ids=merged["ids"],
        distances=merged["distances"],
        relevant=merged["relevant"],
        cutoff=merged["cutoff"],
        closer=merged["closer"].astype(np.int64),
        tie_size=merged["tie_size"].astype(np.int64),
        tie_relevant=merged["tie_relevant"].astype(np.int64),
        total_relevant=np.asarray(total_relevant, dtype=np.int64),
    )


def count_per_query(query_words, query_labels, database: DeviceDatabase, fields) -> np.ndarray:
    """Return int64 [Q, len(fields)]: the database items that meet each field, per query.

    Field offsets are relative to distance 0.
    """
    totals = []
    block = 256
    for start in range(0, query_words.shape[0], block):
        stop = min(start + block, query_words.shape[0])
        counts = hamming.count_many_fields(
            jnp.asarray(pad_rows(query_words[start:stop], block)),
            jnp.asarray(pad_rows(query_labels[start:stop], block)),
            database,
            jnp.zeros(block, jnp.int32),
            tuple(fields),
        )
        totals.append(np.asarray(counts)[: stop - start])
    return np.concatenate(totals).astype(np.int64)


def _rank_block_counting(
    query_words, query_labels, words, chunks, labels, *, top_k, num_items, bits
):
    # Separate jitted stages: in one jitted function, XLA's CPU backend compiled the
    # counting pass several times slower.
    bracket = _estimate_bracket(
        query_words, query_labels, words, labels, top_k=top_k, num_items=num_items, bits=bits
    )
    chunk_words = _count_bracket(
        query_words, query_labels, words, labels, bracket, num_items=num_items
    )
    # The boundary stage also checks the bracket, which saves a stage in the usual case
    # where every estimate was right.
    boundary, fits, moved = _locate_boundary(
        query_words, chunks, bracket, chunk_words, top_k=top_k, num_items=num_items
    )
    if not bool(jnp.all(fits)):
        bracket, chunk_words = _resolve_bracket(
            query_words,
            query_labels,
            words,
            labels,
            moved,
            fits,
            chunk_words,
            top_k=top_k,
            num_items=num_items,
            bits=bits,
        )
        boundary, _, _ = _locate_boundary(
            query_words, chunks, bracket, chunk_words, top_k=top_k, num_items=num_items
        )
    return _select_top_k(
        query_words,
        query_labels,
        chunks,
        labels,
        boundary,
        top_k=top_k,
        num_items=num_items,
        bits=bits,
    )


def _cutoff_counts(bracket, chunk_words, top_k):
    """Return (cutoff [Q], items closer than it, items at it, relevant items at it) per chunk."""
    counts = hamming.unpack_fields(chunk_words, len(_BRACKET_FIELDS))
    upper = scans.sum_last_axis(counts[1]) < top_k
    cutoff = jnp.where(upper, bracket + 2, bracket + 1)
    closer = jnp.where(upper[:, None], counts[1], counts[0])
    ties = jnp.where(upper[:, None], counts[2], counts[1]) - closer
    relevant_ties = jnp.where(upper[:, None], counts[4], counts[3])
    return cutoff, closer, ties, relevant_ties


@functools.partial(jax.jit, static_argnames=("top_k", "num_items"))
def _locate_boundary(query_words, chunks, bracket, chunk_words, *, top_k, num_items):
    """Find the cutoff, the tie counts and the index of the last tie item in the top K.

    The top K contains every item closer than the cutoff and the first K - L items at
    the cutoff, where L is the number of closer items. The last of those ties is found
    by narrowing from blocks of scans.BLOCK chunks to one chunk, then to one item.
    Returns (boundary, fits, moved): the boundary is valid where `fits`, the queries
    whose cutoff is bracket + 1 or + 2; `moved` are the brackets for another round.
    """
    moved, fits = _check_bracket(bracket, chunk_words, top_k=top_k)
    cutoff, closer, ties, relevant_ties = _cutoff_counts(bracket, chunk_words, top_k)
    num_queries, num_chunks = ties.shape
    closer_total = scans.sum_last_axis(closer)
    ties_in_top_k = top_k - closer_total

    # The block, then the chunk, that contains the ties_in_top_k-th tie.
    block_ties = jnp.sum(ties.reshape(num_queries, -1, scans.BLOCK), axis=2)
    block_ties_incl = scans.prefix_sum_last_axis(block_ties, scans.BLOCK * CHUNK)
    block = jnp.sum(block_ties_incl < ties_in_top_k[:, None], axis=1, dtype=jnp.int32)
    ties_before_block = _exclusive_at(block_ties_incl, block[:, None])[:, 0]
    chunk_in_block = block[:, None] * scans.BLOCK + jnp.arange(scans.BLOCK, dtype=jnp.int32)
    within_incl = jnp.cumsum(jnp.take_along_axis(ties, chunk_in_block, axis=1), axis=1)
    offset = jnp.sum(ties_before_block[:, None] + within_incl < ties_in_top_k[:, None], axis=1)
    chunk = block * scans.BLOCK + offset.astype(jnp.int32)
    ties_before_chunk = ties_before_block + _exclusive_at(within_incl, offset[:, None])[:, 0]

    # The item: the (ties_in_top_k - ties_before_chunk)-th tie of that chunk.
    distance = hamming.distances_to_chunks(query_words, chunks, chunk[:, None])[:, 0]
    item = chunk[:, None] * CHUNK + jnp.arange(CHUNK, dtype=jnp.int32)
    tie_bits = _or_bits((distance == cutoff[:, None]) & (item < num_items))
    last_tie = chunk * CHUNK + _select_bit(tie_bits, ties_in_top_k - ties_before_chunk - 1)

    # Bit masks, one word per block, of the chunks that contain a top-K item.
    chunk_index = jnp.arange(num_chunks, dtype=jnp.int32)[None, :]
    has_selected = (closer > 0) | ((ties > 0) & (chunk_index <= (last_tie // CHUNK)[:, None]))
    boundary = {
        "cutoff": cutoff,
        "closer": closer_total,
        "tie_size": scans.sum_last_axis(ties),
        "tie_relevant": scans.sum_last_axis(relevant_ties),
        "last_tie": last_tie,
        "block_masks": _or_bits(has_selected.reshape(num_queries, -1, scans.BLOCK)),
    }
    return boundary, fits, moved


@functools.partial(jax.jit, static_argnames=("top_k", "num_items", "bits"))
def _select_top_k(
    query_words,
    query_labels,
    chunks,
    labels,
    boundary,
    *,
    top_k,
    num_items,
    bits,
):
    """Collect the top K items: closer than the cutoff, or at it with index <= last_tie.

    Per-block bit masks list the chunks that contain a selected item, in index order,
    and there are at most K of them. Their items are read again, and per-chunk bit
    masks enumerate the selected ones.
    """
    cutoff = boundary["cutoff"]
    last_tie = boundary["last_tie"]
    block_masks = boundary["block_masks"]
    num_chunks = block_masks.shape[1] * scans.BLOCK

    # List the chunks that contain a selected item: the set bits of the block masks.
    block_counts = jax.lax.population_count(block_masks).astype(jnp.int32)
    block_incl = scans.prefix_sum_last_axis(block_counts, scans.BLOCK)
    listed = jnp.arange(top_k, dtype=jnp.int32)
    listed_block = _search(block_incl, top_k)
    rank_in_block = listed[None, :] - _exclusive_at(block_incl, listed_block)
    listed_mask = jnp.take_along_axis(block_masks, listed_block, axis=1)
    listed_chunk = listed_block * scans.BLOCK + _select_bit(listed_mask, rank_in_block)
    listed_valid = listed[None, :] < block_incl[:, -1:]
    listed_chunk = jnp.where(listed_valid, listed_chunk, 0)

    # Selected items of each listed chunk, as bit masks.
    distance = hamming.distances_to_chunks(query_words, chunks, listed_chunk)
    item = listed_chunk[..., None] * CHUNK + jnp.arange(CHUNK, dtype=jnp.int32)
    selected = (distance < cutoff[:, None, None]) | (
        (distance == cutoff[:, None, None]) & (item <= last_tie[:, None, None])
    )
    selected = selected & (item < num_items) & listed_valid[..., None]
    selected_bits = _or_bits(selected)
    selected_incl = scans.prefix_sum_last_axis(
        jax.lax.population_count(selected_bits).astype(jnp.int32), CHUNK
    )

    # Output slot s: the listed chunk whose inclusive count first exceeds s.
    slots = jnp.arange(top_k, dtype=jnp.int32)
    slot_listed = _search(selected_incl, top_k)
    rank_in_chunk = slots[None, :] - _exclusive_at(selected_incl, slot_listed)
    slot_bits = jnp.take_along_axis(selected_bits, slot_listed, axis=1)
    position = _select_bit(slot_bits, rank_in_chunk)
    ids = jnp.take_along_axis(listed_chunk, slot_listed, axis=1) * CHUNK + position
    # Distances of the K items from their words: reusing `distance` would make XLA keep
    # all the gathered chunks in memory instead of fusing the gather into one pass.
    top_distances = _distances_to_items(query_words, chunks, ids)

    ids, top_distances = _sort_by_distance_then_id(ids, top_distances, num_chunks * CHUNK, bits)
    return {
        "ids": ids,
        "distances": top_distances,
        "relevant": _relevant_items(query_labels, labels, ids),
        "cutoff": cutoff,
        "closer": boundary["closer"],
        "tie_size": boundary["tie_size"],
        "tie_relevant": boundary["tie_relevant"],
    }


@functools.partial(jax.jit, static_argnames=("top_k", "num_items", "bits"))
def _estimate_bracket(query_words, query_labels, words, labels, *, top_k, num_items, bits):
    """Return int32 [Q], a bracket a such that the cutoff is likely a + 1 or a + 2.

    A small sample counts the thresholds 0..bits: every one for codes of up to 64 bits,
    evenly spaced ones beyond. A sample FINE_SAMPLE_FACTOR times larger then counts only
    the five thresholds around the first estimate.
    """
    num_queries = query_words.shape[0]
    small, small_items = _sample(words, num_items, SAMPLE_CHUNKS)
    # For long codes, a stride keeps the scan at 65 thresholds. The estimate at t is
    # then the count at the next scanned threshold, and the rounds of _resolve_bracket
    # make up for the coarser guess.
    stride = -(-(bits + 1) // 65)
    scanned = list(range(0, bits + 1, stride))
    if scanned[-1] != bits:
        scanned.append(bits)
    small_database = DeviceDatabase(small, None, labels, small_items, bits)
    zero = jnp.zeros(num_queries, jnp.int32)
    counts = hamming.count_many_fields(
        query_words, query_labels, small_database, zero, tuple(Field("le", t) for t in scanned)
    ).astype(jnp.float32) * (num_items / small_items)
    next_scanned = np.searchsorted(np.asarray(scanned), np.arange(bits + 1))
    estimate = counts[:, next_scanned]
    first_guess = jnp.argmax(estimate >= top_k, axis=1).astype(jnp.int32)

    large, large_items = _sample(words, num_items, SAMPLE_CHUNKS * FINE_SAMPLE_FACTOR)
    window_start = first_guess - 2
    window = hamming.count_fields(
        query_words,
        query_labels,
        large,
        labels,
        window_start,
        fields=tuple(Field("le", offset) for offset in range(5)),
        num_items=large_items,
        per_chunk=False,
    ).astype(jnp.float32) * (num_items / large_items)
    offset = jnp.arange(bits + 1, dtype=jnp.int32)[None, :] - window_start[:, None]
    in_window = (offset >= 0) & (offset < 5)
    from_window = jnp.take_along_axis(window, jnp.clip(offset, 0, 4), axis=1)
    estimate = jnp.where(in_window, from_window, estimate)

    # The estimate at t = bits counts every item, so argmax always finds a threshold.
    cutoff = jnp.argmax(estimate >= top_k, axis=1).astype(jnp.int32)
    above = jnp.take_along_axis(estimate, cutoff[:, None], axis=1)[:, 0]
    below = jnp.take_along_axis(estimate, jnp.maximum(cutoff - 1, 0)[:, None], axis=1)[:, 0]
    below = jnp.where(cutoff > 0, below, 0.0)
    # If the estimate just clears K at the cutoff, the true cutoff may be one higher.
    margin_above = above / top_k
    margin_below = top_k / jnp.maximum(below, 0.5)
    return jnp.where(margin_above < margin_below, cutoff - 1, cutoff - 2)


def _sample(words, num_items: int, max_chunks: int):
    """Return (words [W, S], S): at most max_chunks evenly spaced chunks of real items."""
    num_full_chunks = num_items // CHUNK
    stride = max(1, num_full_chunks // max_chunks)
    if stride == 1:
        return words, num_items
    num_words = words.shape[0]
    chunks = words.reshape(num_words, -1, CHUNK)[:, :num_full_chunks:stride]
    sample = chunks.reshape(num_words, -1)
    return sample, sample.shape[1]


def _resolve_bracket(
    query_words,
    query_labels,
    words,
    labels,
    bracket,
    resolved,
    chunk_words,
    *,
    top_k,
    num_items,
    bits,
):
    """Move the brackets of unresolved queries until every cutoff is a + 1 or a + 2.

    `bracket` holds the moved brackets of the unresolved queries and the final ones of
    the others, whose counts are in `chunk_words`. Returns the brackets and their counts.
    The rounds loop on the host: inside a lax.while_loop, XLA's CPU backend compiled the
    counting pass about ten times slower.
    """
    # Each round moves a bracket by 2 toward a bound that always resolves (nothing is
    # at distance < 0, everything is at distance <= bits), so bits // 2 + 2 rounds suffice.
    for _ in range(bits // 2 + 2):
        bracket, resolved, chunk_words = _bracket_round(
            query_words,
            query_labels,
            words,
            labels,
            bracket,
            resolved,
            chunk_words,
            top_k=top_k,
            num_items=num_items,
        )
        if bool(jnp.all(resolved)):
            return bracket, chunk_words
    raise AssertionError("the cutoff search did not converge; this is a bug")


@functools.partial(jax.jit, static_argnames=("num_items",))
def _count_bracket(query_words, query_labels, words, labels, bracket, *, num_items):
    return hamming.count_fields(
        query_words,
        query_labels,
        words,
        labels,
        bracket,
        fields=_BRACKET_FIELDS,
        num_items=num_items,
        per_chunk=True,
    )


def _check_bracket(bracket, chunk_words, *, top_k):
    """Return the next brackets and whether each query's cutoff is a + 1 or a + 2."""
    counts = hamming.unpack_fields(chunk_words, 3)
    too_high = scans.sum_last_axis(counts[0]) >= top_k
    fits = jnp.logical_not(too_high) & (scans.sum_last_axis(counts[2]) >= top_k)
    return jnp.where(fits, bracket, bracket + jnp.where(too_high, -2, 2)), fits


@functools.partial(jax.jit, static_argnames=("top_k", "num_items"))
def _bracket_round(
    query_words, query_labels, words, labels, bracket, resolved, kept_words, *, top_k, num_items
):
    """Run one more counting pass for the queries whose cutoff is outside their bracket."""
    chunk_words = _count_bracket.__wrapped__(
        query_words, query_labels, words, labels, bracket, num_items=num_items
    )
    moved, fits = _check_bracket(bracket, chunk_words, top_k=top_k)
    newly = fits & jnp.logical_not(resolved)
    kept_words = jnp.where(newly[:, None], chunk_words, kept_words)
    bracket = jnp.where(resolved, bracket, moved)
    return bracket, resolved | fits, kept_words


@functools.partial(jax.jit, static_argnames=("top_k", "num_items", "bits"))
def _rank_block_sorting(
    query_words, query_labels, words, chunks, labels, *, top_k, num_items, bits
):
    padded_size = words.shape[1]
    distance = hamming.distances(query_words, words)
    valid = jax.lax.broadcasted_iota(jnp.int32, (1, padded_size), 1) < num_items
    distance = jnp.where(valid, distance, bits + 1)
    ids = jnp.broadcast_to(jnp.arange(padded_size, dtype=jnp.int32), distance.shape)
    ids, sorted_distances = _sort_by_distance_then_id(ids, distance, padded_size, bits + 1)
    ids, top_distances = ids[:, :top_k], sorted_distances[:, :top_k]

    cutoff = top_distances[:, -1]
    at_cutoff = distance == cutoff[:, None]
    relevant = hamming.relevance(query_labels, labels)
    return {
        "ids": ids,
        "distances": top_distances,
        "relevant": _relevant_items(query_labels, labels, ids),
        "cutoff": cutoff,
        "closer": jnp.sum(distance < cutoff[:, None], axis=1),
        "tie_size": jnp.sum(at_cutoff, axis=1),
        "tie_relevant": jnp.sum(at_cutoff & relevant, axis=1),
    }


def _sort_by_distance_then_id(ids, distances, padded_size: int, max_distance: int):
    """Sort each row by (distance, id); return (ids, distances)."""
    if (max_distance + 1) * padded_size < 2**31:
        keys = jax.lax.sort(distances * padded_size + ids, dimension=1)
        return keys % padded_size, keys // padded_size
    sorted_distances, sorted_ids = jax.lax.sort((distances, ids), dimension=1, num_keys=2)
    return sorted_ids, sorted_distances


def _distances_to_items(query_words, chunks, ids):
    """Return int32 [Q, T]: distances from each query to database items ids [Q, T]."""
    num_words = chunks.shape[1]
    flat = chunks.reshape(-1)
    first = (ids // CHUNK) * (num_words * CHUNK) + ids % CHUNK
    total = jnp.zeros(ids.shape, jnp.int32)
    for word in range(num_words):
        item_word = flat[first + word * CHUNK]
        total = total + jax.lax.population_count(query_words[:, word, None] ^ item_word)
    return total.astype(jnp.int32)


def _relevant_items(query_labels, labels, ids):
    """Return bool [Q, K]: whether database item ids[q, k] is relevant to query q."""
    if labels.ndim == 1:
        return labels[ids] == query_labels[:, None]
    item_labels = labels[:, ids]  # [L, Q, K]
    shared = jnp.zeros(ids.shape, jnp.uint32)
    for word in range(labels.shape[0]):
        shared = shared | (item_labels[word] & query_labels[:, word, None])
    return shared != 0


def _or_bits(flags):
    """Return uint32 [...]: bit i set where flags[..., i] (last axis of length 32)."""
    bit_values = jnp.left_shift(jnp.uint32(1), jnp.arange(32, dtype=jnp.uint32))
    return jnp.sum(jnp.where(flags, bit_values, jnp.uint32(0)), axis=-1, dtype=jnp.uint32)


def _search(inclusive, num_targets: int):
    """Return int32 [Q, T]: for each target t < T, the first index whose inclusive count exceeds t.

    That index is the number of entries <= t, so it is a prefix sum of the histogram of
    the entries. This costs far less than a binary search (jnp.searchsorted), whose
    loop XLA's CPU backend ran with a copy of its operands in every step.
    """
    num_queries, length = inclusive.shape
    rows = jnp.arange(num_queries, dtype=jnp.int32)[:, None]
    histogram = jnp.zeros((num_queries, num_targets), jnp.int32)
    histogram = histogram.at[rows, inclusive].add(1, mode="drop")
    return scans.prefix_sum_last_axis(histogram, length)


def _select_bit(words, rank):
    """Return int32 positions of the (rank + 1)-th set bit of uint32 `words`.

    A binary search over halves with population counts. The result is meaningless
    where `words` has rank or fewer set bits.
    """
    words = words.astype(jnp.uint32)
    rank = rank.astype(jnp.int32)
    position = jnp.zeros(words.shape, jnp.int32)
    for width in (16, 8, 4, 2, 1):
        low_count = jax.lax.population_count(words & jnp.uint32((1 << width) - 1))
        low_count = low_count.astype(jnp.int32)
        upper = rank >= low_count
        rank = jnp.where(upper, rank - low_count, rank)
        words = jnp.where(upper, words >> width, words)
        position = position + jnp.where(upper, width, 0)
    return position


def _exclusive_at(inclusive, index):
    """Return inclusive[q, index[q, s] - 1], or 0 where index is 0."""
    previous = jnp.take_along_axis(inclusive, jnp.maximum(index - 1, 0), axis=1)
    return jnp.where(index > 0, previous, 0)


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Pad `array` with zero rows to `rows` rows, so every block has the same shape."""
    missing = rows - array.shape[0]
    if missing == 0:
        return array
    padding = [(0, missing)] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, padding)
