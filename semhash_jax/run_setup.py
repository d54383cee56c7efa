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

from semhash_jax import config_checks, sharding
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


def prepare_run(config, workdir, *, create_split: bool) -> Setup:
    """Check inputs, build the mesh, prepare data, split and text embeddings."""
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
    )
    class_names = tuple(builder.info.features["label"].names)
    class_embeddings = text_embeddings.class_name_embeddings(
        class_names,
        model=config.text.model,
        template=config.text.template,
        pooling=config.text.pooling,
        normalize=config.text.normalize,
        cache_dir=pathlib.Path(workdir) / "cache",
    )
    if config.text.center:
        class_embeddings = center_embeddings(class_embeddings)
    return Setup(mesh, builder, split, class_names, class_embeddings)
