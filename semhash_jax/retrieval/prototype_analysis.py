"""Analysis of class prototypes: how far apart they are, and whether code space keeps text space.

A class prototype is the binary code of the text embedding of the class name. This
module compares the pairwise Hamming distances of the prototypes with the pairwise
cosine distances of the text embeddings, measures the bit balance of database codes,
and, for zero-shot protocols, how far each unseen prototype lies from the seen ones.
Everything here is numpy and scipy on small arrays: C classes give C (C - 1) / 2 pairs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
from scipy import stats

from semhash_jax.retrieval import code_files
from semhash_jax.retrieval.code_files import CodeSet
from semhash_jax.retrieval.codes import unpack_codes

# A bit whose fraction of +1 is below 0.1 or above 0.9 is reported as nearly constant.
NEARLY_CONSTANT_DEVIATION = 0.4
# Collisions listed by name in a report; the count always covers all of them.
MAX_LISTED_COLLISIONS = 100


@dataclasses.dataclass
class ClassEmbeddings:
    """Text embeddings of the class names, read from a class_embeddings.npz file."""

    embeddings: np.ndarray
    class_names: np.ndarray
    seen: np.ndarray
    # Mean [H] that training subtracted before the semantic network, or None without centring.
    text_mean: np.ndarray | None = None
    # Class names of the training dataset, the dimensions of a one_hot space.
    vocabulary: tuple[str, ...] = ()


def code_bits(code_set: CodeSet) -> np.ndarray:
    """Return the codes of a code set as bools [N, K], True for +1."""
    return unpack_codes(code_set.packed, code_set.bits) > 0


def pairwise_hamming(bits) -> np.ndarray:
    """Return the Hamming distances int64 [C, C] between the rows of bools [C, K]."""
    bits = _check_bits(bits, "bits")
    ones = bits.astype(np.int64)
    zeros = 1 - ones
    # Bits set in row i but clear in row j, plus the reverse.
    return ones @ zeros.T + zeros @ ones.T


def cosine_similarity(embeddings, *, mean=None) -> np.ndarray:
    """Return the cosine similarities float64 [C, C] between the rows of `embeddings` [C, H].

    A `mean` [H] is subtracted from every row first, as training does with the mean of
    the seen classes when `config.text.center` is set. Raises ValueError for non-finite
    values and for a row of zero norm, whose cosine is undefined.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings must be a 2-D array [C, H], got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if mean is not None:
        mean = np.asarray(mean, dtype=np.float64)
        if mean.shape != embeddings.shape[1:]:
            raise ValueError(
                f"mean must have shape ({embeddings.shape[1]},) like an embedding row, got "
                f"{mean.shape}"
            )
        embeddings = embeddings - mean
    norms = np.linalg.norm(embeddings, axis=1)
    zero_rows = np.flatnonzero(norms == 0)
    if len(zero_rows):
        after = " after subtracting the mean" if mean is not None else ""
        raise ValueError(
            f"embedding row {zero_rows[0]} has zero norm{after}, so its cosine similarity "
            "is undefined"
        )
    unit = embeddings / norms[:, None]
    return np.clip(unit @ unit.T, -1.0, 1.0)


def rank_correlation(hamming, cosine) -> dict:
    """Correlate the Hamming distances with the cosine distances (1 - cosine) over pairs i < j.

    Returns Spearman's rho, Kendall's tau-b (both from scipy.stats, ties averaged), the
    number of pairs and `reason`: None, or why rho and tau are NaN (fewer than 3 classes,
    or one of the two distance lists is constant). A positive value means that classes
    close in text space are close in code space.
    NOTE: no p-values are given, because the pairs share classes and so are not
    independent, which the tests of spearmanr and kendalltau assume. A permutation
    (Mantel) test over class labels would be needed.
    """
    hamming = np.asarray(hamming)
    cosine = np.asarray(cosine)
    if hamming.ndim != 2 or hamming.shape[0] != hamming.shape[1]:
        raise ValueError(f"hamming must be a square [C, C] array, got shape {hamming.shape}")
    if cosine.shape != hamming.shape:
        raise ValueError(
            f"cosine has shape {cosine.shape} but hamming has {hamming.shape}. Both must be [C, C]."
        )

    num_classes = hamming.shape[0]
    upper = np.triu_indices(num_classes, k=1)
    code_distances = hamming[upper].astype(np.float64)
    text_distances = 1.0 - cosine[upper].astype(np.float64)
    result = {
        "spearman_rho": float("nan"),
        "kendall_tau": float("nan"),
        "num_pairs": len(code_distances),
        "reason": None,
    }
    if num_classes < 3:
        result["reason"] = f"fewer than 3 classes ({num_classes}), so there is nothing to rank"
    elif np.ptp(code_distances) == 0:
        result["reason"] = f"all {len(code_distances)} prototype Hamming distances are equal"
    elif np.ptp(text_distances) == 0:
        result["reason"] = f"all {len(text_distances)} text cosine distances are equal"
    else:
        result["spearman_rho"] = float(stats.spearmanr(code_distances, text_distances).statistic)
        result["kendall_tau"] = float(stats.kendalltau(code_distances, text_distances).statistic)
    return result


def bit_balance(bits) -> dict:
    """Measure how evenly each bit of the codes bools [N, K] splits into +1 and -1.

    A balanced bit has a fraction of +1 near 0.5 and a binary entropy near 1 bit. A
    nearly constant bit (deviation from 0.5 above NEARLY_CONSTANT_DEVIATION) carries
    almost no information. Raises ValueError when there are no codes.
    """
    bits = _check_bits(bits, "bits")
    if bits.shape[0] == 0:
        raise ValueError("bit balance needs at least one code, got 0")
    fraction = bits.mean(axis=0)
    deviation = np.abs(fraction - 0.5)
    # Binary entropy in bits, with 0 log 0 = 0 for constant bits.
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -(fraction * np.log2(fraction) + (1 - fraction) * np.log2(1 - fraction))
    entropy = np.nan_to_num(entropy, nan=0.0)
    return {
        "num_codes": int(bits.shape[0]),
        "fraction_ones": fraction.tolist(),
        "mean_abs_deviation": float(deviation.mean()),
        "max_deviation": float(deviation.max()),
        "max_deviation_bit": int(deviation.argmax()),
        "nearly_constant_deviation": NEARLY_CONSTANT_DEVIATION,
        "num_nearly_constant": int((deviation > NEARLY_CONSTANT_DEVIATION).sum()),
        "mean_entropy_bits": float(entropy.mean()),
    }


def read_class_embeddings(path) -> ClassEmbeddings:
    """Read `embeddings` [C, H], `class_names` [C], optional `seen` [C] and `text_mean` [H].

    `seen` is all True when the file has none. `text_mean` is None when the file has
    none or an empty one (training without centring). Raises FileNotFoundError for a
    missing file and ValueError naming the array for invalid contents.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class embeddings file {path} not found")
    arrays = code_files.load_npz(path, "Store class names as a numpy string array.")

    for required in ("embeddings", "class_names"):
        if required not in arrays:
            raise ValueError(
                f"{path} has no array '{required}' (it has {sorted(arrays)}). A class "
                "embeddings file needs 'embeddings' [C, H] and 'class_names' [C]."
            )
    embeddings = arrays["embeddings"]
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise ValueError(
            f"{path}: 'embeddings' must be a 2-D float array [C, H], got shape "
            f"{embeddings.shape} and dtype {embeddings.dtype}"
        )
    num_classes = embeddings.shape[0]
    class_names = arrays["class_names"]
    if class_names.shape != (num_classes,) or class_names.dtype.kind != "U":
        raise ValueError(
            f"{path}: 'class_names' must be {num_classes} strings, one per embedding row, "
            f"got shape {class_names.shape} and dtype {class_names.dtype}"
        )
    seen = arrays.get("seen")
    if seen is None:
        seen = np.ones(num_classes, dtype=bool)
    elif seen.shape != (num_classes,) or not (
        seen.dtype == np.bool_ or np.isin(seen, (0, 1)).all()
    ):
        raise ValueError(
            f"{path}: 'seen' must be {num_classes} bools, one per class, got shape {seen.shape} "
            f"and dtype {seen.dtype}"
        )
    text_mean = arrays.get("text_mean")
    if text_mean is not None and text_mean.size == 0:
        text_mean = None
    if text_mean is not None and text_mean.shape != embeddings.shape[1:]:
        raise ValueError(
            f"{path}: 'text_mean' must be empty or have shape ({embeddings.shape[1]},) like "
            f"an embedding row, got {text_mean.shape}"
        )
    vocabulary = arrays.get("vocabulary")
    vocabulary = class_names if vocabulary is None else vocabulary
    return ClassEmbeddings(
        embeddings, class_names, seen.astype(bool), text_mean, tuple(str(n) for n in vocabulary)
    )


def check_inputs(
    prototypes: CodeSet, database: CodeSet, embeddings=None, class_names=None, seen=None
):
    """Raise ValueError unless the prototypes, database codes and text arrays fit together.

    Both code sets must have the same code length, and the database must not be empty.
    Embeddings, class names and `seen` must have one row per prototype. The class names
    must equal those stored with the prototypes, and the error names the first mismatch.
    """
    num_classes = len(prototypes)
    if prototypes.bits != database.bits:
        raise ValueError(
            f"the prototypes have {prototypes.bits}-bit codes but the database has "
            f"{database.bits}-bit codes. Both must come from the same evaluation."
        )
    if len(database) == 0:
        raise ValueError("the database has no codes, so its bit balance is undefined")
    if embeddings is not None and np.shape(embeddings)[0] != num_classes:
        raise ValueError(
            f"there are {np.shape(embeddings)[0]} class embeddings but {num_classes} "
            "prototypes. Both must list the same classes."
        )
    if seen is not None and np.shape(seen) != (num_classes,):
        raise ValueError(
            f"'seen' must have one entry per prototype ({num_classes}), got shape {np.shape(seen)}"
        )

    stored = prototypes.class_names
    if stored is not None and len(stored) != num_classes:
        raise ValueError(f"the prototypes have {len(stored)} class names for {num_classes} codes")
    if class_names is None or stored is None:
        return
    if len(class_names) != num_classes:
        raise ValueError(f"there are {len(class_names)} class names for {num_classes} prototypes")
    for index, (prototype_name, text_name) in enumerate(zip(stored, class_names, strict=True)):
        if str(prototype_name) != str(text_name):
            raise ValueError(
                f"class {index} is '{prototype_name}' in the prototypes but '{text_name}' in "
                "the class embeddings. Both files must come from the same evaluation."
            )


def analyze(
    prototypes: CodeSet,
    database: CodeSet,
    embeddings=None,
    class_names=None,
    seen=None,
    *,
    text_mean=None,
) -> dict:
    """Analyse the prototypes against each other, the text embeddings and the database codes.

    `embeddings` [C, H] and `class_names` [C] are optional; without embeddings the text
    comparison is skipped. `seen` [C] marks the classes trained on, and is all True when
    None. A `text_mean` [H] is subtracted from the embeddings before the cosines.
    Returns a JSON-ready dict. Pairs of equal distance are resolved by the lower class
    index. Raises ValueError from `check_inputs`.
    """
    check_inputs(prototypes, database, embeddings, class_names, seen)
    num_classes = len(prototypes)
    names = _class_names(prototypes, class_names)
    seen = np.ones(num_classes, dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
    prototype_bits = code_bits(prototypes)
    hamming = pairwise_hamming(prototype_bits)
    upper = np.triu_indices(num_classes, k=1)

    report = {
        "num_classes": num_classes,
        "bits": prototypes.bits,
        "num_database": len(database),
        "num_unseen": int((~seen).sum()),
        "class_names": names,
        "unseen_classes": [names[index] for index in np.flatnonzero(~seen)],
        "prototype_hamming": _distance_stats(hamming[upper]),
        "collisions": _collisions(hamming, names),
        "text": {
            "available": embeddings is not None,
            "skipped_reason": None if embeddings is not None else "no class embeddings given",
            "centered": text_mean is not None if embeddings is not None else None,
        },
        "rank_correlation": None,
        "database_bit_balance": bit_balance(code_bits(database)),
        "seen_unseen": None,
    }
    if num_classes >= 2:
        min_index = int(np.argmin(hamming[upper]))
        first, second = upper[0][min_index], upper[1][min_index]
        report["prototype_hamming"]["min_pair"] = [names[first], names[second]]

    cosine = None
    if embeddings is not None:
        cosine = cosine_similarity(embeddings, mean=text_mean)
        report["text"]["embedding_dim"] = int(np.shape(embeddings)[1])
        report["rank_correlation"] = rank_correlation(hamming, cosine)
    if not seen.all():
        report["seen_unseen"] = _seen_unseen(hamming, cosine, seen, names)
    return report


def _check_bits(bits, name: str) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array [N, K] with K >= 1, got shape {bits.shape}")
    if bits.dtype != np.bool_:
        raise ValueError(f"{name} must be bools (True for +1), got dtype {bits.dtype}")
    return bits


def _class_names(prototypes: CodeSet, class_names) -> list[str]:
    if prototypes.class_names is not None:
        return [str(name) for name in prototypes.class_names]
    if class_names is not None:
        return [str(name) for name in class_names]
    return [f"class {index}" for index in range(len(prototypes))]


def _distance_stats(distances: np.ndarray) -> dict:
    """Return min, mean and max of a list of Hamming distances; None and NaN when empty."""
    if len(distances) == 0:
        return {"min": None, "mean": float("nan"), "max": None, "num_pairs": 0}
    return {
        "min": int(distances.min()),
        "mean": float(distances.mean()),
        "max": int(distances.max()),
        "num_pairs": len(distances),
    }


def _collisions(hamming: np.ndarray, names: list[str]) -> dict:
    first, second = np.nonzero(np.triu(hamming == 0, k=1))
    pairs = [[names[i], names[j]] for i, j in zip(first, second, strict=True)]
    return {"count": len(pairs), "pairs": pairs[:MAX_LISTED_COLLISIONS]}


def _seen_unseen(hamming: np.ndarray, cosine, seen: np.ndarray, names: list[str]) -> dict:
    """Return distance stats within and across the seen and unseen groups, and nearest seen."""
    seen_index = np.flatnonzero(seen)
    unseen_index = np.flatnonzero(~seen)

    def within(index):
        block = hamming[np.ix_(index, index)]
        return _distance_stats(block[np.triu_indices(len(index), k=1)])

    result = {
        "seen_seen": within(seen_index),
        "unseen_unseen": within(unseen_index),
        "seen_unseen": _distance_stats(hamming[np.ix_(seen_index, unseen_index)].ravel()),
        "nearest_seen": [],
    }
    if len(seen_index) == 0:
        return result
    for unseen in unseen_index:
        distances = hamming[unseen, seen_index]
        nearest = seen_index[np.argmin(distances)]
        entry = {
            "class": names[unseen],
            "nearest_seen": names[nearest],
            "distance": int(distances.min()),
            "num_nearest": int((distances == distances.min()).sum()),
        }
        if cosine is not None:
            text_nearest = seen_index[np.argmax(cosine[unseen, seen_index])]
            entry["text_nearest_seen"] = names[text_nearest]
            entry["text_cosine"] = float(cosine[unseen, text_nearest])
        result["nearest_seen"].append(entry)
    return result


def format_summary(report: dict, *, max_lines: int = 20) -> str:
    """Return the main numbers of an `analyze` report as plain text, one fact per line.

    Lists at most `max_lines` collisions and unseen classes. The report has them all.
    """
    header = f"Prototypes: {report['num_classes']} classes, {report['bits']} bits"
    if report["num_unseen"]:
        header += f", {report['num_unseen']} unseen"
    lines = [header]
    hamming = report["prototype_hamming"]
    if hamming["num_pairs"]:
        first, second = hamming["min_pair"]
        lines.append(
            f"Pairwise Hamming distance: min {hamming['min']} ({first} / {second}), "
            f"mean {hamming['mean']:.2f}, max {hamming['max']}"
        )
    collisions = report["collisions"]
    lines.append(f"Collisions (identical prototypes): {collisions['count']}")
    lines += [f"  {first} = {second}" for first, second in collisions["pairs"][:max_lines]]
    if collisions["count"] > max_lines:
        lines.append(f"  ... and {collisions['count'] - max_lines} more")

    correlation = report["rank_correlation"]
    if correlation is None:
        lines.append(f"Text comparison skipped: {report['text']['skipped_reason']}")
    elif correlation["reason"] is not None:
        lines.append(f"Rank correlation undefined: {correlation['reason']}")
    else:
        lines.append(
            f"Hamming vs text cosine distance over {correlation['num_pairs']} pairs: "
            f"Spearman rho {correlation['spearman_rho']:.3f}, "
            f"Kendall tau {correlation['kendall_tau']:.3f}"
        )

    balance = report["database_bit_balance"]
    lines.append(
        f"Database bit balance ({balance['num_codes']} codes): mean |p(+1) - 0.5| "
        f"{balance['mean_abs_deviation']:.3f}, max {balance['max_deviation']:.3f} "
        f"(bit {balance['max_deviation_bit']}), {balance['num_nearly_constant']} nearly "
        f"constant bits, mean entropy {balance['mean_entropy_bits']:.3f} bits"
    )

    groups = report["seen_unseen"]
    if groups is not None:
        for key, label in [
            ("seen_seen", "seen-seen"),
            ("unseen_unseen", "unseen-unseen"),
            ("seen_unseen", "seen-unseen"),
        ]:
            group = groups[key]
            if group["num_pairs"]:
                lines.append(
                    f"Hamming {label}: min {group['min']}, mean {group['mean']:.2f} "
                    f"(pairs: {group['num_pairs']})"
                )
        if groups["nearest_seen"]:
            lines.append("Unseen class -> nearest seen prototype:")
        for entry in groups["nearest_seen"][:max_lines]:
            line = f"  {entry['class']} -> {entry['nearest_seen']} (distance {entry['distance']}"
            if entry["num_nearest"] > 1:
                line += f", {entry['num_nearest']} seen classes at this distance"
            if "text_nearest_seen" in entry:
                line += f"; nearest in text: {entry['text_nearest_seen']}"
            lines.append(line + ")")
        if len(groups["nearest_seen"]) > max_lines:
            lines.append(f"  ... and {len(groups['nearest_seen']) - max_lines} more")
    return "\n".join(lines)


def write_heatmaps(path, hamming, class_names, *, bits: int, cosine=None, seen=None, rho=None):
    """Write a PNG of the prototype Hamming distances next to the text cosine similarities.

    `hamming` [C, C] comes from `pairwise_hamming` and `cosine` [C, C] from
    `cosine_similarity`. Without `cosine`, only the Hamming heatmap is drawn. Unseen
    classes (`seen` False) get a '*' after their name. The diagonal is left blank, so
    that the colour scale covers the distinct pairs. Writes atomically; returns the path.
    """
    # The object-oriented API with the Agg canvas leaves pyplot's backend and figures
    # alone, so this also works inside notebooks.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = pathlib.Path(path)
    num_classes = len(class_names)
    seen = np.ones(num_classes, dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
    labels = [
        f"{name}*" if not is_seen else str(name)
        for name, is_seen in zip(class_names, seen, strict=True)
    ]
    panels = [("Prototype Hamming distance", hamming, "viridis", 0, bits)]
    if cosine is not None:
        # Reversed, so that similar classes are dark in both panels.
        panels.append(("Text cosine similarity", cosine, "viridis_r", None, None))

    side = min(max(4.0, 0.22 * num_classes + 2.0), 10.0)
    figure = Figure(figsize=(side * len(panels) + 1.0, side + 0.8))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (title, matrix, colormap, low, high) in zip(axes, panels, strict=True):
        masked = np.asarray(matrix, dtype=np.float64).copy()
        np.fill_diagonal(masked, np.nan)
        image = axis.imshow(masked, cmap=colormap, vmin=low, vmax=high, interpolation="nearest")
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(title)
        # NOTE: above 40 classes the names overlap at any readable font size.
        if num_classes <= 40:
            font_size = 8 if num_classes <= 20 else 6
            axis.set_xticks(range(num_classes), labels, rotation=90, fontsize=font_size)
            axis.set_yticks(range(num_classes), labels, fontsize=font_size)
        else:
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlabel(f"{num_classes} classes in index order")

    title = f"{num_classes} class prototypes, {bits} bits"
    if rho is not None and not np.isnan(rho):
        title += f"; Spearman rho (Hamming vs 1 - cosine) = {rho:.3f}"
    if not seen.all():
        title += "; * = unseen class"
    figure.suptitle(title)
    figure.tight_layout()
    # Written through a temporary file, so a reader never sees a partial PNG.
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, path)
    return path
