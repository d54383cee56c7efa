"""The benchmark configs train and evaluate end to end on TFDS mock data.

tfds.testing.mock_data replaces the records of the real TFDS builders (cifar10,
imagenet2012) with random ones of the declared shapes: 32 x 32 for CIFAR-10, and
random sizes for ImageNet, which exercises the crops.
"""

import json
import math

import pytest

from configs import cifar10, imagenet
from semhash_jax import run_setup, train
from tests import helpers


shrink = helpers.two_step_config


@pytest.mark.parametrize(
    "module, arg, num_examples",
    [(cifar10, "protocol=train_test_split,runlocal", 200), (imagenet, "runlocal,bits=16", 48)],
)
def test_runlocal_trains_and_evaluates(module, arg, num_examples, tmp_path, monkeypatch):
    config = shrink(module.get_config(arg), tmp_path / "tfds")
    workdir = tmp_path / "work"
    with helpers.mock_tfds(monkeypatch, num_examples):
        results = train.train_and_evaluate(config, str(workdir))
    saved = json.loads((workdir / "eval/results.json").read_text())
    assert saved["bits"] == config.bits
    # K is clamped to the mock database, so the name is mAP@all.
    assert math.isfinite(results["metrics"]["mAP@all"])
    assert (workdir / "checkpoints/2").is_dir()


def test_cifar10_class_names_reach_text_encoder(tmp_path, monkeypatch):
    config = shrink(cifar10.get_config("protocol=train_test_split,runlocal"), tmp_path / "tfds")
    with helpers.mock_tfds(monkeypatch, 200):
        setup = run_setup.prepare_run(config, tmp_path / "work", create_split=True)
    assert setup.class_names[:3] == ("airplane", "automobile", "bird")
    assert setup.class_embeddings.shape[0] == 10


def test_short_dataset_fails_count_check(tmp_path, monkeypatch):
    # Protocol (b) on 300 mock images per split gives 300 of each set, not the
    # 50,000 / 10,000 / 50,000 of CIFAR-10.
    config = shrink(cifar10.get_config("protocol=train_test_split"), tmp_path / "tfds")
    with helpers.mock_tfds(monkeypatch, 300):
        with pytest.raises(ValueError, match=r"300/300/300 images, but the benchmark"):
            run_setup.prepare_run(config, tmp_path / "work", create_split=True)


@pytest.mark.parametrize(
    "module_name, arg",
    [
        ("cifar10", None),
        ("cifar10", "protocol=train_test_split,bits=64"),
        ("imagenet", None),
        ("imagenet100", "bits=48"),
        ("coco", "bits=16"),
        ("coco", "protocol=coco_sampled,year=2017"),
        ("nuswide", None),
        ("nuswide", "concepts=81,runlocal"),
        ("image_folder", "protocol=train_test_split"),
    ],
)
def test_config_passes_checks(module_name, arg):
    import importlib

    from semhash_jax import config_checks

    config = importlib.import_module(f"configs.{module_name}").get_config(arg)
    config_checks.check_config(config, 8)
    if arg and "bits=" in arg:
        assert config.bits == int(arg.split("bits=")[1].split(",")[0])


def test_unknown_concepts_variant_rejected():
    from configs import nuswide

    with pytest.raises(ValueError, match="concepts='40'"):
        nuswide.get_config("concepts=40")


def test_photo_benchmarks_use_bert_base_when_online(monkeypatch):
    from configs import coco, imagenet
    from semhash_jax.text import embeddings

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert imagenet.get_config().text.model == "bert-base-uncased"
    assert coco.get_config().text.model == "bert-base-uncased"
    # runlocal never downloads.
    assert coco.get_config("runlocal").text.model == embeddings.DEFAULT_TEXT_MODEL
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert imagenet.get_config().text.model == embeddings.DEFAULT_TEXT_MODEL
