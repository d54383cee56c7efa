"""Evaluate a checkpoint in its own process, on its own dataset or on another one.

  python -m semhash_jax.evaluate --config=configs/fashion_mnist.py --workdir=DIR [--step=N]

Reuses the protocol split saved in the workdir and writes DIR/eval/results.json.

Cross-dataset: encode the dataset of --config with the model trained in SOURCE;
results go to --workdir, by default SOURCE/transfer/<data>-<protocol>, where <data>
is the prepared data's TFDS name, config and version:

  python -m semhash_jax.evaluate --config=configs/cifar10.py --checkpoint_from=SOURCE
"""

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

# Defines the multi-process flags (--distributed, --coordinator_address, ...).
from semhash_jax import platform

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(platform)  # List the multi-process flags in --help.
config_flags.DEFINE_config_file(
    "config",
    None,
    "The config the workdir was trained with; with --checkpoint_from, the target dataset's config.",
    lock_config=True,
)
flags.DEFINE_string(
    "workdir", None, "Workdir of a training run; with --checkpoint_from, where results go."
)
flags.DEFINE_string(
    "checkpoint_from",
    None,
    "Workdir of a model trained on another dataset, to evaluate on the dataset of --config.",
)
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; the latest by default.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None and FLAGS.checkpoint_from is None:
        raise app.UsageError("Pass --workdir, or --checkpoint_from for a cross-dataset evaluation.")
    platform.quiet_library_logs()
    platform.restart_with_tcmalloc()
    platform.configure_xla_cpu()
    platform.initialize_distributed_from_flags()
    import jax

    from semhash_jax import cross_dataset, evaluation, input_errors

    platform.hide_accelerators_from_tensorflow()
    logging.info("JAX devices: %s", jax.devices())

    if FLAGS.checkpoint_from:
        results = input_errors.run(
            cross_dataset.evaluate_transfer,
            FLAGS.config,
            FLAGS.checkpoint_from,
            FLAGS.workdir,
            FLAGS.step,
        )
    else:
        results = input_errors.run(evaluation.evaluate, FLAGS.config, FLAGS.workdir, FLAGS.step)
    if jax.process_index() > 0:
        return
    print(evaluation.format_results(results))
    eval_dir = pathlib.Path(results["code_files"]["query"]).parent
    print(f"Results written to {eval_dir / 'results.json'}")


if __name__ == "__main__":
    app.run(main, flags_parser=platform.parse_flags)
