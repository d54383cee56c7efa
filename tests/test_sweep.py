"""The sweep runner: run folders, skipping, failures, the table's statistics (checked
against values computed here), and the CIFAR-10 methods sweep on TFDS mock data."""

import csv
import json
import pathlib
import statistics

import pytest

from configs import cifar10, fashion_mnist
from semhash_jax import atomic_files, input_errors, sweep_runner, train
from tests import helpers


def base_config():
    return fashion_mnist.get_config("runlocal")


def fake_train(values, calls):
    """A train function that writes the files of a finished run with given metrics."""

    def run(config, workdir):
        calls.append(workdir)
        workdir = pathlib.Path(workdir)
        value = values[(config.method, config.seed)]
        if isinstance(value, Exception):
            raise value
        results = {
            "step": config.num_train_steps,
            "config": json.loads(config.to_json()),
            "metrics": {
                "mAP@all": value,
                "tie_aware_mAP@all": value - 0.01,
                "precision@H<=2": value / 2,
            },
        }
        (workdir / "eval").mkdir(parents=True)
        atomic_files.write_json(workdir / "eval/results.json", results)
        segment = {
            "first_step": 1,
            "last_step": 20,
            "seconds": 10.0 + config.seed,
            "images_per_second": 100.0 * (config.seed + 1),
        }
        train.write_training_time(workdir, segment)
        return results

    return run


ENTRIES = [
    {"label": label, "method": method, "seed": seed}
    for seed in (0, 1, 2)
    for label, method in (("ours", "semantic_hash"), ("csq", "csq"))
]


def test_table_mean_and_std_over_seeds(tmp_path):
    values = {("semantic_hash", s): v for s, v in enumerate((0.80, 0.82, 0.87))}
    values |= {("csq", s): v for s, v in enumerate((0.70, 0.71, 0.75))}
    calls = []
    records, markdown = sweep_runner.run_sweep(
        base_config(), ENTRIES, tmp_path, "methods", train_fn=fake_train(values, calls)
    )
    assert len(calls) == 6
    assert all(r["status"] == "done" for r in records)
    mean, std = statistics.mean([0.80, 0.82, 0.87]), statistics.stdev([0.80, 0.82, 0.87])
    assert f"| ours | 3 | {mean:.4f} ± {std:.4f} |" in markdown
    # Training time 10, 11, 12 s; images/s 100, 200, 300.
    assert "| 11.0 ± 1.0 | 200.0 ± 100.0 |" in markdown
    rows = list(csv.DictReader(open(tmp_path / "methods.csv")))
    assert rows[1]["label"] == "csq"
    assert float(rows[1]["mAP@all_mean"]) == pytest.approx(statistics.mean([0.70, 0.71, 0.75]))
    assert float(rows[1]["mAP@all_std"]) == pytest.approx(statistics.stdev([0.70, 0.71, 0.75]))
    runs = list(csv.DictReader(open(tmp_path / "methods_runs.csv")))
    assert [r["run"] for r in runs][:2] == [
        "method=semantic_hash,bits=32,seed=0",
        "method=csq,bits=32,seed=0",
    ]
    assert (tmp_path / "runs/method=csq,bits=32,seed=2/eval/results.json").is_file()

    # A second call trains nothing and writes the same table.
    calls.clear()
    _, again = sweep_runner.run_sweep(
        base_config(), ENTRIES, tmp_path, "methods", train_fn=fake_train(values, calls)
    )
    assert calls == []
    assert again == markdown


def test_table_named_after_the_variant(tmp_path):
    assert sweep_runner.table_name("loss", None) == "loss"
    assert sweep_runner.table_name("loss", "schedule=deephash,bits=16") == (
        "loss_schedule=deephash,bits=16"
    )
    values = {("semantic_hash", 0): 0.6, ("csq", 0): 0.5}
    for bits, variant in ((16, "bits=16"), (64, "bits=64")):
        base = fashion_mnist.get_config(f"runlocal,{variant}")
        table = sweep_runner.table_name("methods", f"runlocal,{variant}")
        sweep_runner.run_sweep(
            base, ENTRIES[:2], tmp_path, "methods", table=table, train_fn=fake_train(values, [])
        )
    for bits in (16, 64):
        runs = list(csv.DictReader(open(tmp_path / f"methods_runlocal,bits={bits}_runs.csv")))
        assert [r["run"] for r in runs] == [
            f"method=semantic_hash,bits={bits},seed=0",
            f"method=csq,bits={bits},seed=0",
        ]
        assert (tmp_path / f"methods_runlocal,bits={bits}.md").is_file()
    assert not (tmp_path / "methods.md").exists()


def test_failed_run_is_recorded_and_the_others_run(tmp_path):
    values = {("semantic_hash", s): 0.8 for s in range(3)}
    values |= {("csq", 0): 0.7, ("csq", 1): FloatingPointError("loss is nan"), ("csq", 2): 0.72}
    calls = []
    records, markdown = sweep_runner.run_sweep(
        base_config(), ENTRIES, tmp_path, "m", train_fn=fake_train(values, calls)
    )
    assert len(calls) == 6
    assert sweep_runner.failed(records) == ["method=csq,bits=32,seed=1"]
    assert "failed: FloatingPointError: loss is nan" in (tmp_path / "m_runs.csv").read_text()
    # Two of three csq seeds finished: the table shows it.
    assert "| csq | 2/3 | 0.7100 ± 0.0141 |" in markdown


def test_input_error_stops_the_sweep(tmp_path):
    error = input_errors.mark(FileNotFoundError("no data"))
    values = {("semantic_hash", 0): error}
    with pytest.raises(FileNotFoundError, match="no data"):
        sweep_runner.run_sweep(
            base_config(), ENTRIES[:2], tmp_path, "m", train_fn=fake_train(values, [])
        )


def test_folder_of_another_config_is_refused(tmp_path):
    values = {("semantic_hash", 0): 0.8}
    sweep_runner.run_sweep(
        base_config(), ENTRIES[:1], tmp_path, "m", train_fn=fake_train(values, [])
    )
    other = base_config()
    other.num_train_steps = 30
    with pytest.raises(ValueError, match=r"another config \(fields num_train_steps differ\)"):
        sweep_runner.run_sweep(other, ENTRIES[:1], tmp_path, "m", train_fn=fake_train(values, []))


def test_run_names_and_bad_entries():
    base = base_config()
    runs = sweep_runner.build_runs(
        base,
        [
            {"seed": 1},
            {"loss.alignment": "hinge", "model.semantic_hidden": (512, 512), "seed": 0},
            {"model.semantic_hidden": ()},
        ],
        "s",
    )
    assert [r.name for r in runs] == [
        "method=semantic_hash,bits=32,seed=1",
        "method=semantic_hash,bits=32,loss.alignment=hinge,model.semantic_hidden=512-512,seed=0",
        "method=semantic_hash,bits=32,model.semantic_hidden=none,seed=0",
    ]
    assert runs[1].label == "loss.alignment=hinge, model.semantic_hidden=(512, 512)"
    with pytest.raises(ValueError, match="sets 'loss.alignmnet', which the config lacks"):
        sweep_runner.build_runs(base, [{"loss.alignmnet": "hinge"}], "s")
    with pytest.raises(ValueError, match="lists the same run more than once"):
        sweep_runner.build_runs(base, [{"seed": 0}, {"seed": 0, "bits": 32}], "s")
    with pytest.raises(ValueError, match="Unknown sweep 'bits'. Known sweeps: methods, loss, text"):
        fashion_mnist.sweep("bits")


def test_study_grids():
    methods = fashion_mnist.sweep("methods", "schedule=deephash")
    assert len(methods) == 5 * 3 * 3
    assert {(e["method"], e["bits"]) for e in methods[:5]} == {
        (m, 32) for m in ("semantic_hash", "csq", "orthohash", "adalabelhash", "classification")
    }
    loss = fashion_mnist.sweep("loss")
    assert len(loss) == 8 * 3
    assert loss[0]["loss.quantization_weight"] == 0.1
    assert loss[0]["seed"] == 0
    assert loss[3]["loss.quantization_weight"] == 0.0
    # The row that repeats the config's own loss settings is marked.
    assert loss[0]["label"].endswith("(the config's default)")
    assert loss[3]["label"] == "no quantization term"
    short = fashion_mnist.sweep("loss", "schedule=deephash")
    assert short[0]["label"] == "reference: softmax_ce, scale 10, quantization 0.1, MLP 512"
    assert short[3]["label"] == "no quantization term (the config's default)"
    text = fashion_mnist.sweep("text", "schedule=deephash")
    assert len(text) == 6 * 3
    assert {e["method"] for e in text} == {"semantic_hash"}
    assert text[1]["text.center"] is False
    assert text[5]["text.space"] == "random"
    assert fashion_mnist.get_config().loss.quantization_weight == 0.1
    config = fashion_mnist.get_config("schedule=deephash")
    assert config.loss.quantization_weight == 0.0
    assert (config.num_train_steps, config.optimizer.learning_rate, config.augment_max_shift) == (
        781,
        1e-3,
        0,
    )


def test_cifar10_methods_sweep_runlocal_on_mock_data(tmp_path, monkeypatch):
    # Protocol (b): protocol (a) draws 100 queries and 500 training images per class,
    # more than a small mock dataset holds.
    arg = "protocol=train_test_split,runlocal"
    base = helpers.two_step_config(cifar10.get_config(arg), tmp_path / "tfds")
    entries = cifar10.sweep("methods", arg)
    assert len(entries) == 5
    with helpers.mock_tfds(monkeypatch, 300):
        records, markdown = sweep_runner.run_sweep(base, entries, tmp_path / "sweep", "methods")
    assert sweep_runner.failed(records) == []
    for method in ("semantic_hash", "csq", "orthohash", "adalabelhash", "classification"):
        assert f"| {method}, 32 bits | 1 | 0." in markdown
    assert (tmp_path / "sweep/methods.csv").is_file()
    # The real training loop timed itself: steps 1..2, the rate from step 2.
    timing = json.loads(
        (tmp_path / "sweep/runs/method=csq,bits=32,seed=0" / train.TRAINING_TIME_FILE).read_text()
    )
    (segment,) = timing["segments"]
    assert (segment["first_step"], segment["last_step"]) == (1, 2)
    assert segment["seconds"] > 0
    assert segment["images_per_second"] > 0


def test_command_line_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "semhash_jax.sweep", *args, f"--workdir={tmp_path}"],
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = run("--config=configs/fashion_mnist.py", "--sweep=bits")
    assert result.returncode == 1
    assert "Error: Unknown sweep 'bits'. Known sweeps: methods, loss, text." in result.stderr
    assert "Traceback" not in result.stderr
    result = run("--config=configs/fashion_mnist.py:zero_shot", "--sweep=methods")
    assert "Error: The methods sweep cannot use the zero_shot variant" in result.stderr
    result = run("--config=configs/imagenet.py", "--sweep=methods")
    assert "Error: configs/imagenet.py defines no sweep(name, arg) function" in result.stderr
    result = run("--config=configs/fashion_mnsit.py", "--sweep=methods")
    assert "Error: Config file configs/fashion_mnsit.py not found." in result.stderr
    assert "configs/fashion_mnist.py" in result.stderr
    # Config flag errors: only the message that names the value, exit status 2.
    result = run("--config=configs/fashion_mnist.py", "--sweep=text", "--config.loss.alignmnet=x")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: Invalid config override among --config.loss.alignmnet: the config has no "
        'field \'alignmnet\'. Did you mean "alignment" instead of "alignmnet"? The fields '
        "are defined in semhash_jax/config_defaults.py and the config file."
    ]
    result = run("--config=configs/fashion_mnist.py:runlocl", "--sweep=text")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: Unknown config variant(s) ['runlocl'] in 'runlocl'. Known: protocol, bits, "
        "schedule, zero_shot, runlocal."
    ]


def test_fields_a_method_never_reads_are_left_out():
    base = base_config()
    runs = sweep_runner.build_runs(
        base,
        [
            {
                "method": "csq",
                "loss.quantization_weight": 0.5,
                "model.semantic_hidden": (),
                "text.center": False,
            },
            {"method": "adalabelhash", "loss.scale": 3.0, "loss.margin": 0.2},
            {"method": "semantic_hash", "csq.quantization_weight": 0.5, "loss.scale": 3.0},
        ],
        "s",
    )
    assert [r.name for r in runs] == [
        "method=csq,bits=32,seed=0",
        "method=adalabelhash,bits=32,loss.margin=0.2,seed=0",
        "method=semantic_hash,bits=32,loss.scale=3.0,seed=0",
    ]
    # A finished CSQ run is reused by a base whose SemanticHash loss changed.
    results = {"step": 20, "config": json.loads(runs[0].config.to_json()), "metrics": {}}
    other = base_config()
    other.method = "csq"
    other.loss.alignment = "hinge"
    other.text.templates = ("{}",)
    assert sweep_runner._saved_config_differences(results, other) == []
    other.csq.quantization_weight = 0.3
    assert sweep_runner._saved_config_differences(results, other) == ["csq.quantization_weight"]
