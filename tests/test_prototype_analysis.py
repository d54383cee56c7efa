"""Tests for the prototype analysis library and the analyze_prototypes binary."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpl_image

from semhash_jax.retrieval import code_files
from semhash_jax.retrieval import prototype_analysis as analysis

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Four 8-bit prototypes. Pairwise distances, worked out by hand:
# AB 2, AC 4, AD 2, BC 6, BD 0, CD 6, so min 0 (B = D), mean 20 / 6, max 6.
FOUR_NAMES = ["A", "B", "C", "D"]
FOUR_CODES = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1],
    ],
    dtype=bool,
)

# Database codes with one constant bit (p = 1), one balanced bit (p = 1/2) and one at
# p = 1/4. Deviations from 1/2: 1/2, 0, 1/4. Entropies: 0, 1 and
# H(1/4) = 2 - (3/4) log2(3) bits.
BALANCE_CODES = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=bool)
ENTROPY_QUARTER = 2 - 0.75 * math.log2(3)

# Thermometer codes on a line: class i has its first LINE_POSITIONS[i] bits set, so
# d(i, j) = |p_i - p_j|. The 6 distances 1, 3, 7, 2, 6, 4 are distinct, because float
# cosines of equal angles need not be equal and would break ties differently.
LINE_NAMES = ["zero", "one", "two", "three"]
LINE_POSITIONS = [0, 1, 3, 7]
LINE_CODES = np.array([[bit < position for bit in range(8)] for position in LINE_POSITIONS])


def line_embeddings():
    """Unit vectors at 10 p_i degrees, so that 1 - cosine grows with |p_i - p_j| like the codes."""
    angles = np.radians(10.0 * np.array(LINE_POSITIONS))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def code_set(path, codes, names, labels=None):
    labels = np.arange(len(codes)) if labels is None else labels
    code_files.write_code_file(path, codes, labels, ids=np.arange(len(codes)), class_names=names)
    return code_files.read_code_file(path)


def loop_hamming(bits):
    rows = [list(row) for row in bits]
    return [[sum(a != b for a, b in zip(x, y)) for y in rows] for x in rows]


def average_ranks(values):
    """Ranks from 1, with tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return np.array(ranks)


def test_hamming_hand_table():
    bits = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)

    distances = analysis.pairwise_hamming(bits)

    np.testing.assert_array_equal(distances, [[0, 2, 2], [2, 0, 4], [2, 4, 0]])


def test_hamming_matches_loops():
    bits = np.random.default_rng(0).integers(0, 2, size=(7, 37)).astype(bool)

    np.testing.assert_array_equal(analysis.pairwise_hamming(bits), loop_hamming(bits))


def test_hamming_rejects_signs():
    with pytest.raises(ValueError, match="bools"):
        analysis.pairwise_hamming(np.array([[1, -1]]))


def test_cosine_orthogonal_and_parallel():
    cosine = analysis.cosine_similarity([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])

    np.testing.assert_allclose(cosine, [[1, 0, 1], [0, 1, 0], [1, 0, 1]], atol=1e-12)


def test_cosine_subtracts_given_mean():
    # Minus the mean (1, 1), the rows are (1, 0) and (-1, 0): opposite directions.
    cosine = analysis.cosine_similarity([[2.0, 1.0], [0.0, 1.0]], mean=[1.0, 1.0])

    assert cosine[0, 1] == pytest.approx(-1.0)


def test_cosine_rejects_wrong_mean_shape():
    with pytest.raises(ValueError, match=r"mean must have shape \(2,\)"):
        analysis.cosine_similarity([[2.0, 1.0], [0.0, 1.0]], mean=[1.0, 1.0, 1.0])


def test_cosine_rejects_zero_row():
    with pytest.raises(ValueError, match="row 1 has zero norm"):
        analysis.cosine_similarity([[1.0, 0.0], [0.0, 0.0]])


def test_analyze_four_class_stats(tmp_path):
    prototypes = code_set(tmp_path / "prototypes.npz", FOUR_CODES, FOUR_NAMES)
    database = code_set(tmp_path / "database.npz", BALANCE_CODES[:, [0, 1, 2, 0, 1, 2, 0, 1]], None)

    report = analysis.analyze(prototypes, database)

    hamming = report["prototype_hamming"]
    assert hamming["min"] == 0
    assert hamming["mean"] == pytest.approx(20 / 6)
    assert hamming["max"] == 6
    assert hamming["num_pairs"] == 6
    assert hamming["min_pair"] == ["B", "D"]
    assert report["collisions"] == {"count": 1, "pairs": [["B", "D"]]}
    assert report["rank_correlation"] is None
    assert report["seen_unseen"] is None


def test_analyze_seen_unseen_groups(tmp_path):
    prototypes = code_set(tmp_path / "prototypes.npz", FOUR_CODES, FOUR_NAMES)
    database = code_set(tmp_path / "database.npz", FOUR_CODES, FOUR_NAMES)
    seen = np.array([True, True, False, False])

    report = analysis.analyze(prototypes, database, class_names=FOUR_NAMES, seen=seen)

    groups = report["seen_unseen"]
    assert report["unseen_classes"] == ["C", "D"]
    assert groups["seen_seen"] == {"min": 2, "mean": 2.0, "max": 2, "num_pairs": 1}
    assert groups["unseen_unseen"] == {"min": 6, "mean": 6.0, "max": 6, "num_pairs": 1}
    # Seen-unseen pairs: AC 4, AD 2, BC 6, BD 0.
    assert groups["seen_unseen"] == {"min": 0, "mean": 3.0, "max": 6, "num_pairs": 4}
    nearest = {entry["class"]: entry for entry in groups["nearest_seen"]}
    assert (nearest["C"]["nearest_seen"], nearest["C"]["distance"]) == ("A", 4)
    assert (nearest["D"]["nearest_seen"], nearest["D"]["distance"]) == ("B", 0)


def test_rank_correlation_monotone_is_one():
    hamming = analysis.pairwise_hamming(LINE_CODES)
    cosine = analysis.cosine_similarity(line_embeddings())

    result = analysis.rank_correlation(hamming, cosine)

    assert result["spearman_rho"] == pytest.approx(1.0)
    assert result["kendall_tau"] == pytest.approx(1.0)
    assert result["num_pairs"] == 6
    assert result["reason"] is None


def test_rank_correlation_reversed_is_minus_one():
    hamming = analysis.pairwise_hamming(LINE_CODES)
    # Cosine similarity that grows with the Hamming distance: text-close means code-far.
    cosine = hamming / 10.0

    result = analysis.rank_correlation(hamming, cosine)

    assert result["spearman_rho"] == pytest.approx(-1.0)
    assert result["kendall_tau"] == pytest.approx(-1.0)


def test_rank_correlation_three_pairs_by_hand():
    # Pairs (0, 1), (0, 2), (1, 2): Hamming 1, 2, 3 and cosine distances 0.1, 0.3, 0.2.
    # Spearman: sum d^2 = 2, rho = 1 - 6 * 2 / (3 * 8) = 1/2. Kendall: 2 concordant
    # pairs and 1 discordant, tau = 1/3.
    hamming = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]])
    cosine = 1 - np.array([[0, 0.1, 0.3], [0.1, 0, 0.2], [0.3, 0.2, 0]])

    result = analysis.rank_correlation(hamming, cosine)

    assert result["spearman_rho"] == pytest.approx(0.5)
    assert result["kendall_tau"] == pytest.approx(1 / 3)


def test_spearman_matches_own_ranking():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2, size=(9, 6)).astype(bool)
    embeddings = rng.normal(size=(9, 5))
    hamming = np.array(loop_hamming(codes))
    upper = np.triu_indices(9, k=1)
    cosine = embeddings @ embeddings.T
    norms = np.sqrt(np.diag(cosine))
    cosine = cosine / np.outer(norms, norms)
    expected = np.corrcoef(average_ranks(list(hamming[upper])), average_ranks(list(-cosine[upper])))

    result = analysis.rank_correlation(hamming, analysis.cosine_similarity(embeddings))

    assert result["spearman_rho"] == pytest.approx(expected[0, 1])


def test_rank_correlation_two_classes_nan():
    result = analysis.rank_correlation(np.array([[0, 3], [3, 0]]), np.eye(2))

    assert math.isnan(result["spearman_rho"])
    assert math.isnan(result["kendall_tau"])
    assert "fewer than 3 classes" in result["reason"]


def test_rank_correlation_constant_hamming_nan():
    hamming = 2 * (1 - np.eye(3, dtype=int))
    cosine = analysis.cosine_similarity([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    result = analysis.rank_correlation(hamming, cosine)

    assert math.isnan(result["spearman_rho"])
    assert "Hamming distances are equal" in result["reason"]


def test_bit_balance_hand_table():
    balance = analysis.bit_balance(BALANCE_CODES)

    assert balance["num_codes"] == 4
    assert balance["fraction_ones"] == [1.0, 0.5, 0.25]
    assert balance["mean_abs_deviation"] == pytest.approx(0.25)
    assert balance["max_deviation"] == pytest.approx(0.5)
    assert balance["max_deviation_bit"] == 0
    assert balance["num_nearly_constant"] == 1
    assert balance["mean_entropy_bits"] == pytest.approx((0 + 1 + ENTROPY_QUARTER) / 3)


def test_bit_balance_rejects_no_codes():
    with pytest.raises(ValueError, match="at least one code"):
        analysis.bit_balance(np.zeros((0, 4), dtype=bool))


def test_mismatched_class_names_raise(tmp_path):
    prototypes = code_set(tmp_path / "prototypes.npz", FOUR_CODES, FOUR_NAMES)
    database = code_set(tmp_path / "database.npz", FOUR_CODES, FOUR_NAMES)

    with pytest.raises(ValueError, match="class 2 is 'C' in the prototypes but 'X'"):
        analysis.analyze(prototypes, database, np.eye(4), class_names=["A", "B", "X", "Y"])


def test_mismatched_bits_raise(tmp_path):
    prototypes = code_set(tmp_path / "prototypes.npz", FOUR_CODES, FOUR_NAMES)
    database = code_set(tmp_path / "database.npz", FOUR_CODES[:, :6], FOUR_NAMES)

    with pytest.raises(ValueError, match="8-bit codes but the database has 6-bit"):
        analysis.analyze(prototypes, database)


def test_embedding_rows_must_match(tmp_path):
    prototypes = code_set(tmp_path / "prototypes.npz", FOUR_CODES, FOUR_NAMES)
    database = code_set(tmp_path / "database.npz", FOUR_CODES, FOUR_NAMES)

    with pytest.raises(ValueError, match="3 class embeddings but 4 prototypes"):
        analysis.analyze(prototypes, database, np.eye(3, 4))


def test_read_class_embeddings_defaults(tmp_path):
    np.savez(tmp_path / "text.npz", embeddings=line_embeddings(), class_names=LINE_NAMES)

    text = analysis.read_class_embeddings(tmp_path / "text.npz")

    np.testing.assert_array_equal(text.seen, [True] * 4)
    assert text.class_names.tolist() == LINE_NAMES
    assert text.text_mean is None


def test_read_class_embeddings_empty_mean(tmp_path):
    # Training without centring stores an empty text_mean.
    np.savez(
        tmp_path / "text.npz",
        embeddings=line_embeddings(),
        class_names=LINE_NAMES,
        text_mean=np.zeros(0, np.float32),
    )

    assert analysis.read_class_embeddings(tmp_path / "text.npz").text_mean is None


def test_analyze_with_text_mean(tmp_path):
    prototypes = code_set(tmp_path / "prototypes.npz", LINE_CODES, LINE_NAMES)
    database = code_set(tmp_path / "database.npz", LINE_CODES, LINE_NAMES)
    # Minus the mean (1, 0), the unit vector at 0 degrees becomes the zero vector.
    embeddings = line_embeddings().astype(np.float64)

    with pytest.raises(ValueError, match="row 0 has zero norm after subtracting the mean"):
        analysis.analyze(prototypes, database, embeddings, LINE_NAMES, text_mean=[1.0, 0.0])
    report = analysis.analyze(prototypes, database, embeddings, LINE_NAMES, text_mean=[0.0, -1.0])

    assert report["text"]["centered"] is True
    assert report["rank_correlation"]["num_pairs"] == 6


def test_read_class_embeddings_rejects_bad_seen(tmp_path):
    np.savez(
        tmp_path / "text.npz",
        embeddings=line_embeddings(),
        class_names=LINE_NAMES,
        seen=np.array([True, False]),
    )

    with pytest.raises(ValueError, match="'seen' must be 4 bools"):
        analysis.read_class_embeddings(tmp_path / "text.npz")


def write_eval_files(workdir, *, embeddings=True, names=LINE_NAMES, text_mean=None):
    """Write the line case: 4 classes, the last one unseen, and the balance database."""
    eval_dir = workdir / "eval"
    eval_dir.mkdir(parents=True)
    code_files.write_code_file(
        eval_dir / "prototypes.npz",
        LINE_CODES,
        np.arange(4),
        ids=np.arange(4),
        class_names=LINE_NAMES,
    )
    # 8-bit database codes: bits 0-2 and 3-5 repeat the balance table, bits 6-7 are
    # balanced, so the deviations are 1/2, 0, 1/4, 1/2, 0, 1/4, 0, 0.
    database = np.concatenate(
        [BALANCE_CODES, BALANCE_CODES, np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)],
        axis=1,
    )
    code_files.write_code_file(eval_dir / "database.npz", database, np.array([0, 1, 2, 3]))
    if embeddings:
        text_arrays = {
            "embeddings": line_embeddings(),
            "class_names": np.array(names),
            "seen": np.array([True, True, True, False]),
        }
        if text_mean is not None:
            text_arrays["text_mean"] = np.asarray(text_mean, np.float32)
        np.savez(eval_dir / "class_embeddings.npz", **text_arrays)
    return eval_dir


def run_analyze_prototypes(*args):
    return subprocess.run(
        [sys.executable, "-m", "semhash_jax.analyze_prototypes", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = mpl_image.imread(path)
    assert pixels.ndim == 3
    assert min(pixels.shape[:2]) > 100


def test_binary_end_to_end(tmp_path):
    write_eval_files(tmp_path)
    output_dir = tmp_path / "analysis"

    result = run_analyze_prototypes(f"--workdir={tmp_path}", f"--output_dir={output_dir}")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Spearman rho 1.000" in result.stdout
    assert "three -> two (distance 4; nearest in text: two)" in result.stdout
    assert f"Report written to {output_dir / 'prototype_analysis.json'}" in result.stdout
    report = json.loads((output_dir / "prototype_analysis.json").read_text())
    # Distances |p_i - p_j| over 6 pairs: 1, 3, 7, 2, 6, 4.
    assert report["prototype_hamming"]["min"] == 1
    assert report["prototype_hamming"]["mean"] == pytest.approx(23 / 6)
    assert report["prototype_hamming"]["max"] == 7
    assert report["prototype_hamming"]["min_pair"] == ["zero", "one"]
    assert report["collisions"]["count"] == 0
    assert report["rank_correlation"]["spearman_rho"] == pytest.approx(1.0)
    assert report["rank_correlation"]["kendall_tau"] == pytest.approx(1.0)
    balance = report["database_bit_balance"]
    assert balance["mean_abs_deviation"] == pytest.approx(1.5 / 8)
    assert balance["num_nearly_constant"] == 2
    assert balance["mean_entropy_bits"] == pytest.approx((4 + 2 * ENTROPY_QUARTER) / 8)
    assert report["unseen_classes"] == ["three"]
    assert report["seen_unseen"]["nearest_seen"][0]["nearest_seen"] == "two"
    assert report["seen_unseen"]["nearest_seen"][0]["distance"] == 4
    check_png(output_dir / "prototype_heatmap.png")


def test_binary_without_class_embeddings(tmp_path):
    eval_dir = write_eval_files(tmp_path, embeddings=False)

    result = run_analyze_prototypes(f"--workdir={tmp_path}")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Text comparison skipped" in result.stdout
    report = json.loads((eval_dir / "prototype_analysis.json").read_text())
    assert report["rank_correlation"] is None
    assert report["text"]["available"] is False
    assert "class_embeddings.npz not found" in report["text"]["skipped_reason"]
    assert report["prototype_hamming"]["mean"] == pytest.approx(23 / 6)
    check_png(eval_dir / "prototype_heatmap.png")


def test_binary_missing_prototypes(tmp_path):
    eval_dir = write_eval_files(tmp_path)
    (eval_dir / "prototypes.npz").unlink()

    result = run_analyze_prototypes(f"--workdir={tmp_path}")

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"Error: {eval_dir / 'prototypes.npz'} not found.")
    assert "python -m semhash_jax.evaluate --config=CONFIG" in last_line
    assert "Traceback" not in result.stderr
    assert not (eval_dir / "prototype_analysis.json").exists()


def test_binary_mismatched_names(tmp_path):
    eval_dir = write_eval_files(tmp_path, names=["zero", "one", "deux", "three"])

    result = run_analyze_prototypes(f"--workdir={tmp_path}")

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "class 2 is 'two' in the prototypes but 'deux'" in last_line
    assert f"(files in {eval_dir})" in last_line
    assert "Traceback" not in result.stderr


def test_binary_centers_with_text_mean(tmp_path):
    # Subtracting this mean reorders the text distances: by hand, the ranks of the pairs
    # 01, 02, 03, 12, 13, 23 are 1, 3, 6, 2, 5, 4 in Hamming and 1, 5, 4, 3, 6, 2 in
    # 1 - cosine, so sum d^2 = 14 and rho = 1 - 6 * 14 / (6 * 35) = 0.6.
    eval_dir = write_eval_files(tmp_path, text_mean=[0.9, 0.3])
    shifted = line_embeddings().astype(np.float64) - [0.9, 0.3]
    upper = np.triu_indices(4, k=1)
    cosine = [
        shifted[i] @ shifted[j] / np.sqrt((shifted[i] @ shifted[i]) * (shifted[j] @ shifted[j]))
        for i, j in zip(*upper, strict=True)
    ]
    hamming = [abs(LINE_POSITIONS[i] - LINE_POSITIONS[j]) for i, j in zip(*upper, strict=True)]
    expected = np.corrcoef(average_ranks(hamming), average_ranks([-c for c in cosine]))[0, 1]

    result = run_analyze_prototypes(f"--workdir={tmp_path}", "--center_embeddings")

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((eval_dir / "prototype_analysis.json").read_text())
    assert report["text"]["centered"] is True
    assert expected == pytest.approx(0.6)
    assert report["rank_correlation"]["spearman_rho"] == pytest.approx(expected)


def test_binary_center_needs_text_mean(tmp_path):
    write_eval_files(tmp_path)

    result = run_analyze_prototypes(f"--workdir={tmp_path}", "--center_embeddings")

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "--center_embeddings needs the array 'text_mean'" in last_line
    assert "Run without --center_embeddings." in last_line
    assert "Traceback" not in result.stderr
