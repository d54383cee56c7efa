"""Zero-shot protocol: held-out classes never trained on, prototypes from their names."""

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import fashion_mnist
from semhash_jax import input_pipeline, preprocessing, run_setup
from semhash_jax.datasets import class_names, protocols
from semhash_jax.retrieval import classification
from tests.test_end_to_end import ROOT, run_binary

CONFIG = (
    str(ROOT / "configs" / "fashion_mnist.py") + ":protocol=train_test_split,zero_shot,runlocal"
)
# Fashion-MNIST label ids of the zero_shot variant's held-out classes.
SHIRT, ANKLE_BOOT = 6, 9


@pytest.fixture(scope="module")
def data_dir(zero_shot_data_dir):
    return zero_shot_data_dir


def zero_shot_config(data_dir):
    config = fashion_mnist.get_config("protocol=train_test_split,zero_shot,runlocal")
    config.unlock()
    config.data_dir = data_dir
    config.lock()
    return config


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("zero_shot_setup")
    return run_setup.prepare_run(zero_shot_config(data_dir), workdir, create_split=True)


NAMES = class_names.ClassNames(
    keys=("0", "1", "2"), names=(("tench", "Tinca tinca"), ("goldfish",), ("crane",)), source="test"
)


def test_unseen_classes_match_any_name_ignoring_case():
    unseen = run_setup.find_unseen_classes(("tinca TINCA", "crane"), NAMES)
    np.testing.assert_array_equal(unseen, [True, False, True])


def test_unknown_unseen_class_raises_with_names():
    with pytest.raises(ValueError, match="'shark'.*tench, goldfish, crane"):
        run_setup.find_unseen_classes(("shark",), NAMES)


def test_all_classes_unseen_raises():
    with pytest.raises(ValueError, match="every class"):
        run_setup.find_unseen_classes(("tench", "goldfish", "crane"), NAMES)


def test_class_named_twice_raises():
    with pytest.raises(ValueError, match="twice"):
        run_setup.find_unseen_classes(("tench", "Tinca tinca"), NAMES)


def test_without_classes_multi_label():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], np.uint8)
    split = protocols.Split(
        protocol="p",
        dataset="d",
        seed=0,
        splits=("train",),
        split_sizes=(4,),
        train_ids=np.array([0, 1, 2, 3]),
        query_ids=np.array([0]),
        database_ids=np.array([1, 2, 3]),
        labels=labels,
    )
    # Rows 1 and 3 carry class 1: both leave the training set, queries and database stay.
    result = protocols.without_classes(split, [1])
    np.testing.assert_array_equal(result.train_ids, [0, 2])
    np.testing.assert_array_equal(result.database_ids, [1, 2, 3])


def test_split_has_no_unseen_training_ids(setup):
    train_labels = setup.split.labels[setup.split.train_ids]
    assert not np.isin(train_labels, [SHIRT, ANKLE_BOOT]).any()
    assert len(train_labels) > 0


def test_split_keeps_unseen_queries_and_database(setup):
    assert np.isin(setup.split.labels[setup.split.query_ids], [SHIRT, ANKLE_BOOT]).any()
    assert np.isin(setup.split.labels[setup.split.database_ids], [SHIRT, ANKLE_BOOT]).any()


def test_training_batches_have_no_unseen_images(data_dir, setup):
    config = zero_shot_config(data_dir)
    source = input_pipeline.PoolSource(
        setup.builder,
        setup.split.splits,
        setup.split.split_sizes,
        setup.split.train_ids,
        labels=setup.split.labels,
    )
    iterator = input_pipeline.train_iterator(
        source,
        global_batch_size=config.batch_size,
        seed=0,
        mean=config.mean,
        std=config.std,
        transform=preprocessing.train_transform(config),
    )
    # 30 batches of 32 cover the ~320 training images about three times.
    labels = np.concatenate([next(iterator)["label"] for _ in range(30)])
    assert not np.isin(labels, [SHIRT, ANKLE_BOOT]).any()


def test_seen_mask_marks_held_out_classes(setup):
    expected = np.ones(10, bool)
    expected[[SHIRT, ANKLE_BOOT]] = False
    np.testing.assert_array_equal(setup.seen, expected)


def test_text_mean_uses_seen_classes_only(setup):
    seen_rows = setup.raw_embeddings[[0, 1, 2, 3, 4, 5, 7, 8]]
    np.testing.assert_allclose(setup.text_mean, seen_rows.mean(axis=0), rtol=1e-6)


def test_network_inputs_are_centred_by_seen_mean(setup):
    shifted = setup.raw_embeddings.astype(np.float64) - setup.text_mean
    expected = shifted / np.linalg.norm(shifted, axis=1, keepdims=True)
    np.testing.assert_allclose(setup.class_embeddings, expected, atol=1e-6)


def test_accuracy_counts_ties_as_fractions():
    prototypes = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], bool)
    queries = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]], bool)
    # Query 0 is at distance 1 from classes 0 and 1: a tie, half right for label 1.
    # Query 1 is nearest to class 1 (distance 1), label 2: wrong. Query 2: exact, right.
    accuracy = classification.nearest_prototype_accuracy(queries, np.array([1, 2, 2]), prototypes)
    assert accuracy == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def test_accuracy_among_candidates_only():
    prototypes = np.array([[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]], bool)
    queries = np.array([[1, 1, 1, 0]], bool)
    labels = np.array([2])
    # Distances 3, 0 and 1: class 1 wins among all, class 2 among classes 0 and 2.
    among_all = classification.nearest_prototype_accuracy(queries, labels, prototypes)
    among_two = classification.nearest_prototype_accuracy(
        queries, labels, prototypes, candidates=[0, 2]
    )
    assert among_all == 0.0
    assert among_two == 1.0


def test_accuracy_multi_label_any_positive():
    prototypes = np.array([[0, 0], [1, 1]], bool)
    queries = np.array([[1, 1], [0, 0]], bool)
    labels = np.array([[1, 1], [0, 1]], np.uint8)
    accuracy = classification.nearest_prototype_accuracy(queries, labels, prototypes)
    assert accuracy == 0.5


@pytest.fixture(scope="module")
def trained(zero_shot_run):
    return zero_shot_run


@pytest.mark.slow
def test_results_report_unseen_queries(trained):
    workdir, stdout = trained
    results = json.loads((workdir / "eval" / "results.json").read_text())
    zero_shot = results["zero_shot"]
    assert zero_shot["unseen_classes"] == ["Shirt", "Ankle boot"]
    with np.load(workdir / "eval" / "query.npz") as query:
        expected_unseen = int(np.isin(query["labels"], [SHIRT, ANKLE_BOOT]).sum())
    assert zero_shot["num_unseen_queries"] == expected_unseen
    assert zero_shot["num_seen_queries"] == results["protocol"]["num_query"] - expected_unseen
    assert 0.0 <= zero_shot["unseen_queries"]["mAP@all"] <= 1.0
    assert 0.0 <= zero_shot["seen_queries"]["tie_aware_mAP@all"] <= 1.0
    assert set(zero_shot["classification"]) == {
        "unseen_among_unseen",
        "unseen_among_all",
        "seen_among_all",
    }
    assert "unseen-class queries mAP@all" in stdout


@pytest.mark.slow
def test_unseen_prototypes_come_from_text(trained):
    workdir, _ = trained
    with np.load(workdir / "eval" / "class_embeddings.npz") as stored:
        raw = stored["embeddings"].astype(np.float64)
        seen = stored["seen"]
    with np.load(workdir / "eval" / "prototypes.npz") as stored:
        bits = np.unpackbits(stored["codes"], axis=1)[:, : int(stored["bits"])]
    params = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "20" / "state")
    semantic = params["0"]["semantic"]
    # The semantic hash network, written out: centre by the seen mean, normalise,
    # Dense + ReLU, Dense + tanh, then sign with sign(0) = +1.
    shifted = raw - raw[seen].mean(axis=0)
    inputs = shifted / np.linalg.norm(shifted, axis=1, keepdims=True)
    hidden = np.maximum(
        inputs @ semantic["hidden"]["0"]["kernel"] + semantic["hidden"]["0"]["bias"], 0
    )
    prototypes = np.tanh(hidden @ semantic["output"]["kernel"] + semantic["output"]["bias"])
    decided = np.abs(prototypes) > 1e-4
    expected = (prototypes >= 0).astype(np.uint8)
    assert decided[~seen].sum() > 0
    np.testing.assert_array_equal(bits[~seen][decided[~seen]], expected[~seen][decided[~seen]])
    np.testing.assert_array_equal(bits[seen][decided[seen]], expected[seen][decided[seen]])


def average_precision_by_loop(query, database, relevant):
    """AP over the whole database, ranked by Hamming distance then index, written out."""
    distances = [int(np.sum(query != row)) for row in database]
    order = sorted(range(len(database)), key=lambda i: (distances[i], i))
    hits, total = 0, 0.0
    for rank, index in enumerate(order, start=1):
        if relevant[index]:
            hits += 1
            total += hits / rank
    return total / hits


@pytest.mark.slow
def test_class_name_queries_match_loop(trained):
    workdir, _ = trained
    results = json.loads((workdir / "eval" / "results.json").read_text())
    prototypes = np.unpackbits(np.load(workdir / "eval" / "prototypes.npz")["codes"], axis=1)
    with np.load(workdir / "eval" / "database.npz") as stored:
        database = np.unpackbits(stored["codes"], axis=1)
        labels = stored["labels"]
    expected = np.mean(
        [
            average_precision_by_loop(prototypes[c], database, labels == c)
            for c in (SHIRT, ANKLE_BOOT)
        ]
    )
    unseen = results["text_queries"]["unseen_classes"]
    assert unseen["mAP@all"] == pytest.approx(expected, abs=1e-6)
    assert results["text_queries"]["seen_classes"]["queries_without_relevant"] == 0


@pytest.mark.slow
def test_resume_with_other_unseen_classes_raises(trained, data_dir):
    workdir, _ = trained
    completed = run_binary(
        "semhash_jax.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.num_train_steps=30",
        "--config.unseen_classes=('Bag',)",
    )
    assert completed.returncode != 0
    assert "unseen_classes" in completed.stderr


@pytest.mark.parametrize(
    "config_module, names_file, expected",
    [
        ("cifar10", "cifar10", [3, 9]),  # cat, truck
        ("imagenet100", "imagenet100", list(range(9, 100, 10))),
    ],
)
def test_benchmark_unseen_classes_resolve(config_module, names_file, expected):
    import importlib

    config = importlib.import_module(f"configs.{config_module}").get_config("zero_shot,runlocal")
    unseen = run_setup.find_unseen_classes(config.unseen_classes, class_names.load(names_file))
    np.testing.assert_array_equal(np.flatnonzero(unseen), expected)


def test_eval_scalars_include_zero_shot_groups():
    from semhash_jax import train

    results = {
        "metrics": {"mAP@all": 0.5, "queries_without_relevant": 0},
        "classification": {"nearest_prototype_accuracy": 0.75},
        "zero_shot": {
            "unseen_queries": {"mAP@all": 0.25},
            "seen_queries": None,
            "classification": {"unseen_among_unseen": 1.0},
        },
    }
    assert train.eval_scalars(results) == {
        "eval/mAP@all": 0.5,
        "eval/nearest_prototype_accuracy": 0.75,
        "eval/unseen_queries/mAP@all": 0.25,
        "eval/zero_shot_accuracy/unseen_among_unseen": 1.0,
    }
