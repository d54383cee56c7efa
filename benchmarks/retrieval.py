"""Benchmark exact mAP@1000 on random codes: semhash_jax against a NumPy loop and FAISS.

  python benchmarks/retrieval.py [--queries=10000] [--database=1000000] [--bits=64]

All methods run in this one process on the same codes and labels.
(a) semhash_jax `mean_average_precision`, ranking by counting on the default jax
    device. A first call includes compilation, then --repeats calls are timed.
(b) A NumPy reference written like the field's usual evaluation: a loop over queries,
    Hamming distances from a float32 matrix product of +-1 codes, np.argsort, AP@K.
    It runs on --numpy_queries queries, and its time is scaled to all queries.
(c) FAISS IndexBinaryFlat search for the top K (search time only), with --threads
    threads, timed --repeats times. It needs faiss-cpu
    (pip install -r benchmarks/requirements.txt).
It also times one jitted XOR-popcount pass that counts, per query, the items within a
distance threshold: every exact method reads all query x database pairs at least once,
so this is the popcount-rate limit of the device.
Times of repeated runs are reported as their median. Peak memory is the largest
increase of the process's resident memory over its value before each method, sampled
every 5 ms; memory freed by an earlier method and reused does not show as an increase.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np


class PeakMemory:
    """Sample the resident set size in a thread; `peak_increase` is in bytes."""

    def __enter__(self):
        self._baseline = _rss()
        self._peak = self._baseline
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self._peak = max(self._peak, _rss())

    def _sample(self):
        while self._running:
            self._peak = max(self._peak, _rss())
            time.sleep(0.005)

    @property
    def peak_increase(self) -> int:
        return self._peak - self._baseline


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_calls(function, repeats: int):
    """Call `function` `repeats` times; return (seconds of each call, last result, peak memory)."""
    seconds = []
    with PeakMemory() as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            result = function()
            seconds.append(time.perf_counter() - start)
    return seconds, result, memory.peak_increase


def numpy_reference_map(query_signs, query_labels, database_signs, database_labels, top_k):
    """mAP@K as the field's per-query loops compute it (ties in np.argsort order)."""
    bits = query_signs.shape[1]
    average_precisions = []
    for query, label in zip(query_signs, query_labels, strict=True):
        distances = 0.5 * (bits - database_signs @ query)
        order = np.argsort(distances)[:top_k]
        relevant = (database_labels[order] == label).astype(np.float64)
        hits = np.cumsum(relevant)
        if hits[-1] > 0:
            ranks = np.arange(1, top_k + 1)
            average_precisions.append(np.sum(relevant * hits / ranks) / hits[-1])
        else:
            average_precisions.append(0.0)
    return float(np.mean(average_precisions))


def popcount_limit_seconds(query_words, database, threshold: int, block: int = 64) -> float:
    import jax
    import jax.numpy as jnp

    from semhash_jax.retrieval import hamming, scans

    @jax.jit
    def count_within(query_block, words):
        # Short reductions first: XLA's CPU backend is slow on one reduction over 1M items.
        distance = hamming.distances(query_block, words)
        within = (distance <= threshold).reshape(len(query_block), -1, hamming.CHUNK)
        return scans.sum_last_axis(jnp.sum(within, axis=2, dtype=jnp.int32))

    padded = np.pad(query_words, ((0, -len(query_words) % block), (0, 0)))
    count_within(jnp.asarray(padded[:block]), database.words).block_until_ready()
    start = time.perf_counter()
    results = [
        count_within(jnp.asarray(padded[i : i + block]), database.words)
        for i in range(0, len(padded), block)
    ]
    jax.block_until_ready(results)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--top_k", type=int, default=1000)
    parser.add_argument("--numpy_queries", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.bits % 32:
        parser.error(f"--bits must be a multiple of 32 here (uint32 words), got {args.bits}")

    import jax

    from semhash_jax.retrieval import hamming, labels, metrics, ranking

    rng = np.random.default_rng(args.seed)
    query_bytes = rng.integers(0, 256, (args.queries, args.bits // 8), dtype=np.uint8)
    database_bytes = rng.integers(0, 256, (args.database, args.bits // 8), dtype=np.uint8)
    query_labels = rng.integers(0, args.classes, args.queries)
    database_labels = rng.integers(0, args.classes, args.database)
    # The same bits as uint32 words; bit order does not change a Hamming distance.
    query_words = query_bytes.view("<u4").astype(np.uint32)
    database_words = database_bytes.view("<u4").astype(np.uint32)
    rows = []

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")

    def run_ours():
        return metrics.mean_average_precision(
            query_words, query_labels, database_words, database_labels, args.top_k, bits=args.bits
        )

    (first_seconds,), ours, peak = time_calls(run_ours, 1)
    rows.append(("(a) semhash_jax, first call (with compilation)", first_seconds, peak, "measured"))
    print(
        f"(a) first call: {first_seconds:.2f} s, mAP@{args.top_k} {ours[f'mAP@{args.top_k}']:.6f}"
    )
    ours_times, _, peak = time_calls(run_ours, args.repeats)
    ours_seconds = float(np.median(ours_times))
    rows.append(
        (f"(a) semhash_jax, median of {args.repeats} calls", ours_seconds, peak, "measured")
    )
    print(f"(a) calls: {', '.join(f'{t:.2f}' for t in ours_times)} s")

    query_signs = np.where(np.unpackbits(query_bytes, axis=1) > 0, 1.0, -1.0).astype(np.float32)
    database_signs = np.where(np.unpackbits(database_bytes, axis=1) > 0, 1.0, -1.0).astype(
        np.float32
    )
    subset = slice(0, args.numpy_queries)
    (elapsed,), numpy_map, peak = time_calls(
        lambda: numpy_reference_map(
            query_signs[subset], query_labels[subset], database_signs, database_labels, args.top_k
        ),
        1,
    )
    numpy_seconds = elapsed * args.queries / args.numpy_queries
    rows.append(
        (
            f"(b) NumPy per-query loop, {args.numpy_queries} queries scaled",
            numpy_seconds,
            peak,
            "estimate",
        )
    )
    print(f"(b) {args.numpy_queries} queries: {elapsed:.2f} s (mAP {numpy_map:.4f} on them)")

    prepared_query, prepared_database, _ = labels.prepare_labels(
        query_labels, database_labels, args.queries, args.database
    )
    database = hamming.put_database(database_words, prepared_database, args.bits)

    faiss_seconds = None
    try:
        import faiss
    except ImportError:
        print("(c) skipped: faiss-cpu is not installed")
    else:
        faiss.omp_set_num_threads(args.threads)
        index = faiss.IndexBinaryFlat(args.bits)
        index.add(database_bytes)
        faiss_times, (_, faiss_ids), peak = time_calls(
            lambda: index.search(query_bytes, args.top_k), args.repeats
        )
        faiss_seconds = float(np.median(faiss_times))
        rows.append(
            (
                f"(c) FAISS IndexBinaryFlat, {args.threads} threads, median of {args.repeats}",
                faiss_seconds,
                peak,
                "measured, search only",
            )
        )
        print(f"(c) calls: {', '.join(f'{t:.2f}' for t in faiss_times)} s")
        ranked = ranking.rank_top_k(
            query_words,
            prepared_query,
            database,
            args.top_k,
            total_relevant=np.ones(args.queries),
        )
        identical = np.array_equal(ranked.ids, faiss_ids)
        print(f"(c) {faiss_seconds:.2f} s; top-{args.top_k} ids identical to ours: {identical}")

    limit = popcount_limit_seconds(query_words, database, threshold=args.bits // 3)
    rows.append(("popcount-rate limit (one counting pass)", limit, None, "measured"))

    print()
    print(
        f"{args.queries:,} queries x {args.database:,} database items, {args.bits} bits, "
        f"{args.classes} classes, mAP@{args.top_k}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print("| method | time (s) | peak memory (MiB) | time vs (a) | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, seconds, peak, note in rows:
        memory_text = "" if peak is None else f"{peak / 2**20:.0f}"
        print(
            f"| {name} | {seconds:.2f} | {memory_text} | {seconds / ours_seconds:.2f}x | {note} |"
        )
    if faiss_seconds is not None:
        print(
            f"\n(a) is {faiss_seconds / ours_seconds:.2f}x the speed of (c) and "
            f"{numpy_seconds / ours_seconds:.0f}x the speed of (b)."
        )


if __name__ == "__main__":
    main()
