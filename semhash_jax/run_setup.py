"""Run setup shared by training and evaluation.

Order: check the config, the workdir and the inputs (so that a bad value fails
in seconds), build the mesh, prepare the dataset, load or draw the protocol
split, hold out the zero-shot classes, and embed the class names.
"""

import dataclasses
import pathlib

from absl import logging
import jax
from jax._src import distributed  # The coordination service client, for a long barrier.
import numpy as np

from semhash_jax import config_checks, input_errors, sharding
from semhash_jax.datasets import benchmarks, class_names as class_names_lib
from semhash_jax.datasets import protocols, registry
from semhash_jax.text import semantic_space


@dataclasses.dataclass
class Setup:
    """Everything a run needs before its first step, shared with evaluation.

    `class_embeddings` are the vectors the semantic hash network receives, centred
    when config.text.center is set. `raw_embeddings` are the text embeddings before
    centring, and `text_mean` is the mean that was subtracted (None without centring). `seen[c]` is False for the zero-shot classes held out of training.
    """

    mesh: jax.sharding.Mesh
    builder: object
    split: protocols.Split
    class_names: tuple[str, ...]
    class_embeddings: np.ndarray
    raw_embeddings: np.ndarray
    text_mean: np.ndarray | None
    seen: np.ndarray
    # Class names that define the dimensions of a one_hot space.
    vocabulary: tuple[str, ...]

    @property
    def seen_classes(self) -> np.ndarray:
        """Return the ids of the classes trained on, in label order."""
        return np.flatnonzero(self.seen)


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


def embed_class_names(
    names: class_names_lib.ClassNames, text_config, cache_dir, *, vocabulary=None
) -> np.ndarray:
    """Embed each class's first name, or average all its names (text.lemmas="average").

    `vocabulary` (the one_hot space's classes) defaults to the first names.
    """
    vocabulary = names.first if vocabulary is None else vocabulary
    embed = lambda texts: semantic_space.embed_texts(
        texts, text_config, vocabulary=vocabulary, cache_dir=cache_dir
    )
    # One-hot vectors belong to classes, not to names.
    if text_config.lemmas == "first" or text_config.space == "one_hot":
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


def find_unseen_classes(unseen_names, names: class_names_lib.ClassNames) -> np.ndarray:
    """Return bool [C], True for the classes named in `config.unseen_classes`.

    A class matches by any of its names, ignoring case.
    """
    lookup = {}
    for index, class_names in enumerate(names.names):
        for name in class_names:
            lookup.setdefault(name.lower(), index)
    unseen = np.zeros(len(names), bool)
    unknown = []
    for name in unseen_names:
        index = lookup.get(str(name).lower())
        if index is None:
            unknown.append(name)
        elif unseen[index]:
            raise ValueError(f"config.unseen_classes names class {names.first[index]!r} twice.")
        else:
            unseen[index] = True
    if unknown:
        raise ValueError(
            f"config.unseen_classes contains {unknown}, which are not class names of this "
            f"dataset ({names.source}). Class names: {', '.join(names.first)}."
        )
    if unseen.all():
        raise ValueError(
            "config.unseen_classes names every class, so no class is left to train on. "
            "Hold out fewer classes."
        )
    return unseen


@dataclasses.dataclass(frozen=True)
class SourceSpace:
    """The text space of a model trained on another dataset (cross-dataset evaluation).

    `vocabulary` contains the source's class names (the dimensions of a one_hot space),
    `mean` the mean subtracted from its embeddings (None without centring), and
    `seen_names` the lowercased names of the classes it was trained on.
    """

    vocabulary: tuple[str, ...]
    mean: np.ndarray | None
    seen_names: frozenset[str]


def prepare_run(config, workdir, *, create_split: bool, source: SourceSpace | None = None) -> Setup:
    """Check inputs, build the mesh, prepare data, split and text embeddings.

    With `source`, the class names are embedded in that model's space, and a class
    counts as seen when the source model was trained on a class of the same name.
    Errors raised here come from the user's input (see `input_errors`).
    """
    with input_errors.tagged():
        return _prepare_run(config, workdir, create_split=create_split, source=source)


def _dataset_class_names(config, builder) -> class_names_lib.ClassNames:
    """Return the class names of the configured dataset and protocol."""
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
    return names


def _seen_classes(config, names, source: SourceSpace | None) -> np.ndarray:
    """Return bool [C]: the classes the model is (or was, for `source`) trained on."""
    if source is None:
        return ~find_unseen_classes(config.unseen_classes, names)
    seen = np.array([name.lower() in source.seen_names for name in names.first])
    logging.info(
        "%d of %d classes share a name with a class the model was trained on.",
        int(seen.sum()),
        len(seen),
    )
    return seen


# How long processes other than 0 wait for process 0 to prepare the dataset or split.
DATASET_PREPARATION_TIMEOUT_MS = 24 * 3600 * 1000


def _wait_for_process_zero(barrier: str):
    """Block until every process reaches `barrier`, for up to 24 hours.

    A barrier of the coordination service, not a device collective: the first
    collective between CPU processes times out after 30 s (gloo's connect
    timeout), and process 0 may spend minutes or hours before it arrives.
    """
    distributed.global_state.client.wait_at_barrier(barrier, DATASET_PREPARATION_TIMEOUT_MS)


def _prepare_dataset(config):
    """Return the prepared dataset's builder, preparing it when needed.

    With several processes, process 0 prepares first and the others wait, so that
    they do not write the same files into a shared data dir at once.
    """
    if jax.process_count() == 1:
        return registry.prepare(config.dataset, config.data_dir, config.source_dir)
    builder = None
    if jax.process_index() == 0:
        builder = registry.prepare(config.dataset, config.data_dir, config.source_dir)
    else:
        logging.info("Waiting for process 0 to prepare %s.", config.dataset)
    _wait_for_process_zero("semhash_jax_dataset_prepared")
    if builder is None:
        builder = registry.prepare(config.dataset, config.data_dir, config.source_dir)
    return builder


def _load_or_create_split(config, builder, workdir, create: bool) -> protocols.Split:
    """Load the workdir's protocol split, or draw and save it when `create` is set.

    With several processes, process 0 draws and saves the split and the others
    load it after a barrier, so that only one process writes to the workdir.
    """

    def get(create_here: bool):
        return protocols.get_or_create_split(
            builder,
            config.protocol,
            config.dataset,
            config.split_seed,
            workdir,
            create=create_here,
            list_dir=config.get("list_dir"),
            check_lists=config.check_counts,
        )

    if jax.process_count() == 1 or not create:
        return get(create)
    split = get(True) if jax.process_index() == 0 else None
    _wait_for_process_zero("semhash_jax_split_saved")
    return split if split is not None else get(False)


def _prepare_run(config, workdir, *, create_split: bool, source: SourceSpace | None) -> Setup:
    config_checks.check_config(config, jax.device_count())
    config_checks.check_workdir(workdir)
    config_checks.check_inputs(config)
    mesh = sharding.make_mesh(config.get("mesh", sharding.DEFAULT_MESH))
    logging.info("Mesh: %s.", sharding.describe(mesh))
    builder = _prepare_dataset(config)
    # Class names and held-out classes are checked before a split is drawn and saved.
    names = _dataset_class_names(config, builder)
    seen = _seen_classes(config, names, source)
    split = _load_or_create_split(config, builder, workdir, create_split)
    check_split_counts(config, split)
    if source is None and not seen.all():
        split = protocols.without_classes(split, np.flatnonzero(~seen))
        logging.info(
            "Zero-shot split: %d unseen classes (%s) held out of training; %d training images left.",
            int((~seen).sum()),
            ", ".join(np.asarray(names.first)[~seen]),
            len(split.train_ids),
        )

    vocabulary = names.first if source is None else source.vocabulary
    raw_embeddings = embed_class_names(
        names, config.text, pathlib.Path(workdir) / "cache", vocabulary=vocabulary
    )
    text_mean = None
    class_embeddings = raw_embeddings
    if source is not None and source.mean is not None:
        text_mean = source.mean
    elif source is None and config.text.center:
        # The mean of the training classes only: unseen names must not shape the space.
        text_mean = raw_embeddings[seen].mean(axis=0)
    if text_mean is not None:
        class_embeddings = semantic_space.center(raw_embeddings, text_mean)
    return Setup(
        mesh,
        builder,
        split,
        names.first,
        class_embeddings,
        raw_embeddings,
        text_mean,
        seen,
        tuple(vocabulary),
    )
