"""Train SemanticHash, then evaluate the final checkpoint.

  python -m semhash_jax.main --config=configs/fashion_mnist.py --workdir=DIR

Any config field can be overridden, e.g. --config.bits=64.

Several hosts: start the same command on every host. Under SLURM and Open MPI
the processes find each other; on Cloud TPU VMs add --distributed=on; elsewhere
add --coordinator_address=HOST:PORT --num_processes=N --process_id=I. The
workdir must be a folder that every host can read and write. See docs/scaling.md.

Exits with status 143 after saving a checkpoint on SIGTERM (preemption); the
same command resumes.
"""

from absl import app, flags, logging
from ml_collections import config_flags

# Defines the multi-process flags (--distributed, --coordinator_address, ...).
from semhash_jax import platform

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(platform)  # List the multi-process flags in --help.
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    platform.quiet_library_logs()
    platform.restart_with_tcmalloc()
    platform.configure_xla_cpu()
    platform.initialize_distributed_from_flags()
    # Imported after flag parsing so that --help stays fast.
    import jax

    from semhash_jax import evaluation, preemption, train

    platform.hide_accelerators_from_tensorflow()
    logging.info(
        "JAX process %d of %d; local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
    from semhash_jax import input_errors

    try:
        results = input_errors.run(train.train_and_evaluate, FLAGS.config, FLAGS.workdir)
    except preemption.Preempted as e:
        logging.warning("%s", e)
        print(e)
        raise SystemExit(preemption.EXIT_CODE) from None
    if jax.process_index() > 0:
        return
    print(evaluation.format_results(results))
    print(f"Results written to {FLAGS.workdir}/eval/results.json")


if __name__ == "__main__":
    app.run(main, flags_parser=platform.parse_flags)
