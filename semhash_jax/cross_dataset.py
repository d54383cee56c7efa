"""Cross-dataset evaluation: a model trained on one dataset encodes another.

  python -m semhash_jax.evaluate --config=<target config> --checkpoint_from=<source workdir>

The model (architecture, code length, text space, input size and normalisation)
comes from the config stored in the source checkpoint. The data, protocol and
metric settings come from the target config. The target's class prototypes come
from its class names, embedded in the source's text space and shifted by the
source's centring mean, so no target image or label is needed to build them.
Target classes whose name (ignoring case) is a class the source model was trained
on count as seen. The others are scored apart as unseen (zero-shot across
datasets). Target images are converted to the source's channel count and resized
to its input size.
"""

from __future__ import annotations

import pathlib

from absl import logging
import ml_collections

from semhash_jax import (
    checkpointing,
    config_defaults,
    evaluation,
    input_errors,
    preprocessing,
    run_setup,
)
from semhash_jax import train_state as train_state_lib
from semhash_jax.datasets import protocols, registry
from semhash_jax.retrieval import prototype_analysis

# Config fields that describe the model and its input; they come from the source.
MODEL_FIELDS = (
    "bits",
    "image_size",
    "num_channels",
    "mean",
    "std",
    "preprocess",
    "crop_fraction",
    "model",
    "text",
    "loss",
    "optimizer",
    "seed",
    "batch_size",
    "num_train_steps",
)

TRANSFER_DIR = "transfer"


def transfer_config(target: ml_collections.ConfigDict, source: dict) -> ml_collections.ConfigDict:
    """Return the target config with the model fields of the source config (a JSON dict)."""
    missing = [field for field in MODEL_FIELDS if field not in source]
    if missing:
        raise ValueError(
            f"The source checkpoint's config has no {', '.join(missing)}: it was written by "
            "an older version of semhash_jax. Train the source model again."
        )
    method = source.get("method", "semantic_hash")
    if method != "semantic_hash":
        raise ValueError(
            f"The source model was trained with config.method={method!r}, whose class codes "
            "come from a table of its own classes. Cross-dataset evaluation gives prototypes "
            "to the target's classes from their names, which only method='semantic_hash' can."
        )
    config = ml_collections.ConfigDict(target.to_dict())
    source = config_defaults.config_from_json(source)
    for field in MODEL_FIELDS:
        config[field] = source[field]
    if config.unseen_classes:
        logging.warning(
            "config.unseen_classes=%s is ignored in cross-dataset evaluation: the classes "
            "the source model was trained on decide which are unseen.",
            config.unseen_classes,
        )
    config.unseen_classes = ()
    return config


def read_source_space(source_workdir: pathlib.Path) -> run_setup.SourceSpace:
    """Read the text space of the source run from its latest evaluation."""
    path = source_workdir / evaluation.EVAL_DIR / evaluation.CLASS_EMBEDDINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the source run has no evaluation written by this version. "
            f"Run `python -m semhash_jax.evaluate --config=<source config> "
            f"--workdir={source_workdir}` first."
        )
    text = prototype_analysis.read_class_embeddings(path)
    return run_setup.SourceSpace(
        vocabulary=text.vocabulary,
        mean=text.text_mean,
        seen_names=frozenset(
            str(name).lower() for name, is_seen in zip(text.class_names, text.seen) if is_seen
        ),
    )


def evaluate_transfer(target_config, source_workdir, workdir=None, step: int | None = None) -> dict:
    """Encode the target dataset with the source model and score it.

    Results go to `workdir`, by default `<source_workdir>/transfer/<data>-<protocol>`,
    where <data> is the prepared data's TFDS name, config and version.
    The source workdir's checkpoints are only read.
    """
    source_workdir = pathlib.Path(source_workdir).absolute()
    logging.info("Starting cross-dataset evaluation of the model in %s.", source_workdir)
    with input_errors.tagged():
        checkpoint_dir = source_workdir / checkpointing.CHECKPOINT_DIR
        if not source_workdir.is_dir():
            raise FileNotFoundError(
                f"--checkpoint_from={source_workdir} does not exist. Pass the workdir of a "
                "training run."
            )
        if source_workdir.name == checkpointing.CHECKPOINT_DIR:
            raise FileNotFoundError(
                f"--checkpoint_from={source_workdir} is a checkpoints folder. Pass the "
                f"workdir that contains it: --checkpoint_from={source_workdir.parent}."
            )
        if not checkpoint_dir.is_dir():
            raise FileNotFoundError(
                f"--checkpoint_from={source_workdir} has no {checkpointing.CHECKPOINT_DIR} "
                "folder. Pass the workdir of a training run."
            )
        reader = checkpointing.Checkpointer(source_workdir, fingerprint=None)
        step = checkpointing.find_step(reader, step)
        source = reader.saved_config(step)
        config = transfer_config(target_config, source)
        space = read_source_space(source_workdir)
    if workdir is None:
        with input_errors.tagged():
            builder = registry.get_builder(config.dataset, config.data_dir, config.source_dir)
        # The prepared data's name/config/version distinguishes image folders and dataset
        # configs apart, so that each gets its own results and split.
        data_name = protocols.builder_source(builder).replace("/", "_")
        workdir = source_workdir / TRANSFER_DIR / f"{data_name}-{config.protocol}"
    logging.info(
        "Model of %s (step %d, trained on %s) evaluated on %s; results in %s.",
        source_workdir,
        step,
        source["dataset"],
        config.dataset,
        workdir,
    )

    setup = run_setup.prepare_run(config, workdir, create_split=True, source=space)
    schedule = train_state_lib.make_schedule(config)
    train_state = train_state_lib.create_train_state(
        config, setup.mesh, embedding_dim=setup.class_embeddings.shape[1], schedule=schedule
    )
    state = reader.restore(step, train_state.state)
    reader.close()
    transfer = {
        "source_workdir": str(source_workdir),
        "source_step": int(step),
        "source_dataset": source["dataset"],
        "classes_seen_by_source": [n for n, s in zip(setup.class_names, setup.seen) if s],
        "classes_new_to_source": [n for n, s in zip(setup.class_names, setup.seen) if not s],
    }
    return evaluation.evaluate_state(
        config,
        workdir,
        step=step,
        setup=setup,
        graphdef=train_state.graphdef,
        state=state,
        transform=preprocessing.model_input_transform(config),
        checkpoint_workdir=source_workdir,
        transfer=transfer,
    )
