"""Train SemanticHash, then evaluate the final checkpoint.

  python -m semhash_jax.main --config=configs/fashion_mnist.py --workdir=DIR

Any config field can be overridden, e.g. --config.bits=64.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Import after flag parsing so that --help stays fast.
    from semhash_jax import platform

    platform.quiet_library_logs()
    import jax
    from semhash_jax import evaluation, train

    platform.hide_accelerators_from_tensorflow()
    logging.info(
        "JAX process %d of %d; local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
    from semhash_jax import input_errors

    results = input_errors.run(train.train_and_evaluate, FLAGS.config, FLAGS.workdir)
    print(evaluation.format_results(results))
    print(f"Results written to {FLAGS.workdir}/eval/results.json")


if __name__ == "__main__":
    app.run(main)
