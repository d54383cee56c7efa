"""The benchmarks of the field, declared once: dataset, protocol, classes, counts, K.

A benchmark pairs a dataset with a retrieval protocol (`protocols.PROTOCOLS`). It
states what applying the protocol must give: the number of classes, the class-name
list, the sizes of the training, query and database sets, and the K of mAP@K that
the field reports. Preparing a run checks the drawn split against these counts, so a
short or wrong dataset fails before training instead of training on wrong data.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """Expected outcome of applying `protocol` to `dataset`."""

    dataset: str
    protocol: str
    description: str
    num_classes: int
    # Shipped class-name list (`class_names.SHIPPED`), or None for the builder's names.
    class_names: str | None
    num_train: int
    num_query: int
    num_database: int
    # K of the reported mAP@K; None ranks the whole database (mAP@all).
    top_k: int | None


_ALL = (
    Benchmark(
        dataset="fashion_mnist",
        protocol="query1000_per_class",
        description="Fashion-MNIST, 100 queries per class from test, the rest as database",
        num_classes=10,
        class_names=None,
        num_train=5_000,
        num_query=1_000,
        num_database=69_000,
        top_k=None,
    ),
    Benchmark(
        dataset="fashion_mnist",
        protocol="train_test_split",
        description="Fashion-MNIST, test as queries, train as database and training set",
        num_classes=10,
        class_names=None,
        num_train=60_000,
        num_query=10_000,
        num_database=60_000,
        top_k=1000,
    ),
    Benchmark(
        dataset="cifar10",
        protocol="query1000_per_class",
        description="CIFAR-10 protocol (a): 1,000 queries, 59,000 database, 5,000 training",
        num_classes=10,
        class_names="cifar10",
        num_train=5_000,
        num_query=1_000,
        num_database=59_000,
        top_k=None,
    ),
    Benchmark(
        dataset="cifar10",
        protocol="train_test_split",
        description="CIFAR-10 protocol (b): 10,000 queries, 50,000 database and training",
        num_classes=10,
        class_names="cifar10",
        num_train=50_000,
        num_query=10_000,
        num_database=50_000,
        top_k=1000,
    ),
    Benchmark(
        dataset="imagenet2012",
        protocol="imagenet100_lists",
        description="ImageNet-100 (HashNet lists): 13,000 train, 5,000 query, 128,503 database",
        num_classes=100,
        class_names="imagenet100",
        num_train=13_000,
        num_query=5_000,
        num_database=128_503,
        top_k=1000,
    ),
    Benchmark(
        dataset="coco/2014",
        protocol="coco_lists",
        description="MS-COCO (HashNet lists): 10,000 train, 5,000 query, 117,218 database",
        num_classes=80,
        class_names="coco",
        num_train=10_000,
        num_query=5_000,
        num_database=117_218,
        top_k=5000,
    ),
    # NOTE: 117,218 assumes the 122,218 annotated train2014 + val2014 images that
    # HashNet's lists come from; it has not been checked on a prepared coco/2014.
    Benchmark(
        dataset="coco/2014",
        protocol="coco_sampled",
        description="MS-COCO 2014 drawn by seed: 10,000 train, 5,000 query, 117,218 database",
        num_classes=80,
        class_names="coco",
        num_train=10_000,
        num_query=5_000,
        num_database=117_218,
        top_k=5000,
    ),
    Benchmark(
        dataset="image_folder",
        protocol="nuswide21_lists",
        description="NUS-WIDE-21 (HashNet lists): 10,500 train, 2,100 query, 193,734 database",
        num_classes=21,
        class_names="nuswide21",
        num_train=10_500,
        num_query=2_100,
        num_database=193_734,
        top_k=5000,
    ),
    Benchmark(
        dataset="imagenet2012",
        protocol="train_validation_split",
        description="Full ImageNet: 50,000 validation queries, 1,281,167 training images",
        num_classes=1000,
        class_names="imagenet2012",
        num_train=1_281_167,
        num_query=50_000,
        num_database=1_281_167,
        top_k=1000,
    ),
)

BENCHMARKS = {(benchmark.dataset, benchmark.protocol): benchmark for benchmark in _ALL}


def find(dataset: str, protocol: str) -> Benchmark | None:
    """Return the declared benchmark of `protocol` on `dataset`, or None."""
    return BENCHMARKS.get((dataset, protocol))


def get(dataset: str, protocol: str) -> Benchmark:
    """Return the declared benchmark; raise ValueError listing the declared ones."""
    benchmark = find(dataset, protocol)
    if benchmark is None:
        declared = ", ".join(f"{d}:{p}" for d, p in sorted(BENCHMARKS))
        raise ValueError(
            f"No benchmark is declared for protocol {protocol!r} on dataset {dataset!r}. "
            f"Declared (dataset:protocol): {declared}."
        )
    return benchmark


def check_counts(benchmark: Benchmark, num_train: int, num_query: int, num_database: int):
    """Raise ValueError when a split's sizes differ from the benchmark's."""
    expected = (benchmark.num_train, benchmark.num_query, benchmark.num_database)
    actual = (num_train, num_query, num_database)
    if actual != expected:
        raise ValueError(
            f"Protocol {benchmark.protocol!r} on {benchmark.dataset!r} gave "
            f"train/query/database = {'/'.join(map(str, actual))} images, but the benchmark "
            f"({benchmark.description}) has {'/'.join(map(str, expected))}. The prepared "
            "dataset is incomplete or not the standard one: prepare it again, or set "
            "--config.check_counts=False to run on this data anyway (results are then not "
            "comparable with published ones)."
        )
