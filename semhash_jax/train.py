"""Training: sharded state creation, the jitted train step, and the loop.

Flow of `train_and_evaluate`: check config and inputs, build the mesh, prepare
the dataset and the protocol split, embed the class names, create the state
sharded over the mesh, restore the latest checkpoint if there is one, train
with periodic logging and checkpoints, then evaluate the final state.
"""

import json
import pathlib
import time

from absl import logging
from clu import metric_writers, periodic_actions
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from semhash_jax import (
    atomic_files,
    checkpointing,
    config_defaults,
    evaluation,
    input_pipeline,
    losses,
    preemption,
)
from semhash_jax import preprocessing, run_setup, sharding, train_state as train_state_lib


# Wall time and images/s of each training segment of a run (see `write_training_time`).
TRAINING_TIME_FILE = "training_time.json"


def augment(images, key, *, flip: bool, max_shift: int):
    """Random horizontal flips and shifts of up to `max_shift` pixels."""
    flip_key, shift_key = jax.random.split(key)
    batch, height, width, channels = images.shape
    if flip:
        flipped = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
        images = jnp.where(flipped, images[:, :, ::-1, :], images)
    if max_shift > 0:
        padding = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
        padded = jnp.pad(images, padding, mode="edge")
        offsets = jax.random.randint(shift_key, (batch, 2), 0, 2 * max_shift + 1)
        crop = lambda image, offset: jax.lax.dynamic_slice(
            image, (offset[0], offset[1], 0), (height, width, channels)
        )
        images = jax.vmap(crop)(padded, offsets)
    return images


def make_train_step(
    config,
    train_state: train_state_lib.TrainState,
    mesh,
    num_classes: int,
    schedule: optax.Schedule,
    seen_classes: np.ndarray | None = None,
):
    """Return the jitted train step: (state, batch, embeddings, key) -> (state, metrics).

    With `seen_classes` (zero-shot training), the step receives the embeddings of
    those classes only, and the label columns of the other classes are dropped.
    """
    graphdef = train_state.graphdef

    def train_step(state, batch, class_embeddings, key):
        model, optimizer = nnx.merge(graphdef, state)
        step = optimizer.step[...]
        step_key = jax.random.fold_in(key, step)
        images = augment(
            batch["image"], step_key, flip=config.augment_flip, max_shift=config.augment_max_shift
        )
        if batch["label"].ndim == 1:
            labels = jax.nn.one_hot(batch["label"], num_classes)
        else:  # Multi-label data comes as multi-hot rows.
            labels = batch["label"]
        if seen_classes is not None:
            labels = labels[:, seen_classes]

        def loss_fn(model):
            codes, prototypes = model(images, class_embeddings)
            return losses.method_loss(config, codes, prototypes, labels)

        (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        metrics = {
            "loss": loss,
            **terms,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(step),
        }
        return nnx.state((model, optimizer)), metrics

    replicated = sharding.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(train_state.sharding, sharding.batch_sharded(mesh), replicated, replicated),
        out_shardings=(train_state.sharding, replicated),
        donate_argnums=(0,),
    )


def memory_per_device(compiled) -> dict[str, int] | None:
    """Return the bytes per device of a compiled step from XLA's memory analysis.

    Keys: arguments (state, batch, embeddings), outputs, aliased (outputs that
    reuse donated argument buffers), temporaries, and total. The total is
    arguments + outputs - aliased + temporaries, as if all buffers were live at
    once, so it bounds the peak from above. xla_peak is XLA's own estimate, 0
    where the backend leaves it out; the CPU backend counts only arguments in it.
    Returns None when the backend gives no analysis.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    sizes = {
        "arguments": analysis.argument_size_in_bytes,
        "outputs": analysis.output_size_in_bytes,
        "aliased": analysis.alias_size_in_bytes,
        "temporaries": analysis.temp_size_in_bytes,
        "xla_peak": getattr(analysis, "peak_memory_in_bytes", 0),
    }
    sizes["total"] = sizes["arguments"] + sizes["outputs"] - sizes["aliased"] + sizes["temporaries"]
    return {name: int(value) for name, value in sizes.items()}


def log_memory_per_device(compiled):
    sizes = memory_per_device(compiled)
    if sizes is None:
        logging.info("XLA gives no memory analysis of the train step on this backend.")
        return
    logging.info(
        "Train step memory per device (XLA compiled memory analysis): %.1f MiB in all; "
        "arguments %.1f MiB (state, batch, class embeddings), outputs %.1f MiB, "
        "of which %.1f MiB reuse donated buffers, temporaries %.1f MiB.",
        *(
            sizes[name] / 2**20
            for name in ("total", "arguments", "outputs", "aliased", "temporaries")
        ),
    )


def _check_finite(metrics: dict, first_step: int, last_step: int):
    for name, value in metrics.items():
        if not np.isfinite(value):
            raise FloatingPointError(
                f"{name} is {value} in steps {first_step}..{last_step}. Lower "
                "--config.optimizer.learning_rate or check the input data; the "
                f"checkpoints saved before step {first_step} are kept."
            )


class MetricAccumulator:
    """Sum of per-step metrics since the last report, read back lazily."""

    def __init__(self):
        self._values: list[dict] = []
        self.first_step: int | None = None

    def add(self, step: int, metrics: dict):
        if self.first_step is None:
            self.first_step = step
        self._values.append(metrics)

    def pending(self) -> bool:
        return bool(self._values)

    def flush(self) -> dict:
        """Return means over the accumulated steps and reset."""
        stacked = jax.device_get(self._values)
        means = {name: float(np.mean([values[name] for values in stacked])) for name in stacked[0]}
        self._values = []
        self.first_step = None
        return means


def _hparams(config) -> dict:
    """Return the config fields as hyperparameters, with sequences and None as strings."""
    return {
        key: str(value) if isinstance(value, (tuple, list)) or value is None else value
        for key, value in config_defaults.flat_fields(config).items()
    }


def eval_scalars(results: dict) -> dict[str, float]:
    """Return the float metrics of an evaluation as summary names, zero-shot groups included."""
    groups = {"eval": dict(results["metrics"])}
    groups["eval"]["nearest_prototype_accuracy"] = results["classification"][
        "nearest_prototype_accuracy"
    ]
    zero_shot = results.get("zero_shot")
    if zero_shot:
        groups["eval/unseen_queries"] = zero_shot["unseen_queries"] or {}
        groups["eval/seen_queries"] = zero_shot["seen_queries"] or {}
        groups["eval/zero_shot_accuracy"] = zero_shot["classification"]
    return {
        f"{prefix}/{name}": value
        for prefix, metrics in groups.items()
        for name, value in metrics.items()
        if isinstance(value, float)
    }


def train_and_evaluate(config, workdir: str) -> dict:
    """Train SemanticHash in `workdir`, resuming from its latest checkpoint.

    Returns the evaluation results of the final state (also written to
    `workdir/eval/results.json`).
    """
    logging.info("Starting training in %s.", workdir)
    setup = run_setup.prepare_run(config, workdir, create_split=True)
    mesh = setup.mesh
    num_classes = len(setup.class_names)
    embedding_dim = setup.class_embeddings.shape[1]

    source = input_pipeline.PoolSource(
        setup.builder,
        setup.split.splits,
        setup.split.split_sizes,
        setup.split.train_ids,
        labels=setup.split.labels,
    )
    if config.cache_train_images:
        source = input_pipeline.InMemorySource(source)
    train_iter = input_pipeline.train_iterator(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        mean=config.mean,
        std=config.std,
        transform=preprocessing.train_transform(config),
        worker_count=config.data_workers,
        process_rows=sharding.process_rows(mesh, config.batch_size),
    )

    schedule = train_state_lib.make_schedule(config)
    train_state = train_state_lib.create_train_state(
        config,
        mesh,
        embedding_dim=embedding_dim,
        schedule=schedule,
        num_classes=int(setup.seen.sum()),
    )
    checkpointer = checkpointing.Checkpointer(
        workdir,
        fingerprint=checkpointing.config_fingerprint(config, embedding_dim, num_classes),
        config=config,
        max_to_keep=config.max_checkpoints_to_keep,
    )
    initial_step = checkpointer.latest_step() or 0
    if initial_step:
        train_state.state = checkpointer.restore(initial_step, train_state.state, train_iter)
        logging.info("Resuming from step %d.", initial_step)
    elif config.model.pretrained:
        train_state.state = train_state_lib.load_pretrained_backbone(train_state, config)
        logging.info("Loaded pretrained backbone weights from %s.", config.model.pretrained)

    seen_classes = None if setup.seen.all() else setup.seen_classes
    train_step = make_train_step(config, train_state, mesh, num_classes, schedule, seen_classes)
    replicated = sharding.replicated(mesh)
    class_embeddings = sharding.put(
        np.asarray(setup.class_embeddings[setup.seen], np.float32), replicated
    )
    key = jax.jit(lambda: jax.random.key(config.seed + 1), out_shardings=replicated)()

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if initial_step == 0:
        writer.write_hparams(_hparams(config))
    if initial_step >= config.num_train_steps:
        logging.info("Training already finished at step %d; evaluating only.", initial_step)
    else:
        logging.info("Training steps %d..%d.", initial_step + 1, config.num_train_steps)
        timing = _train_loop(
            config,
            initial_step,
            train_step=train_step,
            train_state=train_state,
            train_iter=train_iter,
            mesh=mesh,
            class_embeddings=class_embeddings,
            key=key,
            checkpointer=checkpointer,
            writer=writer,
        )
        if jax.process_index() == 0:
            write_training_time(workdir, timing)
    writer.flush()

    logging.info("Evaluating the state of step %d.", config.num_train_steps)
    results = evaluation.evaluate_state(
        config,
        workdir,
        step=config.num_train_steps,
        setup=setup,
        graphdef=train_state.graphdef,
        state=train_state.state,
    )
    writer.write_scalars(config.num_train_steps, eval_scalars(results))
    writer.close()
    checkpointer.close()
    return results


class TrainingTimer:
    """Wall time of a training segment, and its images/s after the first step.

    The first step includes compilation, so the rate counts the steps after it.
    """

    def __init__(self, batch_size: int):
        self._batch_size = batch_size
        self._start = time.perf_counter()
        self._after_first: float | None = None

    def first_step_done(self):
        self._after_first = time.perf_counter()

    def finish(self, initial_step: int, last_step: int) -> dict:
        end = time.perf_counter()
        later_steps = last_step - initial_step - 1
        rate = None
        if self._after_first is not None and later_steps > 0:
            rate = later_steps * self._batch_size / max(end - self._after_first, 1e-9)
        return {
            "first_step": initial_step + 1,
            "last_step": last_step,
            "seconds": end - self._start,
            "images_per_second": rate,
        }


def write_training_time(workdir, segment: dict):
    """Add one training segment to workdir/training_time.json (resumed runs have several)."""
    path = pathlib.Path(workdir) / TRAINING_TIME_FILE
    segments = []
    if path.is_file():
        try:
            segments = json.loads(path.read_text())["segments"]
        except (ValueError, KeyError, TypeError):
            logging.warning("Ignoring the unreadable %s; starting it again.", path)
    segments = [s for s in segments if s["last_step"] < segment["first_step"]] + [segment]
    atomic_files.write_json(path, {"segments": segments})


def _train_loop(
    config,
    initial_step: int,
    *,
    train_step,
    train_state,
    train_iter,
    mesh,
    class_embeddings,
    key,
    checkpointer: checkpointing.Checkpointer,
    writer,
):
    """Run steps initial_step + 1 .. num_train_steps with logging and checkpoints.

    On a preemption notice, saves the current step and raises `preemption.Preempted`.
    On any error, finishes the checkpoint saves in flight before re-raising.
    """
    report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)
    accumulator = MetricAccumulator()
    watch = preemption.PreemptionWatch()

    def report_metrics(step):
        first = accumulator.first_step
        means = accumulator.flush()
        _check_finite(means, first, step)
        writer.write_scalars(step, means)

    step = initial_step
    compiled_step = None
    timer = TrainingTimer(config.batch_size)
    try:
        for step in range(initial_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = sharding.global_batch(next(train_iter), mesh)
                if compiled_step is None:
                    # Compiled ahead of the first call, to report memory before it runs.
                    compiled_step = train_step.lower(
                        train_state.state, batch, class_embeddings, key
                    ).compile()
                    log_memory_per_device(compiled_step)
                train_state.state, metrics = compiled_step(
                    train_state.state, batch, class_embeddings, key
                )
            if step == initial_step + 1:
                jax.block_until_ready(metrics)
                timer.first_step_done()
            accumulator.add(step, metrics)
            report(step)
            is_last = step == config.num_train_steps
            preempted = watch.reached(step)
            save = step % config.checkpoint_every_steps == 0 or is_last or preempted
            # Metrics are checked for NaN before every save, so no NaN state is saved.
            if step % config.log_every_steps == 0 or (save and accumulator.pending()):
                report_metrics(step)
            if save:
                with report.timed("checkpoint"):
                    checkpointer.save(step, train_state.state, train_iter)
            if preempted and not is_last:
                checkpointer.wait()
                raise preemption.Preempted(step)
    except BaseException as e:
        # Finish the saves already started, so that an interrupted run keeps
        # every checkpoint it wrote before the error.
        log = logging.warning if isinstance(e, preemption.Preempted) else logging.error
        log(
            "Training stopped at step %d by %s. Finishing checkpoint saves in flight.",
            step,
            type(e).__name__,
        )
        if not isinstance(e, preemption.Preempted):
            logging.error("%s", e)
        checkpointer.close()
        writer.close()
        raise
    finally:
        watch.close()
    checkpointer.wait()
    timing = timer.finish(initial_step, config.num_train_steps)
    logging.info(
        "Finished training at step %d: %.1f s for steps %d..%d, %.1f images/s after the first.",
        config.num_train_steps,
        timing["seconds"],
        initial_step + 1,
        config.num_train_steps,
        timing["images_per_second"] or 0.0,
    )
    return timing
