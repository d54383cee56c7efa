"""Run a config file's grid of runs (methods x bits x seeds, or one option at a time).

  python -m semhash_jax.sweep --config=configs/fashion_mnist.py --sweep=methods --workdir=DIR

The config file's `sweep(name, arg)` lists the runs; `arg` is the variant given
after the colon in --config. Overrides on the command line (--config.num_train_steps=...)
apply to every run. Finished runs are skipped, interrupted ones resume. The table of
mAP@K, tie-aware mAP@K, precision within Hamming radius r, training time and images/s
(mean ± std over seeds) goes to DIR/<sweep>.md and DIR/<sweep>.csv, or with a variant
to DIR/<sweep>_<variant>.md and .csv (e.g. loss_schedule=deephash,bits=16.md). Beside
them, <sweep>_runs.json lists the planned runs (written at the start) and
<sweep>_runs.csv has one row of metrics per run.

Exit status:
  2    an invalid flag, config variant or config override.
  1    other bad input (an unknown sweep, missing data), or a failed run (the
       other runs still run).
  143  preemption.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from semhash_jax import platform

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(platform)
config_flags.DEFINE_config_file("config", None, "Base configuration file.", lock_config=True)
flags.DEFINE_string("sweep", None, "Name of a grid in the config file's sweep() function.")
flags.DEFINE_string("workdir", None, "Folder for the runs and the tables.")
flags.mark_flags_as_required(["config", "sweep", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    platform.quiet_library_logs()
    platform.restart_with_tcmalloc()
    platform.configure_xla_cpu()
    platform.initialize_distributed_from_flags()
    from semhash_jax import input_errors, preemption, sweep_runner

    platform.hide_accelerators_from_tensorflow()
    path, _, arg = config_flags.get_config_filename(FLAGS["config"]).partition(":")

    def list_runs():
        with input_errors.tagged():
            return sweep_runner.load_sweep_function(path)(FLAGS.sweep, arg or None)

    entries = input_errors.run(list_runs)
    try:
        records, markdown = input_errors.run(
            sweep_runner.run_sweep,
            FLAGS.config,
            entries,
            FLAGS.workdir,
            FLAGS.sweep,
            table=sweep_runner.table_name(FLAGS.sweep, arg),
        )
    except preemption.Preempted as e:
        logging.warning("%s", e)
        raise SystemExit(preemption.EXIT_CODE) from None
    print(markdown)
    bad = sweep_runner.failed(records)
    if bad:
        logging.error("%d run(s) failed: %s", len(bad), ", ".join(bad))
        raise SystemExit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=platform.parse_flags)
