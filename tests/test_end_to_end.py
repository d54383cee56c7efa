"""The two binaries, run as a user runs them, on a real Fashion-MNIST slice."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "fashion_mnist.py") + ":protocol=train_test_split,runlocal"


def run_binary(module, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    helpers.prepare_slice(path, max_examples=400)
    return str(path)


@pytest.mark.slow
def test_main_then_evaluate(data_dir, tmp_path):
    workdir = tmp_path / "run"
    trained = run_binary(
        "semhash_jax.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.bits=24",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "mAP@all" in trained.stdout
    results_path = workdir / "eval" / "results.json"
    results = json.loads(results_path.read_text())
    assert results["step"] == 20
    assert results["bits"] == 24
    assert results["protocol"]["name"] == "train_test_split"
    assert results["protocol"]["num_query"] == 400
    assert results["protocol"]["num_database"] == 400
    assert results["protocol"]["num_train"] == 400
    # 400 database items: K = 1000 is clamped to the database size, which is "all".
    assert set(results["metrics"]) == {
        "mAP@all",
        "tie_aware_mAP@all",
        "precision@H<=2",
        "recall@H<=2",
        "empty_balls@H<=2",
        "queries_without_relevant",
    }
    assert 0.0 <= results["metrics"]["mAP@all"] <= 1.0
    assert "database index" in results["tie_rule"]
    assert len(results["curves"]["pr_by_radius"]["radius"]) == 25
    assert (workdir / "checkpoints" / "20").is_dir()
    assert (workdir / "protocol" / "ids.npz").is_file()
    assert list(workdir.glob("events.out.tfevents.*"))

    results_path.unlink()
    evaluated = run_binary(
        "semhash_jax.evaluate",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.bits=24",
        "--step=10",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads(results_path.read_text())
    assert again["step"] == 10
    assert again["protocol"] == results["protocol"]

    # The code files of the evaluation give the same metrics through the codes CLI.
    eval_dir = workdir / "eval"
    scored = run_binary(
        "semhash_jax.evaluate_codes",
        f"--query={eval_dir / 'query.npz'}",
        f"--database={eval_dir / 'database.npz'}",
        "--top_k=1000",
        f"--out={tmp_path / 'codes.json'}",
        f"--plots={tmp_path / 'plots'}",
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    from_codes = json.loads((tmp_path / "codes.json").read_text())
    assert from_codes["metrics"] == again["metrics"]
    assert from_codes["curves"] == again["curves"]
    assert (tmp_path / "plots" / "pr_by_radius.png").stat().st_size > 0
    assert (tmp_path / "plots" / "precision_at_n.png").stat().st_size > 0

    wrong = run_binary(
        "semhash_jax.evaluate",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
    )
    assert wrong.returncode != 0
    assert "Error: The checkpoint of step" in wrong.stderr
    assert "bits: checkpoint 24, config 32" in wrong.stderr
    assert "Traceback" not in wrong.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.bits=0", "config.bits=0"),
        ("--config.bits=1.5", "bits"),
        ("--config.model.backbone=vgg99", "model.backbone"),
        ("--config.batch_size=12", "does not divide across 8 devices"),
    ],
)
def test_main_rejects_bad_config_before_work(data_dir, tmp_path, override, message):
    workdir = tmp_path / "run"
    result = run_binary(
        "semhash_jax.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        override,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (workdir / "protocol").exists()
    if override != "--config.bits=1.5":  # A flag type error, reported by absl's parser.
        assert "Traceback" not in result.stderr
        assert "Error: " in result.stderr
