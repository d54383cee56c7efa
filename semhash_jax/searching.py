"""Search by text or image against the database codes of an evaluation (see `search`)."""

from __future__ import annotations

import re

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from semhash_jax import input_errors, input_pipeline, query_encoder
from semhash_jax.datasets import protocols, registry
from semhash_jax.retrieval import classification, plots
from semhash_jax.retrieval import codes as codes_lib

SEARCH_DIR = "search"


def rank_by_hamming(query_bits: np.ndarray, database_packed: np.ndarray, top_k: int):
    """Return (positions, distances) of the `top_k` nearest database codes to one query.

    `query_bits` is bool [K]; `database_packed` uint32 [N, W] from `codes.pack_codes`.
    Ties are broken by database position, lower first.
    """
    query = codes_lib.pack_codes(query_bits[None, :])
    distances = np.bitwise_count(database_packed ^ query).sum(axis=1)
    order = np.argsort(distances, kind="stable")[:top_k]
    return order, distances[order]


def label_names(label, class_names) -> list[str]:
    """Return the class names of a class id or a multi-hot row."""
    label = np.asarray(label)
    if label.ndim == 0:
        return [class_names[int(label)]]
    return [class_names[int(c)] for c in np.flatnonzero(label)]


def search(
    workdir, *, text=None, image=None, top_k: int = 10, top_classes: int = 3, write_plots=False
) -> dict:
    """Encode the query, rank the database and return the result as a JSON-ready dict."""
    if image is not None:
        # A bad file is reported before the model is restored.
        with input_errors.tagged():
            query_encoder.read_image_file(image, channels=3)
    encoder = query_encoder.QueryEncoder(workdir)
    files = encoder.files

    query_image = None
    if text is not None:
        query_bits = encoder.text_codes([text])[0]
        query = {"text": text}
    else:
        codes, images = encoder.image_codes([image])
        query_bits, query_image = codes[0], images[0]
        query = {"image": str(image)}

    database = files.database
    positions, distances = rank_by_hamming(query_bits, database.packed, top_k)
    ids = database.ids if database.ids is not None else np.arange(len(database))
    records = _database_records(encoder)
    file_names = _file_names(records, ids[positions])
    items = [
        {
            "rank": rank + 1,
            "id": int(ids[position]),
            "hamming_distance": int(distance),
            "labels": label_names(database.labels[position], files.class_names),
            "file_name": file_name,
        }
        for rank, (position, distance, file_name) in enumerate(
            zip(positions, distances, file_names)
        )
    ]

    result = {
        "query": query,
        "bits": int(database.bits),
        "database_size": len(database),
        "checkpoint": files.results["checkpoint"],
        "results": items,
        "nearest_classes": _nearest_classes(files, query_bits, top_classes),
    }
    if write_plots:
        plot = _write_plot(encoder, records, query, query_image, items, ids[positions])
        result["plot"] = str(plot)
    return result


def _nearest_classes(files, query_bits: np.ndarray, count: int) -> list[dict]:
    """Return the `count` class prototypes nearest to the query, ties by class id."""
    prototype_bits = codes_lib.unpack_codes(files.prototypes.packed, files.prototypes.bits) > 0
    distances = classification.hamming_to_prototypes(query_bits[None], prototype_bits)[0]
    nearest = np.argsort(distances, kind="stable")[:count]
    return [
        {
            "class": files.class_names[c],
            "hamming_distance": int(distances[c]),
            "seen_in_training": bool(files.seen[c]),
        }
        for c in nearest
    ]


def _database_records(encoder):
    """Return (builder, split) of the evaluated dataset, or None when it cannot be read."""
    files, config = encoder.files, encoder.config
    split = protocols.load_split(files.eval_dir.parent)
    if split is None:
        return None
    try:
        builder = registry.get_builder(config.dataset, config.data_dir, config.get("source_dir"))
    except (OSError, ValueError) as error:
        logging.info("Dataset %s not available for file names: %s", config.dataset, error)
        return None
    if not builder.is_prepared():
        return None
    return builder, split


def _file_names(records, pool_ids) -> list[str | None]:
    """Return the file name of each database item, for datasets that record one (image folders)."""
    if records is None or "file_name" not in records[0].info.features:
        return [None] * len(pool_ids)
    builder, split = records
    offsets = np.cumsum((0,) + tuple(split.split_sizes[:-1]))
    sources = {}
    names = []
    for pool_id in pool_ids:
        index = int(np.searchsorted(offsets, pool_id, side="right")) - 1
        if index not in sources:
            sources[index] = builder.as_data_source(
                split=split.splits[index], decoders={"image": tfds.decode.SkipDecoding()}
            )
        record = sources[index][int(pool_id - offsets[index])]
        names.append(protocols.as_text(record["file_name"]))
    return names


def _write_plot(encoder, records, query: dict, query_image, items: list[dict], pool_ids):
    files = encoder.files
    if records is None:
        raise input_errors.mark(
            FileNotFoundError(
                f"The database images of {files.eval_dir.parent} cannot be read for --plots: "
                f"its protocol split or the prepared dataset {encoder.config.dataset} is "
                "missing. Prepare the dataset with the run's config, or leave out --plots."
            )
        )
    builder, split = records
    source = input_pipeline.PoolSource(builder, split.splits, split.split_sizes, pool_ids)
    images = [np.asarray(element["image"]) for element in source.__getitems__(range(len(source)))]
    captions = [
        f"#{item['rank']} d={item['hamming_distance']} {', '.join(item['labels'])}"[:40]
        for item in items
    ]
    title = query.get("text") or query["image"].rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_")[:60] or "query"
    path = files.eval_dir / SEARCH_DIR / f"{slug}.png"
    plots.write_search_grid(path, f"query: {title}", query_image, images, captions)
    logging.info("Wrote %s.", path)
    return path


def format_result(result: dict) -> str:
    """Return the search result as plain text."""
    query = result["query"]
    lines = [
        f"Query: {query.get('text') or query.get('image')} ({result['bits']} bits, "
        f"{result['database_size']} database items)",
        "rank  id        distance  labels",
    ]
    for item in result["results"]:
        file_name = f"  {item['file_name']}" if item.get("file_name") else ""
        lines.append(
            f"{item['rank']:<5} {item['id']:<9} {item['hamming_distance']:<9} "
            f"{', '.join(item['labels'])}{file_name}"
        )
    if result["nearest_classes"]:
        lines.append("Nearest class prototypes:")
        for entry in result["nearest_classes"]:
            marker = "" if entry["seen_in_training"] else " (not trained on)"
            lines.append(f"  {entry['class']}{marker}: distance {entry['hamming_distance']}")
    if "plot" in result:
        lines.append(f"Plot written to {result['plot']}")
    return "\n".join(lines)
