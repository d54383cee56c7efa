"""Retrieval metrics for binary codes from any toolkit.

  python -m semhash_jax.evaluate_codes --query=Q.npz --database=D.npz
      [--top_k=K] [--radius=R] [--nopr_curve] [--out=results.json] [--plots=DIR]

Each .npz file contains `codes` and `labels` (see semhash_jax.retrieval.code_files for
the accepted forms). Prints the metrics and, with --out, writes them with the curves
as JSON; with --plots, writes the curves as PNG files.
"""

import pathlib
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("query", None, "Code file (.npz) of the queries.")
flags.DEFINE_string("database", None, "Code file (.npz) of the database.")
flags.DEFINE_integer(
    "top_k", None, "Number of ranked database items K for mAP@K; the whole database if unset."
)
flags.DEFINE_integer("radius", 2, "Hamming radius r for precision and recall within radius r.")
flags.DEFINE_boolean("pr_curve", True, "Compute the precision-recall curve over all Hamming radii.")
flags.DEFINE_string("out", None, "Path of a JSON file for the metrics and curves.")
flags.DEFINE_string("plots", None, "Folder for PNG plots of the curves.")
flags.mark_flags_as_required(["query", "database"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from semhash_jax import platform

    platform.quiet_library_logs()
    platform.restart_with_tcmalloc()
    platform.configure_xla_cpu()
    from semhash_jax import atomic_files
    from semhash_jax.retrieval import code_files, metrics

    # Errors in the inputs end the program with one line, without a traceback.
    try:
        query = code_files.read_code_file(FLAGS.query)
        database = code_files.read_code_file(FLAGS.database)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"Error: {error}") from error
    if query.bits != database.bits:
        raise SystemExit(
            f"Error: {FLAGS.query} has {query.bits}-bit codes but {FLAGS.database} has "
            f"{database.bits}-bit codes. Both sets must come from the same model."
        )
    if FLAGS.top_k is not None and FLAGS.top_k < 1:
        raise SystemExit(f"Error: --top_k={FLAGS.top_k} must be at least 1, or unset for all.")
    if not 0 <= FLAGS.radius <= query.bits:
        raise SystemExit(
            f"Error: --radius={FLAGS.radius} must be in [0, {query.bits}] for these "
            f"{query.bits}-bit codes."
        )
    logging.info(
        "Evaluating %d queries against %d database items, %d bits.",
        len(query),
        len(database),
        query.bits,
    )
    try:
        results = metrics.retrieval_metrics(
            query.packed,
            query.labels,
            database.packed,
            database.labels,
            bits=query.bits,
            top_k=FLAGS.top_k,
            radius=FLAGS.radius,
            pr_curve=FLAGS.pr_curve,
        )
    except ValueError as error:
        # Label errors name query_labels and database_labels, so add the files they came from.
        raise SystemExit(
            f"Error: {error} (query labels from {FLAGS.query}, database labels from "
            f"{FLAGS.database})"
        ) from error
    results["query_file"] = FLAGS.query
    results["database_file"] = FLAGS.database
    header = [
        ("queries / database", f"{results['num_queries']} / {results['num_database']}"),
        ("bits", results["bits"]),
    ]
    print(metrics.format_table(header, results))
    if results["metrics"]["queries_without_relevant"] == results["num_queries"]:
        print(
            "Warning: no query shares a label with any database item, so every mean is "
            f"NaN. Check that {FLAGS.query} and {FLAGS.database} use the same class ids.",
            file=sys.stderr,
        )

    if FLAGS.out:
        pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_files.write_json(FLAGS.out, results)
        print(f"Metrics written to {FLAGS.out}")
    if FLAGS.plots:
        from semhash_jax.retrieval import plots

        for path in plots.write_curve_plots(results, FLAGS.plots):
            print(f"Plot written to {path}")


if __name__ == "__main__":
    app.run(main)
