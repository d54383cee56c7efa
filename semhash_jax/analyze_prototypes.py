"""Analyse the class prototypes of an evaluated workdir.

  python -m semhash_jax.analyze_prototypes --workdir=DIR [--output_dir=DIR/eval]
      [--center_embeddings]

Reads DIR/eval/prototypes.npz, database.npz and class_embeddings.npz, which
`python -m semhash_jax.evaluate` writes. Prints a summary, and writes
prototype_analysis.json and prototype_heatmap.png to the output folder. Without
class_embeddings.npz the comparison with the text embeddings is skipped.
"""

import dataclasses
import pathlib

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of an evaluated training run.")
flags.DEFINE_string(
    "output_dir", None, "Folder for prototype_analysis.json and the heatmap; DIR/eval if unset."
)
flags.DEFINE_boolean(
    "center_embeddings",
    False,
    "Subtract the mean that training subtracted from the class embeddings (the mean of the "
    "seen classes with config.text.center, stored as 'text_mean' in class_embeddings.npz) "
    "before computing cosine similarities.",
)
flags.mark_flags_as_required(["workdir"])

# The folder of a workdir that semhash_jax.evaluation writes its code files to.
EVAL_DIR = "eval"
REPORT_NAME = "prototype_analysis.json"
HEATMAP_NAME = "prototype_heatmap.png"


def read_inputs(workdir, center_embeddings: bool = False):
    """Read and check the eval files of `workdir`, and return (prototypes, database, text).

    `text` is the ClassEmbeddings of class_embeddings.npz, or None when that file is
    missing. Its `text_mean` is None unless `center_embeddings` is set.

    Errors raised here are input errors (see `input_errors`).
    """
    from semhash_jax import input_errors
    from semhash_jax.retrieval import code_files, prototype_analysis

    workdir = pathlib.Path(workdir)
    eval_dir = workdir / EVAL_DIR
    with input_errors.tagged():
        if not workdir.is_dir():
            raise FileNotFoundError(f"workdir {workdir} not found. Pass the workdir of a run.")
        for name in ("prototypes.npz", "database.npz"):
            if not (eval_dir / name).is_file():
                raise FileNotFoundError(
                    f"{eval_dir / name} not found. Run python -m semhash_jax.evaluate "
                    f"--config=CONFIG --workdir={workdir} first."
                )
        prototypes = code_files.read_code_file(eval_dir / "prototypes.npz")
        database = code_files.read_code_file(eval_dir / "database.npz")
        text = None
        if (eval_dir / "class_embeddings.npz").is_file():
            text = prototype_analysis.read_class_embeddings(eval_dir / "class_embeddings.npz")
        if text is not None and not center_embeddings:
            text = dataclasses.replace(text, text_mean=None)
        elif text is not None and text.text_mean is None:
            raise ValueError(
                f"--center_embeddings needs the array 'text_mean' in "
                f"{eval_dir / 'class_embeddings.npz'}, but it is missing or empty because the "
                "run was trained without config.text.center. Run without --center_embeddings."
            )
        try:
            if text is None:
                prototype_analysis.check_inputs(prototypes, database)
            else:
                prototype_analysis.check_inputs(
                    prototypes, database, text.embeddings, text.class_names, text.seen
                )
                prototype_analysis.cosine_similarity(text.embeddings, mean=text.text_mean)
        except ValueError as error:
            raise ValueError(f"{error} (files in {eval_dir})") from error
    return prototypes, database, text


def analyze_workdir(workdir, output_dir=None, *, center_embeddings: bool = False):
    """Analyse the prototypes of `workdir` and write the report and heatmap.

    Returns (report, report path, heatmap path).
    """
    from semhash_jax import atomic_files
    from semhash_jax.retrieval import prototype_analysis

    eval_dir = pathlib.Path(workdir) / EVAL_DIR
    output_dir = pathlib.Path(output_dir) if output_dir else eval_dir
    prototypes, database, text = read_inputs(workdir, center_embeddings)

    if text is None:
        skipped_reason = (
            f"{eval_dir / 'class_embeddings.npz'} not found. Evaluations before this file "
            "existed do not write it; run python -m semhash_jax.evaluate again to get it."
        )
        logging.warning("Skipping the comparison with the text embeddings: %s", skipped_reason)
        report = prototype_analysis.analyze(prototypes, database)
        report["text"]["skipped_reason"] = skipped_reason
        seen, cosine = None, None
    else:
        report = prototype_analysis.analyze(
            prototypes,
            database,
            text.embeddings,
            text.class_names,
            text.seen,
            text_mean=text.text_mean,
        )
        seen = text.seen
        cosine = prototype_analysis.cosine_similarity(text.embeddings, mean=text.text_mean)
    report["files"] = {
        "prototypes": str(eval_dir / "prototypes.npz"),
        "database": str(eval_dir / "database.npz"),
        "class_embeddings": None if text is None else str(eval_dir / "class_embeddings.npz"),
    }

    output_dir.mkdir(parents=True, exist_ok=True)
    report_path = output_dir / REPORT_NAME
    atomic_files.write_json(report_path, report)
    hamming = prototype_analysis.pairwise_hamming(prototype_analysis.code_bits(prototypes))
    correlation = report["rank_correlation"]
    heatmap_path = prototype_analysis.write_heatmaps(
        output_dir / HEATMAP_NAME,
        hamming,
        report["class_names"],
        bits=report["bits"],
        cosine=cosine,
        seen=seen,
        rho=None if correlation is None else correlation["spearman_rho"],
    )
    logging.info("Wrote %s and %s.", report_path, heatmap_path)
    return report, report_path, heatmap_path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from semhash_jax import input_errors
    from semhash_jax.retrieval import prototype_analysis

    report, report_path, heatmap_path = input_errors.run(
        analyze_workdir,
        FLAGS.workdir,
        FLAGS.output_dir,
        center_embeddings=FLAGS.center_embeddings,
    )
    print(prototype_analysis.format_summary(report))
    print(f"Report written to {report_path}")
    print(f"Heatmap written to {heatmap_path}")


if __name__ == "__main__":
    app.run(main)
