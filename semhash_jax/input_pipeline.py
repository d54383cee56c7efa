"""Input pipeline: protocol ids -> shuffled, decoded, normalised batches.

Records come from TFDS data sources (random access into the array_record
files) through grain, so the training iterator is deterministic given its seed
and its position can be saved with a checkpoint. Each process reads only its
share of every global batch.
"""

import dataclasses

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds


class PoolSource:
    """Random access to pool ids across several TFDS splits.

    Item i is the record of `ids[i]`; a pool id is a position in the splits laid
    end to end (see `datasets.protocols`). With `labels` (indexed by pool id, the
    protocol split's labels), an item's label comes from there instead of the
    record, as list protocols relabel records (ImageNet-100's 100 classes).
    """

    def __init__(self, builder: tfds.core.DatasetBuilder, splits, split_sizes, ids, labels=None):
        self._sources = [builder.as_data_source(split=name) for name in splits]
        for name, source, size in zip(splits, self._sources, split_sizes):
            if len(source) != size:
                raise ValueError(
                    f"Split {name!r} of {builder.name} has {len(source)} records but "
                    f"the saved protocol split expects {size}. The dataset was "
                    "prepared again with other contents; use a new --workdir."
                )
        self._offsets = np.cumsum((0,) + tuple(split_sizes[:-1]))
        self._ids = np.asarray(ids, dtype=np.int64)
        self._labels = None if labels is None else np.asarray(labels)

    def _label(self, record, pool_id: int):
        return record["label"] if self._labels is None else self._labels[pool_id]

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> dict:
        pool_id = int(self._ids[index])
        split = int(np.searchsorted(self._offsets, pool_id, side="right")) - 1
        record = self._sources[split][pool_id - int(self._offsets[split])]
        return {"image": record["image"], "label": self._label(record, pool_id), "id": pool_id}

    def __getitems__(self, indices) -> list[dict]:
        """Read several items, one batched read per split."""
        pool_ids = self._ids[np.asarray(indices, dtype=np.int64)]
        splits = np.searchsorted(self._offsets, pool_ids, side="right") - 1
        elements = [None] * len(pool_ids)
        for split in np.unique(splits):
            positions = np.flatnonzero(splits == split)
            records = self._sources[split].__getitems__(
                [int(pool_ids[p] - self._offsets[split]) for p in positions]
            )
            for position, record in zip(positions, records):
                elements[position] = {
                    "image": record["image"],
                    "label": self._label(record, int(pool_ids[position])),
                    "id": int(pool_ids[position]),
                }
        return elements


class InMemorySource:
    """All items of a source, decoded once and kept in host memory.

    Per-item reads then cost an array index instead of a record read and an
    image decode. Meant for training sets of up to a few GB (Fashion-MNIST's
    5,000 training images take 4 MB).
    """

    def __init__(self, source, chunk_size: int = 4096):
        images, labels, ids = [], [], []
        for start in range(0, len(source), chunk_size):
            items = source.__getitems__(range(start, min(start + chunk_size, len(source))))
            images.extend(item["image"] for item in items)
            labels.extend(item["label"] for item in items)
            ids.extend(item["id"] for item in items)
        # Images of different sizes (before cropping) stay a list.
        same_shape = len({np.shape(image) for image in images}) <= 1
        self._images = np.stack(images) if same_shape else images
        self._labels = np.asarray(labels)
        self._ids = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self._images[index],
            "label": self._labels[index],
            "id": int(self._ids[index]),
        }


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
    """Scale uint8 images to [0, 1], then standardise per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def map(self, element: dict) -> dict:
        image = np.asarray(element["image"], dtype=np.float32) / 255.0
        image = (image - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return {
            "image": image,
            "label": np.int32(element["label"]),
            "id": np.int64(element["id"]),
        }


def local_batch_size(global_batch_size: int) -> int:
    """Return this process's share of a global batch."""
    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(
            f"Batch size {global_batch_size} does not divide across {count} "
            "processes. Set --config.batch_size to a multiple of the process count."
        )
    return global_batch_size // count


def _rows(global_batch_size: int, process_rows: tuple[int, int] | None) -> tuple[int, int]:
    """Return this process's rows [start, stop) of every global batch.

    The default is the process index's contiguous block; the trainer passes the
    rows that the mesh gives this process's devices (`sharding.process_rows`).
    """
    if process_rows is None:
        batch = local_batch_size(global_batch_size)
        return jax.process_index() * batch, (jax.process_index() + 1) * batch
    start, stop = process_rows
    batch = stop - start
    if batch <= 0 or global_batch_size % batch or start % batch:
        raise ValueError(
            f"Rows [{start}, {stop}) of a global batch of {global_batch_size} are not "
            "one of equal contiguous blocks, one per process."
        )
    return start, stop


def train_iterator(
    source: PoolSource | InMemorySource,
    *,
    global_batch_size: int,
    seed: int,
    mean,
    std,
    transform: grain.transforms.Map | grain.transforms.RandomMap,
    worker_count: int = 0,
    process_rows: tuple[int, int] | None = None,
) -> grain.DatasetIterator:
    """Return an endless iterator over this process's rows of shuffled global batches.

    Every epoch is a new permutation drawn from `seed`. The stream of global
    batches is the same for any process count. The random transform (see
    `preprocessing`) draws from a generator derived from `seed` and the element's
    position in the global stream. Each process reads only its rows
    `process_rows` ([start, stop)) of every global batch. So two processes with
    half a batch each feed a step exactly the batch that one process would.
    """
    start, stop = _rows(global_batch_size, process_rows)
    batch = stop - start
    dataset = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
    if isinstance(transform, grain.transforms.RandomMap):
        dataset = dataset.random_map(transform, seed=seed)
    else:
        dataset = dataset.map(transform)
    dataset = dataset.map(Normalize(tuple(mean), tuple(std)))
    # Local batches are consecutive blocks of the stream; slicing the lazy batched
    # dataset reads and transforms only this process's blocks.
    dataset = dataset.batch(batch, drop_remainder=True)
    dataset = dataset[start // batch :: global_batch_size // batch]
    iter_dataset = dataset.to_iter_dataset()
    if worker_count > 0:
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count)
        )
    return iter(iter_dataset)


def eval_batches(
    source: PoolSource,
    *,
    global_batch_size: int,
    mean,
    std,
    transform: grain.transforms.Map,
    process_rows: tuple[int, int] | None = None,
):
    """Yield fixed-shape local batches over `source` once, in id-list order.

    Each batch carries a boolean `mask`; the last batch is padded with
    masked-out copies of its first element, so every batch has the same shape
    and the encoder compiles once. With several processes, each takes its rows
    `process_rows` ([start, stop)) of every global batch.
    """
    row_start, row_stop = _rows(global_batch_size, process_rows)
    batch = row_stop - row_start
    normalize = Normalize(tuple(mean), tuple(std))
    total = len(source)
    for start in range(0, total, global_batch_size):
        local_start = start + row_start
        positions = list(range(local_start, min(local_start + batch, total)))
        valid = len(positions)
        # A process whose rows of the last batch lie past the end pads with item 0.
        elements = [
            normalize.map(transform.map(element))
            for element in source.__getitems__(positions or [0])
        ]
        elements += [elements[0]] * (batch - len(elements))
        mask = np.zeros(batch, dtype=bool)
        mask[:valid] = True
        yield {
            "image": np.stack([e["image"] for e in elements]),
            "label": np.stack([e["label"] for e in elements]),
            "id": np.stack([e["id"] for e in elements]),
            "mask": mask,
        }
