"""PNG plots of retrieval curves: precision-recall over Hamming radii, and precision@N."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # The backend must be set before this import.


def write_curve_plots(results: dict, out_dir) -> list[pathlib.Path]:
    """Write the curves of a `retrieval_metrics` result as PNG files; return their paths.

    `results` is what evaluate_codes writes, or a training run's eval/results.json.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = results["curves"]
    # evaluate_codes results count the sets at the top level, a training run's under "protocol".
    protocol = results.get("protocol", {})
    num_queries = results.get("num_queries", protocol.get("num_query"))
    num_database = results.get("num_database", protocol.get("num_database"))
    title = f"{results['bits']} bits, {num_queries} queries, {num_database} items"
    paths = []

    at_n = curves["precision@N"]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(at_n["N"], at_n["precision"], marker=".", label="precision@N")
    axis.plot(at_n["N"], at_n["recall"], marker=".", label="recall@N")
    axis.set_xlabel("N (ranked items, ties by database index)")
    axis.set_ylabel("mean over queries")
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    paths.append(_save(figure, out_dir / "precision_at_n.png"))

    if "pr_by_radius" in curves:
        by_radius = curves["pr_by_radius"]
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.plot(by_radius["recall"], by_radius["precision"], marker=".")
        last = by_radius["radius"][-1]
        labelled = {0, results["radius"], last // 4, last // 2, last}
        for radius, recall, precision in zip(
            by_radius["radius"], by_radius["recall"], by_radius["precision"], strict=True
        ):
            if radius in labelled:
                axis.annotate(
                    f"r={radius}",
                    (recall, precision),
                    xytext=(4, -10),
                    textcoords="offset points",
                    fontsize=7,
                )
        axis.set_xlabel("recall within Hamming radius r")
        axis.set_ylabel("precision within Hamming radius r (empty ball = 0)")
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        paths.append(_save(figure, out_dir / "pr_by_radius.png"))
    return paths


def _save(figure, path: pathlib.Path) -> pathlib.Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_search_grid(
    path, query_title: str, query_image, images: list, captions: list[str], columns: int = 5
) -> pathlib.Path:
    """Write a PNG grid: the query (an image, or None for a text query) and its results.

    `images` are uint8 [H, W, C] arrays shown in rank order with their `captions`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # An image query gets a row of its own, and a text query is the figure's title.
    query_rows = 0 if query_image is None else 1
    rows = query_rows + max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    if query_image is None:
        figure.suptitle(query_title, fontsize=11)
    else:
        _show(axes[0, 0], query_image)
        axes[0, 0].set_title(query_title, fontsize=9)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        axis = axes[query_rows + index // columns, index % columns]
        _show(axis, image)
        axis.set_title(caption, fontsize=8)
    return _save(figure, path)


def _show(axis, image):
    image = image[..., 0] if image.shape[-1] == 1 else image
    axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
