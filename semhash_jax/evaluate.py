"""Evaluate a checkpoint of a SemanticHash workdir in its own process.

  python -m semhash_jax.evaluate --config=configs/fashion_mnist.py --workdir=DIR [--step=N]

Reuses the protocol split saved in the workdir and writes DIR/eval/results.json.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "The config the workdir was trained with.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Workdir of a training run.")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; the latest by default.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from semhash_jax import platform

    platform.quiet_library_logs()
    import jax
    from semhash_jax import evaluation

    platform.hide_accelerators_from_tensorflow()
    logging.info("JAX devices: %s", jax.devices())
    from semhash_jax import input_errors

    results = input_errors.run(evaluation.evaluate, FLAGS.config, FLAGS.workdir, FLAGS.step)
    print(evaluation.format_results(results))
    print(f"Results written to {FLAGS.workdir}/eval/results.json")


if __name__ == "__main__":
    app.run(main)
