"""Evaluation: encode queries and database, binarise, rank, score, write results.

Codes are binarised with sign, where sign(0) = +1 for images and prototypes
alike, and ranked by Hamming distance with ties broken by database index.
Results go to `workdir/eval/results.json` (the latest evaluation) and
`workdir/eval/results_step<N>.json`. The codes of the latest evaluation go to
`workdir/eval/query.npz`, `database.npz` and `prototypes.npz`, code files that
`python -m semhash_jax.evaluate_codes` and other toolkits read, and the text side
of the run to `class_embeddings.npz`. Zero-shot runs also score the queries of
unseen and seen classes apart. `cross_dataset.evaluate_transfer` scores a model
on another dataset (cross-dataset retrieval).
"""

import functools
import json
import os
import pathlib

from absl import logging
from flax import nnx
import jax
import numpy as np

from semhash_jax import atomic_files, checkpointing, input_pipeline, preprocessing, run_setup
from semhash_jax import sharding
from semhash_jax import train_state as train_state_lib
from semhash_jax.datasets import protocols
from semhash_jax.retrieval import classification, code_files
from semhash_jax.retrieval import codes as codes_lib
from semhash_jax.retrieval import metrics as metrics_lib

EVAL_DIR = "eval"
# Text side of the latest evaluation (see `write_class_embeddings`).
CLASS_EMBEDDINGS_FILE = "class_embeddings.npz"


class Encoder:
    """Jitted image and class-name encoders of one model state, in eval mode."""

    def __init__(self, graphdef: nnx.GraphDef, state: nnx.State, mesh):
        model, _ = nnx.merge(graphdef, state)
        model.eval()
        model_graphdef, self._model_state = nnx.split(model)
        self._mesh = mesh
        replicated = sharding.replicated(mesh)

        def encode_images(model_state, images):
            return nnx.merge(model_graphdef, model_state).visual(images)

        def encode_classes(model_state, class_embeddings):
            return nnx.merge(model_graphdef, model_state).semantic(class_embeddings)

        self._encode_images = jax.jit(
            encode_images,
            in_shardings=(None, sharding.batch_sharded(mesh)),
            out_shardings=replicated,
        )
        self._encode_classes = jax.jit(encode_classes, out_shardings=replicated)
        # Labels and masks of a global batch, copied to every process.
        self._gather = jax.jit(lambda tree: tree, out_shardings=replicated)

    def images(self, source: input_pipeline.PoolSource, batch_size: int, mean, std, transform):
        """Return real-valued codes [N, K] and labels [N] of every item of `source`.

        `transform` brings each image to the model's size (`preprocessing.eval_transform`).
        """
        codes, labels = [], []
        for batch in input_pipeline.eval_batches(
            source,
            global_batch_size=batch_size,
            mean=mean,
            std=std,
            transform=transform,
            process_rows=sharding.process_rows(self._mesh, batch_size),
        ):
            del batch["id"]
            batch = sharding.global_batch(batch, self._mesh)
            batch_codes = np.asarray(self._encode_images(self._model_state, batch["image"]))
            gathered = jax.device_get(
                self._gather({"label": batch["label"], "mask": batch["mask"]})
            )
            codes.append(batch_codes[gathered["mask"]])
            labels.append(gathered["label"][gathered["mask"]])
        return np.concatenate(codes), np.concatenate(labels)

    def image_array(self, images: np.ndarray) -> np.ndarray:
        """Return real-valued codes [N, K] of normalised images [N, H, W, C] already in memory.

        The batch is padded to a multiple of the device count.
        """
        count = len(images)
        devices = self._mesh.devices.size
        padded = np.concatenate(
            [images, np.repeat(images[:1], -count % devices, axis=0)], axis=0
        ).astype(np.float32)
        sharded = jax.device_put(padded, sharding.batch_sharded(self._mesh))
        return np.asarray(self._encode_images(self._model_state, sharded))[:count]

    def classes(self, class_embeddings: np.ndarray) -> np.ndarray:
        """Return real-valued class prototypes [C, K]."""
        return np.asarray(self._encode_classes(self._model_state, class_embeddings))


def format_results(results: dict) -> str:
    """Return the results as a short plain-text table."""
    protocol = results["protocol"]
    rows = [
        ("step", results["step"]),
        ("bits", results["bits"]),
        ("protocol", protocol["name"]),
        (
            "queries / database / train",
            f"{protocol['num_query']} / {protocol['num_database']} / {protocol['num_train']}",
        ),
    ]
    transfer = results.get("transfer")
    if transfer:
        rows.append(
            ("model from", f"{transfer['source_workdir']} (step {transfer['source_step']})")
        )
    extra = [
        ("nearest-prototype accuracy", results["classification"]["nearest_prototype_accuracy"])
    ]
    text_queries = results.get("text_queries", {})
    # Only SemanticHash makes its prototypes from class names. The baselines' class
    # codes are fixed centres or learned tables.
    method = results.get("config", {}).get("method", "semantic_hash")
    query_kind = "class-name" if method == "semantic_hash" else "class-code"
    for group in ("all", "seen", "unseen"):
        scores = text_queries.get(f"{group}_classes") or {}
        if group != "all" and "zero_shot" not in results:
            continue
        for name, value in scores.items():
            if name.startswith("mAP"):
                extra.append((f"{query_kind} queries ({group} classes) {name}", value))
    zero_shot = results.get("zero_shot")
    if zero_shot:
        for group in ("unseen", "seen"):
            scores = zero_shot[f"{group}_queries"] or {}
            for name, value in scores.items():
                if name.startswith(("mAP", "tie_aware")):
                    extra.append((f"{group}-class queries {name}", value))
        for name, value in zero_shot["classification"].items():
            extra.append((f"accuracy {name}", value))
    # NaN (a group without queries) prints as n/a.
    extra = [(name, "n/a" if value is None or value != value else value) for name, value in extra]
    return metrics_lib.format_table(rows, results, extra)


def _subset_metrics(config, setup, mask, query, database) -> dict | None:
    """Return the scalar retrieval metrics of the queries in `mask`, or None if there are none."""
    if not mask.any():
        return None
    return metrics_lib.retrieval_metrics(
        query[0][mask],
        query[1][mask],
        database[0],
        database[1],
        bits=config.bits,
        top_k=config.top_k,
        radius=config.get("radius", 2),
        pr_curve=False,
        mesh=sharding.local_mesh(),
    )["metrics"]


def zero_shot_scores(config, setup, query, database, query_bits, prototype_bits) -> dict:
    """Score the queries of unseen and seen classes apart.

    `query` and `database` are (packed codes, labels) pairs. A query counts as
    unseen when any of its labels is an unseen class. Classification accuracies:
    unseen queries among the unseen prototypes only (conventional zero-shot),
    unseen and seen queries among all prototypes (generalised zero-shot).
    """
    unseen_classes = np.flatnonzero(~setup.seen)
    query_labels = query[1]
    unseen = protocols.has_any_class(query_labels, unseen_classes)
    accuracy = classification.nearest_prototype_accuracy
    return {
        "unseen_classes": [setup.class_names[c] for c in unseen_classes],
        "num_unseen_queries": int(unseen.sum()),
        "num_seen_queries": int((~unseen).sum()),
        "unseen_queries": _subset_metrics(config, setup, unseen, query, database),
        "seen_queries": _subset_metrics(config, setup, ~unseen, query, database),
        "classification": {
            "unseen_among_unseen": accuracy(
                query_bits[unseen], query_labels[unseen], prototype_bits, unseen_classes
            ),
            "unseen_among_all": accuracy(query_bits[unseen], query_labels[unseen], prototype_bits),
            "seen_among_all": accuracy(query_bits[~unseen], query_labels[~unseen], prototype_bits),
        },
    }


def text_query_scores(
    prototypes_packed, database, classes, *, bits: int, top_k, radius: int, mesh
) -> dict | None:
    """Score class prototypes used as queries (search by class name) against the database.

    The query of class c is its prototype, and the relevant items are the database
    images labelled c. Returns the scalar metrics over `classes`, or None for no classes.
    """
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) == 0:
        return None
    database_labels = database[1]
    if database_labels.ndim == 1:
        labels = classes
    else:
        labels = np.eye(database_labels.shape[1], dtype=np.uint8)[classes]
    return metrics_lib.retrieval_metrics(
        prototypes_packed[classes],
        labels,
        *database,
        bits=bits,
        top_k=top_k,
        radius=radius,
        pr_curve=False,
        mesh=mesh,
    )["metrics"]


def write_class_embeddings(path, setup: run_setup.Setup) -> None:
    """Write the text side of a run: raw embeddings, centring mean, seen classes, vocabulary."""
    text_mean = setup.text_mean
    atomic_files.save_npz(
        path,
        embeddings=setup.raw_embeddings.astype(np.float32),
        network_inputs=setup.class_embeddings.astype(np.float32),
        class_names=np.asarray(setup.class_names, dtype=str),
        seen=setup.seen,
        vocabulary=np.asarray(setup.vocabulary, dtype=str),
        text_mean=np.zeros(0, np.float32) if text_mean is None else text_mean.astype(np.float32),
    )


def evaluate_state(
    config,
    workdir,
    *,
    step: int,
    setup: run_setup.Setup,
    graphdef: nnx.GraphDef,
    state: nnx.State,
    transform=None,
    checkpoint_workdir=None,
    transfer: dict | None = None,
) -> dict:
    """Score one model state on the protocol split and write the results.

    `transform` defaults to `preprocessing.eval_transform(config)`. The checkpoint
    came from `checkpoint_workdir` (default: `workdir`); `transfer` describes the
    source model of a cross-dataset evaluation and is stored with the results.
    """
    logging.info("Evaluating step %d.", step)
    encoder = Encoder(graphdef, state, setup.mesh)
    if transform is None:
        transform = preprocessing.eval_transform(config)
    split = setup.split

    def encode(ids):
        source = input_pipeline.PoolSource(
            setup.builder, split.splits, split.split_sizes, ids, labels=split.labels
        )
        return encoder.images(source, config.eval_batch_size, config.mean, config.std, transform)

    query_codes, query_labels = encode(split.query_ids)
    database_codes, database_labels = encode(split.database_ids)
    prototypes = encoder.classes(setup.class_embeddings)
    logging.info(
        "Encoded %d queries and %d database images.", len(query_codes), len(database_codes)
    )

    query_codes = codes_lib.binarize(query_codes)
    database_codes = codes_lib.binarize(database_codes)
    prototypes = codes_lib.binarize(prototypes)
    query = (codes_lib.pack_codes(query_codes), query_labels)
    database = (codes_lib.pack_codes(database_codes), database_labels)
    scores = metrics_lib.retrieval_metrics(
        *query,
        *database,
        bits=config.bits,
        top_k=config.top_k,
        radius=config.get("radius", 2),
        mesh=sharding.local_mesh(),
    )
    query_bits, prototype_bits = query_codes > 0, prototypes > 0
    accuracy = classification.nearest_prototype_accuracy(query_bits, query_labels, prototype_bits)
    text_queries = functools.partial(
        text_query_scores,
        codes_lib.pack_codes(prototypes),
        database,
        bits=config.bits,
        top_k=config.top_k,
        radius=config.get("radius", 2),
        mesh=sharding.local_mesh(),
    )

    results = {
        "step": int(step),
        "bits": int(config.bits),
        "dataset": config.dataset,
        "protocol": {
            "name": split.protocol,
            "seed": split.seed,
            "num_query": int(len(split.query_ids)),
            "num_database": int(len(split.database_ids)),
            "num_train": int(len(split.train_ids)),
        },
        "metrics": scores["metrics"],
        "curves": scores["curves"],
        "top_k": scores["top_k"],
        "radius": scores["radius"],
        "tie_rule": scores["tie_rule"],
        "no_relevant_rule": scores["no_relevant_rule"],
        "empty_ball_rule": scores["empty_ball_rule"],
        "binarization": "sign, with sign(0) = +1",
        "classification": {
            "nearest_prototype_accuracy": accuracy,
            "rule": classification.TIE_RULE,
        },
        "text_queries": {
            "all_classes": text_queries(np.arange(len(prototypes))),
            "seen_classes": text_queries(setup.seen_classes),
            "unseen_classes": text_queries(np.flatnonzero(~setup.seen)),
            "rule": "the prototype of each class as a query; relevant: database images of it",
        },
        "checkpoint": {
            "workdir": str(pathlib.Path(checkpoint_workdir or workdir).absolute()),
            "relative_workdir": os.path.relpath(
                pathlib.Path(checkpoint_workdir or workdir).absolute(),
                pathlib.Path(workdir).absolute(),
            ),
            "step": int(step),
        },
        "config": json.loads(config.to_json_best_effort()),
    }
    if not setup.seen.all():
        results["zero_shot"] = zero_shot_scores(
            config, setup, query, database, query_bits, prototype_bits
        )
    if transfer is not None:
        results["transfer"] = transfer

    if jax.process_index() == 0:
        eval_dir = pathlib.Path(workdir) / EVAL_DIR
        eval_dir.mkdir(parents=True, exist_ok=True)
        code_sets = {
            "query": (query_codes, query_labels, split.query_ids),
            "database": (database_codes, database_labels, split.database_ids),
            "prototypes": (prototypes, np.arange(len(prototypes)), np.arange(len(prototypes))),
        }
        results["code_files"] = {}
        for name, (codes, labels, ids) in code_sets.items():
            path = eval_dir / f"{name}.npz"
            code_files.write_code_file(
                path, codes, labels, ids=ids, class_names=np.asarray(setup.class_names)
            )
            results["code_files"][name] = str(path)
        write_class_embeddings(eval_dir / CLASS_EMBEDDINGS_FILE, setup)
        results["code_files"]["class_embeddings"] = str(eval_dir / CLASS_EMBEDDINGS_FILE)
        atomic_files.write_json(eval_dir / f"results_step{step}.json", results)
        atomic_files.write_json(eval_dir / "results.json", results)
        logging.info("Wrote %s and the code files in %s.", eval_dir / "results.json", eval_dir)
    return results


def evaluate(config, workdir: str, step: int | None = None) -> dict:
    """Restore a checkpoint of `workdir` (latest when `step` is None) and score it."""
    logging.info("Starting evaluation of %s.", workdir)
    setup = run_setup.prepare_run(config, workdir, create_split=False)
    num_classes = len(setup.class_names)
    embedding_dim = setup.class_embeddings.shape[1]
    checkpointer = checkpointing.Checkpointer(
        workdir,
        fingerprint=checkpointing.config_fingerprint(config, embedding_dim, num_classes),
    )
    step = checkpointing.find_step(checkpointer, step)
    schedule = train_state_lib.make_schedule(config)
    train_state = train_state_lib.create_train_state(
        config,
        setup.mesh,
        embedding_dim=embedding_dim,
        schedule=schedule,
        num_classes=int(setup.seen.sum()),
    )
    state = checkpointer.restore(step, train_state.state)
    checkpointer.close()
    return evaluate_state(
        config, workdir, step=step, setup=setup, graphdef=train_state.graphdef, state=state
    )
