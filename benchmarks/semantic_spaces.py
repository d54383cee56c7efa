r"""Which semantic space makes the best prototypes? Text against two controls.

Trains SemanticHash on Fashion-MNIST with class names embedded by
all-MiniLM-L6-v2 ("minilm"), by one-hot vectors and by random Gaussian vectors,
with the same seeds, code length and number of steps, on two protocols:
  default    the 1,000-query protocol of configs/fashion_mnist.py (all classes trained);
  zero_shot  the same with "Shirt" and "Ankle boot" held out of training.
Reports mean +- sample standard deviation over seeds of mAP@all, and for the
zero-shot protocol of the unseen-class queries' mAP@all and nearest-prototype
accuracy among the unseen classes.

  .venv/bin/python benchmarks/semantic_spaces.py --workdir=/tmp/semantic_spaces

Runs whose results.json exists are not trained again, so an interrupted study
continues where it stopped. The table goes to <workdir>/semantic_spaces.md and
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACES = {
    "minilm": {"text.space": "bert"},
    "one_hot": {"text.space": "one_hot"},
    "random": {"text.space": "random"},
}
PROTOCOLS = {"default": "", "zero_shot": "zero_shot"}


def make_config(protocol: str, space: str, seed: int, args):
    from configs import fashion_mnist

    config = fashion_mnist.get_config(PROTOCOLS[protocol])
    config.unlock()
    for dotted, value in SPACES[space].items():
        section, field = dotted.split(".")
        config[section][field] = value
    config.seed = seed
    config.bits = args.bits
    config.num_train_steps = args.steps
    config.checkpoint_every_steps = args.steps
    if args.data_dir:
        config.data_dir = args.data_dir
    config.lock()
    return config


def run_one(protocol: str, space: str, seed: int, args) -> dict:
    from semhash_jax import train

    workdir = pathlib.Path(args.workdir) / protocol / space / f"seed{seed}"
    results_path = workdir / "eval" / "results.json"
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        if results["step"] == args.steps:
            print(f"{protocol}/{space}/seed{seed}: finished earlier, reusing {results_path}")
            return results
    start = time.perf_counter()
    results = train.train_and_evaluate(make_config(protocol, space, seed, args), str(workdir))
    results["wall_seconds"] = time.perf_counter() - start
    print(f"{protocol}/{space}/seed{seed}: {time.perf_counter() - start:.0f} s")
    return results


def prototype_geometry(workdir: pathlib.Path, text_embeddings: np.ndarray) -> dict:
    """Return Spearman's rho between prototype Hamming distances and MiniLM text
    distances, and the minimum pairwise prototype distance, of one run."""
    from semhash_jax.retrieval import code_files, prototype_analysis

    prototypes = code_files.read_code_file(workdir / "eval" / "prototypes.npz")
    hamming = prototype_analysis.pairwise_hamming(prototype_analysis.code_bits(prototypes))
    cosine = prototype_analysis.cosine_similarity(text_embeddings)
    rho = prototype_analysis.rank_correlation(hamming, cosine)["spearman_rho"]
    off_diagonal = hamming[~np.eye(len(hamming), dtype=bool)]
    return {"rho_text": float(rho), "min_hamming": int(off_diagonal.min())}


def class_name_query_map(workdir: pathlib.Path, class_names) -> float:
    """Return mAP@all of the prototypes of `class_names` used as queries against the database.

    Computed from the code files, so that runs evaluated before results.json
    recorded it are scored the same way.
    """
    from semhash_jax import evaluation
    from semhash_jax.retrieval import code_files

    database = code_files.read_code_file(workdir / "eval" / "database.npz")
    prototypes = code_files.read_code_file(workdir / "eval" / "prototypes.npz")
    names = [str(name) for name in prototypes.class_names]
    classes = [names.index(name) for name in class_names]
    scores = evaluation.text_query_scores(
        prototypes.packed,
        (database.packed, database.labels),
        classes,
        bits=database.bits,
        top_k=None,
        radius=2,
        mesh=None,
    )
    return scores["mAP@all"]


def scores(results: dict) -> dict:
    """Return the numbers of one run that the table reports."""
    row = {
        "mAP": results["metrics"]["mAP@all"],
        "tie_aware_mAP": results["metrics"]["tie_aware_mAP@all"],
        "accuracy": results["classification"]["nearest_prototype_accuracy"],
    }
    zero_shot = results.get("zero_shot")
    if zero_shot:
        row["unseen_mAP"] = zero_shot["unseen_queries"]["mAP@all"]
        row["unseen_tie_aware_mAP"] = zero_shot["unseen_queries"]["tie_aware_mAP@all"]
        row["seen_mAP"] = zero_shot["seen_queries"]["mAP@all"]
        row["zero_shot_accuracy"] = zero_shot["classification"]["unseen_among_unseen"]
        row["generalized_accuracy"] = zero_shot["classification"]["unseen_among_all"]
    return row


def minilm_embeddings(workdir: pathlib.Path) -> np.ndarray:
    """Return the MiniLM embeddings of the Fashion-MNIST class names, as the bert space makes them."""
    from configs import fashion_mnist
    from semhash_jax import run_setup
    from semhash_jax.datasets import class_names
    from semhash_jax.datasets import fashion_mnist as fashion_mnist_data

    config = fashion_mnist.get_config()
    names = class_names.for_dataset(None, fashion_mnist_data.CLASS_NAMES, 10)
    return run_setup.embed_class_names(names, config.text, workdir / "cache")


def mean_std(values) -> str:
    values = np.asarray(values, np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.4f} ± {std:.4f}"


def table(collected: dict, args) -> str:
    lines = [
        f"Fashion-MNIST, {args.bits} bits, {args.steps} steps of batch 128, seeds "
        f"{', '.join(map(str, args.seeds))}; mean ± sample std over seeds.",
        "",
        "| space | mAP@all (default) | nearest-prototype acc. (default) | "
        "unseen-query mAP@all (zero-shot) | unseen tie-aware mAP@all | seen-query mAP@all "
        "(zero-shot) | unseen class-name query mAP@all | zero-shot acc. (unseen among "
        "unseen) | unseen among all |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    geometry = [
        "",
        "Prototype geometry: Spearman's rho between the pairwise Hamming distances of the",
        "class prototypes and the cosine distances of the classes' MiniLM embeddings",
        "(45 class pairs), and the minimum pairwise prototype distance in bits.",
        "",
        "| space | rho (default) | min distance (default) | rho (zero-shot) "
        "| min distance (zero-shot) |",
        "|---|---|---|---|---|",
    ]
    for space in args.spaces:
        default = collected.get(("default", space), [])
        zero = collected.get(("zero_shot", space), [])

        def column(rows, key):
            return mean_std([row[key] for row in rows]) if rows else "-"

        lines.append(
            f"| {space} | {column(default, 'mAP')} | {column(default, 'accuracy')} | "
            f"{column(zero, 'unseen_mAP')} | {column(zero, 'unseen_tie_aware_mAP')} | "
            f"{column(zero, 'seen_mAP')} | {column(zero, 'unseen_name_query_mAP')} | "
            f"{column(zero, 'zero_shot_accuracy')} | "
            f"{column(zero, 'generalized_accuracy')} |"
        )
        geometry.append(
            f"| {space} | {column(default, 'rho_text')} | {column(default, 'min_hamming')} | "
            f"{column(zero, 'rho_text')} | {column(zero, 'min_hamming')} |"
        )
    return "\n".join(lines + geometry)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/semantic_spaces", help="Folder for all runs.")
    parser.add_argument("--steps", type=int, default=1000, help="Training steps per run.")
    parser.add_argument("--bits", type=int, default=32, help="Code length K.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Model seeds.")
    parser.add_argument(
        "--spaces", nargs="+", default=list(SPACES), choices=list(SPACES), help="Spaces to run."
    )
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's).")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    collected = {}
    text_embeddings = None
    for protocol in args.protocols:
        for space in args.spaces:
            for seed in args.seeds:
                results = run_one(protocol, space, seed, args)
                row = scores(results)
                workdir = pathlib.Path(args.workdir) / protocol / space / f"seed{seed}"
                unseen = results.get("zero_shot", {}).get("unseen_classes")
                if unseen:
                    row["unseen_name_query_mAP"] = class_name_query_map(workdir, unseen)
                if text_embeddings is None:
                    text_embeddings = minilm_embeddings(workdir)
                row.update(prototype_geometry(workdir, text_embeddings))
                collected.setdefault((protocol, space), []).append(row)
    text = table(collected, args)
    footer = (
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{time.strftime('%Y-%m-%d')}.\n"
    )
    output = pathlib.Path(args.workdir) / "semantic_spaces.md"
    output.write_text(text + "\n" + footer)
    (pathlib.Path(args.workdir) / "semantic_spaces.json").write_text(
        json.dumps({f"{p}/{s}": rows for (p, s), rows in collected.items()}, indent=1)
    )
    print(text)
    print(footer)
    print(f"Table written to {output}")


if __name__ == "__main__":
    main()
