"""Search the database of an evaluation by a text or an image.

  python -m semhash_jax.search --workdir=DIR --text="ankle boot"
  python -m semhash_jax.search --workdir=DIR --image=query.png --top_k=20 --plots

A text is encoded like a class name (prompt templates, semantic space, semantic
hash network), so any text works, including names of classes never trained on.
An image is encoded by the visual hash network. The query's code is ranked
against the database codes in DIR/eval/database.npz by Hamming distance, ties
broken by database index. Prints the top-k items (database id, Hamming distance,
labels) and the nearest class prototypes; --plots writes a PNG grid of the query
and its results to DIR/eval/search/.
"""

import pathlib

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir with an evaluation (DIR/eval/results.json).")
flags.DEFINE_string("text", None, "Text query, e.g. a class name.")
flags.DEFINE_string("image", None, "Path of an image file to use as the query.")
flags.DEFINE_integer("top_k", 10, "Number of database items to return.")
flags.DEFINE_integer("top_classes", 3, "Number of nearest class prototypes to print.")
flags.DEFINE_bool("plots", False, "Write a PNG grid of the query and its results.")
flags.DEFINE_string("output", None, "Also write the results as JSON to this file.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if (FLAGS.text is None) == (FLAGS.image is None):
        raise app.UsageError("Pass exactly one of --text and --image.")
    if FLAGS.top_k < 1 or FLAGS.top_classes < 0:
        raise app.UsageError("--top_k must be at least 1 and --top_classes at least 0.")
    from semhash_jax import platform

    platform.quiet_library_logs()
    platform.restart_with_tcmalloc()
    platform.configure_xla_cpu()
    from semhash_jax import input_errors, searching

    platform.hide_accelerators_from_tensorflow()
    result = input_errors.run(
        searching.search,
        FLAGS.workdir,
        text=FLAGS.text,
        image=FLAGS.image,
        top_k=FLAGS.top_k,
        top_classes=FLAGS.top_classes,
        write_plots=FLAGS.plots,
    )
    print(searching.format_result(result))
    if FLAGS.output:
        from semhash_jax import atomic_files

        atomic_files.write_json(pathlib.Path(FLAGS.output), result)
        print(f"Results written to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
