"""Run setup shared by training and evaluation.

Order: check the config, the workdir and the inputs (so that a bad value fails
in seconds), build the mesh, prepare the dataset, load or draw the protocol
split, and embed the class names.
"""

import dataclasses
import pathlib

from absl import logging
import jax
import numpy as np

from semhash_jax import config_checks, input_errors, sharding
from semhash_jax.datasets import benchmarks, class_names as class_names_lib
from semhash_jax.datasets import protocols, registry
from semhash_jax.text import embeddings as text_embeddings


@dataclasses.dataclass
class Setup:
    """Everything a run needs before its first step, shared with evaluation."""

    mesh: jax.sharding.Mesh
    builder: object
    split: protocols.Split
    class_names: tuple[str, ...]
    class_embeddings: np.ndarray


def center_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Subtract the mean over classes, then L2-normalise each row.

    Class names embedded with one prompt template share a large common
    component (all-MiniLM-L6-v2 gives cosine 0.3-0.6 between unrelated
    Fashion-MNIST classes). Removing it leaves the differences between
    classes, which the semantic hash network must turn into distinct codes.
    """
    centered = embeddings - embeddings.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    return (centered / np.maximum(norms, 1e-12)).astype(np.float32)


def check_split_counts(config, split: protocols.Split):
    """Raise when a declared benchmark's counts differ from the split (config.check_counts)."""
    benchmark = benchmarks.find(config.dataset, config.protocol)
    if benchmark is None or not config.check_counts:
        logging.info("Split sizes not checked against a benchmark declaration.")
        return
    benchmarks.check_counts(
        benchmark, len(split.train_ids), len(split.query_ids), len(split.database_ids)
    )
    logging.info("Split sizes match the benchmark: %s.", benchmark.description)


def embed_class_names(names: class_names_lib.ClassNames, text_config, cache_dir) -> np.ndarray:
    """Embed each class's first name, or average all its names (text.lemmas="average")."""
    embed = lambda texts: text_embeddings.class_name_embeddings(
        texts,
        model=text_config.model,
        template=text_config.template,
        pooling=text_config.pooling,
        normalize=text_config.normalize,
        cache_dir=cache_dir,
    )
    if text_config.lemmas == "first":
        return embed(names.first)
    if all(len(class_names) == 1 for class_names in names.names):
        logging.info("text.lemmas=average: every class has one name, so no names are averaged.")
    every_name = [name for class_names in names.names for name in class_names]
    owners = np.repeat(np.arange(len(names)), [len(class_names) for class_names in names.names])
    embedded = embed(every_name)
    averaged = np.zeros((len(names), embedded.shape[1]), np.float64)
    np.add.at(averaged, owners, embedded)
    averaged /= np.bincount(owners)[:, None]
    if text_config.normalize:
        averaged /= np.maximum(np.linalg.norm(averaged, axis=1, keepdims=True), 1e-12)
    return averaged.astype(np.float32)


def prepare_run(config, workdir, *, create_split: bool) -> Setup:
    """Check inputs, build the mesh, prepare data, split and text embeddings.

    Errors raised here come from the user's input (see `input_errors`).
    """
    with input_errors.tagged():
        return _prepare_run(config, workdir, create_split=create_split)


def _prepare_run(config, workdir, *, create_split: bool) -> Setup:
    config_checks.check_config(config, jax.device_count())
    config_checks.check_workdir(workdir)
    config_checks.check_inputs(config)
    mesh = sharding.make_mesh()
    logging.info(
        "Mesh: %s over %d devices (%s).",
        dict(mesh.shape),
        mesh.devices.size,
        jax.devices()[0].platform,
    )
    builder = registry.prepare(config.dataset, config.data_dir, config.source_dir)
    split = protocols.get_or_create_split(
        builder,
        config.protocol,
        config.dataset,
        config.split_seed,
        workdir,
        create=create_split,
        list_dir=config.get("list_dir"),
        check_lists=config.check_counts,
    )
    check_split_counts(config, split)
    # A list protocol defines its own classes (its label columns); datasets such as
    # COCO have no single "label" feature.
    protocol = protocols.get_protocol(config.protocol)
    num_classes = protocol.list_columns
    if protocol.objects_key:
        num_classes = builder.info.features[protocol.objects_key]["label"].num_classes
    builder_names = ()
    if "label" in builder.info.features:
        builder_names = tuple(builder.info.features["label"].names)
        num_classes = num_classes or builder.info.features["label"].num_classes
    names = class_names_lib.for_dataset(config.class_names, builder_names, num_classes)
    logging.info("Class names: %d from %s.", len(names), names.source)
    class_names = names.first
    class_embeddings = embed_class_names(names, config.text, pathlib.Path(workdir) / "cache")
    if config.text.center:
        class_embeddings = center_embeddings(class_embeddings)
    return Setup(mesh, builder, split, class_names, class_embeddings)
