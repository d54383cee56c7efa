"""Run a grid of configs one after another and tabulate their results.

A config file offers grids through `sweep(name, arg)`, which returns a list of
runs, each a dict of config overrides ("loss.alignment": "hinge", "seed": 1)
with an optional "label" naming the table row. Runs that differ only in
"seed" form one row, with mean and standard deviation over seeds.

Each run trains and evaluates in DIR/runs/<name>, where <name> lists the method,
the bits, the other fields in which the run's config differs from the base
config, and the seed. Runs with the same
config share a folder, so grids that overlap train the overlap once. A run whose
results.json holds the final step is skipped; an interrupted run resumes from its
latest checkpoint.

The table goes to DIR/<table>.md and DIR/<table>.csv, the per-run values to
DIR/<table>_runs.csv and the list of planned runs to DIR/<table>_runs.json.
<table> is the sweep's name followed by the config variant, so the same sweep
over two bases (bits=16 and bits=64) keeps two tables.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import pathlib
import re
import traceback

from absl import logging
import ml_collections
import numpy as np

from semhash_jax import atomic_files, config_defaults, input_errors

RUNS_DIR = "runs"
# Config fields that describe where data lives rather than what a run computes.
_IGNORED_IN_COMPARISON = ("data_dir", "source_dir", "list_dir")


@dataclasses.dataclass
class Run:
    label: str
    seed: int
    name: str
    config: ml_collections.ConfigDict


def load_sweep_function(config_path: str):
    """Return the `sweep(name, arg)` function of the config file at `config_path`."""
    path = pathlib.Path(config_path)
    if not path.is_file():
        known = ", ".join(sorted(str(p) for p in path.parent.glob("*.py") if p.stem != "__init__"))
        raise FileNotFoundError(
            f"Config file {config_path} not found. Config files in {path.parent}: "
            f"{known or 'none'}."
        )
    spec = importlib.util.spec_from_file_location(f"_sweep_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "sweep"):
        raise ValueError(
            f"{config_path} defines no sweep(name, arg) function. Use a config file with "
            "sweeps, e.g. configs/fashion_mnist.py or configs/cifar10.py."
        )
    return module.sweep


def _set_field(config, dotted: str, value, sweep_name: str):
    parts = dotted.split(".")
    target = config
    for part in parts[:-1]:
        if part not in target or not hasattr(target[part], "items"):
            raise ValueError(f"Sweep {sweep_name!r} sets {dotted!r}, which the config lacks.")
        target = target[part]
    if parts[-1] not in target:
        raise ValueError(f"Sweep {sweep_name!r} sets {dotted!r}, which the config lacks.")
    try:
        target[parts[-1]] = value
    except TypeError as e:
        raise ValueError(f"Sweep {sweep_name!r} sets {dotted}={value!r}: {e}") from None


def _flat(config) -> dict:
    """Return the dotted fields, with tuples as lists so that they compare equal to JSON."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in config_defaults.flat_fields(config).items()
    }


def _json_value(value):
    return json.loads(json.dumps(value))


def _unused(method: str, key: str) -> bool:
    from semhash_jax import losses

    return key.startswith(losses.UNUSED_CONFIG_FIELDS.get(method, ()))


# Fields always named in a run's folder, so that sweeps with other bases (e.g. the
# bits=16 variant) that share a workdir never give two configs one folder.
_NAMED_FIELDS = ("method", "bits")


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def table_name(sweep_name: str, variant: str | None) -> str:
    """Return the stem of a sweep's table files: the sweep name, then the config variant.

    "loss" with variant "schedule=deephash,bits=16" gives "loss_schedule=deephash,bits=16",
    and "loss" without a variant gives "loss".
    """
    return _file_name(f"{sweep_name}_{variant}" if variant else sweep_name)


def run_name(config, base) -> str:
    """Folder name of a run: method, bits, the other fields that differ from the
    base config (sorted) and that its method reads, and the seed."""
    run, reference = _flat(config), _flat(base)
    parts = [f"{key}={run[key]}" for key in _NAMED_FIELDS]
    for key in sorted(run):
        if key in _NAMED_FIELDS or key == "seed" or _unused(run["method"], key):
            continue
        if _json_value(run[key]) != _json_value(reference.get(key)):
            value = run[key]
            if isinstance(value, list):
                value = "-".join(str(item) for item in value) or "none"
            parts.append(f"{key}={value}")
    parts.append(f"seed={config.seed}")
    return _file_name(",".join(parts))


def build_runs(base, entries: list[dict], sweep_name: str) -> list[Run]:
    """Apply each entry's overrides to a copy of `base`."""
    if not entries:
        raise ValueError(f"Sweep {sweep_name!r} has no runs.")
    runs = []
    for entry in entries:
        entry = dict(entry)
        label = entry.pop("label", None)
        config = base.copy_and_resolve_references()
        for key, value in entry.items():
            _set_field(config, key, value, sweep_name)
        if label is None:
            label = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "seed") or "base"
        runs.append(Run(label, int(config.seed), run_name(config, base), config))
    names = [run.name for run in runs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Sweep {sweep_name!r} lists the same run more than once: {duplicates}.")
    return runs


def _saved_config_differences(results: dict, config) -> list[str]:
    """Fields that differ between a run's saved config and `config`, leaving out those
    its method never reads."""
    saved, current = _flat(results["config"]), _flat(json.loads(config.to_json()))
    return sorted(
        key
        for key in set(saved) | set(current)
        if key not in _IGNORED_IN_COMPARISON
        and not _unused(config.method, key)
        and saved.get(key) != current.get(key)
    )


def finished_results(run_dir: pathlib.Path, config) -> dict | None:
    """Return the results of a finished run in `run_dir`, or None if it has none.

    Raises when the folder contains a run of another config, which must not be mixed
    into the table or resumed with this config.
    """
    path = run_dir / "eval" / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    differences = _saved_config_differences(results, config)
    if differences:
        raise input_errors.mark(
            ValueError(
                f"{run_dir} contains a run with another config (fields {', '.join(differences)} "
                "differ). Move or delete that folder, or give the sweep another --workdir."
            )
        )
    if results["step"] != config.num_train_steps:
        return None
    return results


def training_time(run_dir: pathlib.Path) -> tuple[float | None, float | None]:
    """Return (training seconds, images/s) summed over the run's training segments.

    NOTE: a segment that ends in an error or a preemption is not recorded, so the
    time of a resumed run leaves out the work done before the interruption.
    """
    from semhash_jax import train

    path = run_dir / train.TRAINING_TIME_FILE
    if not path.is_file():
        return None, None
    segments = json.loads(path.read_text())["segments"]
    seconds = sum(segment["seconds"] for segment in segments)
    rates = [s for s in segments if s["images_per_second"]]
    if not rates:
        return seconds, None
    steps = [s["last_step"] - s["first_step"] for s in rates]
    rate = sum(s["images_per_second"] * n for s, n in zip(rates, steps)) / max(sum(steps), 1)
    return seconds, rate


def _metric(metrics: dict, prefix: str) -> tuple[str, float]:
    for name, value in metrics.items():
        if name.startswith(prefix):
            return name, value
    raise KeyError(prefix)


def run_record(run: Run, run_dir: pathlib.Path, results: dict | None, error: str = "") -> dict:
    record = {"label": run.label, "seed": run.seed, "run": run.name, "bits": run.config.bits}
    if results is None:
        return {**record, "status": f"failed: {error}" if error else "not run"}
    metrics = results["metrics"]
    map_name, map_value = _metric(metrics, "mAP@")
    tie_name, tie_value = _metric(metrics, "tie_aware_mAP@")
    precision_name, precision = _metric(metrics, "precision@H<=")
    seconds, rate = training_time(run_dir)
    return {
        **record,
        "status": "done",
        map_name: map_value,
        tie_name: tie_value,
        precision_name: precision,
        "train_seconds": seconds,
        "images_per_second": rate,
    }


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    array = np.asarray(values, np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None


def summarize(records: list[dict]) -> tuple[list[str], list[dict]]:
    """Group finished runs by label; return the value columns and one row per label."""
    columns = []
    for record in records:
        for key in record:
            if key not in ("label", "seed", "run", "bits", "status") and key not in columns:
                columns.append(key)
    rows = []
    for label in dict.fromkeys(record["label"] for record in records):
        group = [r for r in records if r["label"] == label and r["status"] == "done"]
        row = {
            "label": label,
            "seeds": len(group),
            "runs": sum(r["label"] == label for r in records),
        }
        for column in columns:
            values = [r[column] for r in group if r.get(column) is not None]
            row[column] = mean_std(values) if values else None
        rows.append(row)
    return columns, rows


def _format(value, column: str) -> str:
    if value is None:
        return "n/a"
    mean, std = value
    digits = 4 if ("mAP" in column or "precision" in column) else 1
    text = f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


_HEADINGS = {"train_seconds": "training time (s)", "images_per_second": "images/s"}


def write_tables(workdir: pathlib.Path, table: str, records: list[dict]) -> str:
    """Write the Markdown and CSV tables of a sweep to DIR/<table>.*, and return the Markdown."""
    columns, rows = summarize(records)
    headings = ["run", "seeds"] + [_HEADINGS.get(c, c) for c in columns]
    lines = [
        "| " + " | ".join(headings) + " |",
        "|" + "---|" * len(headings),
    ]
    for row in rows:
        seeds = (
            f"{row['seeds']}" if row["seeds"] == row["runs"] else f"{row['seeds']}/{row['runs']}"
        )
        cells = [row["label"], seeds] + [_format(row[c], c) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    markdown += (
        "\nMean ± sample standard deviation over seeds; 'seeds' counts finished runs "
        "(finished/listed where some are missing).\n"
    )
    (workdir / f"{table}.md").write_text(markdown)
    with open(workdir / f"{table}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        header = ["label", "seeds"]
        for column in columns:
            header += [f"{column}_mean", f"{column}_std"]
        writer.writerow(header)
        for row in rows:
            cells = [row["label"], row["seeds"]]
            for column in columns:
                cells += list(row[column]) if row[column] else [None, None]
            writer.writerow(["" if c is None else c for c in cells])
    with open(workdir / f"{table}_runs.csv", "w", newline="") as f:
        keys = list(dict.fromkeys(key for record in records for key in record))
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)
    return markdown


def run_sweep(base, entries: list[dict], workdir, sweep_name: str, *, table=None, train_fn=None):
    """Train and evaluate every run of a sweep that is not finished; write its tables.

    The tables go to DIR/<table>.md and .csv (`table` defaults to the sweep's name).
    Returns (records, markdown). A run that fails is logged and recorded, and the
    sweep goes on; the caller decides the exit status from the records.
    `train_fn(config, workdir)` defaults to `train.train_and_evaluate`.
    """
    if train_fn is None:
        from semhash_jax import train

        train_fn = train.train_and_evaluate
    workdir = pathlib.Path(workdir)
    table = table or sweep_name
    with input_errors.tagged():
        runs = build_runs(base, entries, sweep_name)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_files.write_json(
        workdir / f"{table}_runs.json",
        {
            "sweep": sweep_name,
            "runs": [{"label": r.label, "seed": r.seed, "run": r.name} for r in runs],
        },
    )
    logging.info("Sweep %r: %d runs in %s.", sweep_name, len(runs), workdir / RUNS_DIR)
    records = []
    markdown = None
    for index, run in enumerate(runs, 1):
        run_dir = workdir / RUNS_DIR / run.name
        results = finished_results(run_dir, run.config)
        error = ""
        if results is not None:
            logging.info("Run %d/%d %s is finished; skipping it.", index, len(runs), run.name)
        else:
            logging.info("Starting run %d/%d: %s (%s).", index, len(runs), run.name, run.label)
            try:
                results = train_fn(run.config, str(run_dir))
                logging.info("Finished run %d/%d: %s.", index, len(runs), run.name)
            except Exception as e:  # One failed run must not stop the others.
                if getattr(e, "semhash_input_error", False):
                    logging.error("Run %s stopped the sweep on an input error.", run.name)
                    raise
                error = f"{type(e).__name__}: {e}"
                logging.error("Run %s failed: %s\n%s", run.name, error, traceback.format_exc())
        records.append(run_record(run, run_dir, results, error))
        # Rewritten after every run, so a stopped sweep leaves the table of its finished runs.
        markdown = write_tables(workdir, table, records)
    if markdown is None:
        markdown = write_tables(workdir, table, records)
    logging.info("Sweep %r finished; table in %s.", sweep_name, workdir / f"{table}.md")
    return records, markdown


def failed(records: list[dict]) -> list[str]:
    return [r["run"] for r in records if r["status"] != "done"]
