"""Tests for code files (.npz) and the evaluate_codes binary."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from semhash_jax.retrieval import code_files
from semhash_jax.retrieval.codes import pack_codes

SIGNS = np.array([[1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, -1], [-1] * 12])


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "codes",
    [SIGNS, (SIGNS > 0).astype(np.uint8), SIGNS > 0, SIGNS.astype(np.float32)],
    ids=["signs", "zero_one_uint8", "bool", "float_signs"],
)
def test_unpacked_forms_read_alike(tmp_path, codes):
    path = write_npz(tmp_path / "codes.npz", codes=codes, labels=np.array([3, 4]))

    read = code_files.read_code_file(path)

    assert read.bits == 12
    np.testing.assert_array_equal(read.packed, pack_codes(SIGNS))
    np.testing.assert_array_equal(read.labels, [3, 4])


def test_packed_bytes_read(tmp_path):
    # numpy.packbits puts bit 0 of a code in the highest bit of byte 0.
    packed = np.packbits(SIGNS > 0, axis=1)
    assert packed.shape == (2, 2)
    path = write_npz(tmp_path / "codes.npz", codes=packed, bits=12, labels=np.array([0, 1]))

    read = code_files.read_code_file(path)

    assert read.bits == 12
    np.testing.assert_array_equal(read.packed, pack_codes(SIGNS))


def test_write_then_read_round_trip(tmp_path):
    path = tmp_path / "set.npz"
    labels = np.array([[1, 0, 1], [0, 0, 0]])

    code_files.write_code_file(
        path, SIGNS, labels, ids=np.array([10, 11]), class_names=["a", "b", "c"]
    )
    read = code_files.read_code_file(path)

    np.testing.assert_array_equal(read.packed, pack_codes(SIGNS))
    np.testing.assert_array_equal(read.labels, labels)
    np.testing.assert_array_equal(read.ids, [10, 11])
    np.testing.assert_array_equal(read.class_names, ["a", "b", "c"])
    with np.load(path) as archive:
        assert archive["codes"].dtype == np.uint8
        assert int(archive["bits"]) == 12


def test_one_bit_codes_are_not_mistaken_for_packed(tmp_path):
    path = write_npz(
        tmp_path / "codes.npz", codes=np.array([[0], [1]], np.uint8), bits=1, labels=[0, 1]
    )
    np.testing.assert_array_equal(code_files.read_code_file(path).packed, [[0], [1]])

    packed = np.packbits(np.array([[False], [True]]), axis=1)  # 0 and 128
    path = write_npz(tmp_path / "packed.npz", codes=packed, bits=1, labels=[0, 1])
    np.testing.assert_array_equal(code_files.read_code_file(path).packed, [[0], [1]])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"labels": [0, 1]}, "has no array 'codes'"),
        ({"codes": SIGNS}, "has no array 'labels'"),
        ({"codes": SIGNS[0], "labels": [0]}, "must be a 2-D array"),
        ({"codes": SIGNS * 2, "labels": [0, 1]}, "only -1/\\+1 or only 0/1"),
        ({"codes": np.where(SIGNS == SIGNS[0, 0], 0, SIGNS), "labels": [0, 1]}, "-1/\\+1"),
        ({"codes": SIGNS, "labels": [0, 1, 2]}, "'labels' must be 2 integer class ids"),
        ({"codes": SIGNS, "labels": [0.5, 1.0]}, "integer class ids"),
        ({"codes": SIGNS, "labels": [[0, 2], [1, 0]]}, "multi-hot rows of 0 and 1"),
        ({"codes": SIGNS, "bits": 10, "labels": [0, 1]}, "has 12 columns but 'bits' is 10"),
        ({"codes": np.full((2, 2), 255, np.uint8), "bits": 12, "labels": [0, 1]}, "set bits after"),
        ({"codes": np.full((2, 2), 7, np.uint8), "labels": [0, 1]}, "no 'bits' entry"),
        ({"codes": np.zeros((2, 5), np.uint8), "bits": 12, "labels": [0, 1]}, "packed columns"),
        ({"codes": SIGNS, "bits": -3, "labels": [0, 1]}, "positive integer scalar"),
        ({"codes": SIGNS, "labels": [0, 1], "ids": [1]}, "'ids' must be a 1-D array of 2"),
    ],
)
def test_invalid_files_name_the_array(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)

    with pytest.raises(ValueError, match=message):
        code_files.read_code_file(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        code_files.read_code_file(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz file"):
        code_files.read_code_file(tmp_path / "text.npz")
    np.savez(tmp_path / "objects.npz", codes=np.array([SIGNS, None], dtype=object), labels=[0])
    with pytest.raises(ValueError, match="object arrays"):
        code_files.read_code_file(tmp_path / "objects.npz")


def run_evaluate_codes(*args):
    return subprocess.run(
        [sys.executable, "-m", "semhash_jax.evaluate_codes", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_evaluate_codes_binary(tmp_path):
    # Two queries against the hand case of test_metrics: "00" (class 1) scores
    # AP@all 5/12; "11" (class 0) ranks b, c, d at distance 1 and a at 2, relevance
    # [1, 0, 0, 1]: AP@all (1 + 2/4) / 2 = 3/4. mAP@all = (5/12 + 3/4) / 2 = 7/12.
    code_files.write_code_file(
        tmp_path / "query.npz", np.array([[-1, -1], [1, 1]]), np.array([1, 0])
    )
    database = np.array([[-1, -1], [1, -1], [-1, 1], [1, -1]])
    np.savez(
        tmp_path / "database.npz",
        codes=np.packbits(database > 0, axis=1),
        bits=2,
        labels=np.array([0, 0, 1, 1]),
    )

    result = run_evaluate_codes(
        f"--query={tmp_path / 'query.npz'}",
        f"--database={tmp_path / 'database.npz'}",
        "--radius=1",
        f"--out={tmp_path / 'out' / 'results.json'}",
        f"--plots={tmp_path / 'plots'}",
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "mAP@all" in result.stdout
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["metrics"]["mAP@all"] == pytest.approx(7 / 12)
    assert written["radius"] == 1
    assert written["query_file"].endswith("query.npz")
    assert (tmp_path / "plots" / "pr_by_radius.png").stat().st_size > 0
    assert (tmp_path / "plots" / "precision_at_n.png").stat().st_size > 0


def test_evaluate_codes_rejects_mismatched_bits(tmp_path):
    code_files.write_code_file(tmp_path / "query.npz", SIGNS, np.array([0, 1]))
    code_files.write_code_file(tmp_path / "database.npz", SIGNS[:, :8], np.array([0, 1]))

    result = run_evaluate_codes(
        f"--query={tmp_path / 'query.npz'}", f"--database={tmp_path / 'database.npz'}"
    )

    assert result.returncode != 0
    assert "12-bit codes" in result.stderr
    assert "8-bit codes" in result.stderr


def test_evaluate_codes_reports_bad_file(tmp_path):
    np.savez(tmp_path / "query.npz", codes=SIGNS * 3, labels=np.array([0, 1]))
    code_files.write_code_file(tmp_path / "database.npz", SIGNS, np.array([0, 1]))

    result = run_evaluate_codes(
        f"--query={tmp_path / 'query.npz'}", f"--database={tmp_path / 'database.npz'}"
    )

    assert result.returncode != 0
    assert "query.npz: 'codes' must contain only -1/+1 or only 0/1" in result.stderr
    assert "Traceback" not in result.stderr
    assert "USAGE" not in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--top_k=0", "--top_k=0 must be at least 1"),
        ("--radius=13", r"--radius=13 must be in \[0, 12\] for these 12-bit codes"),
    ],
)
def test_evaluate_codes_reports_bad_flag(tmp_path, flag, message):
    code_files.write_code_file(tmp_path / "query.npz", SIGNS, np.array([0, 1]))
    code_files.write_code_file(tmp_path / "database.npz", SIGNS, np.array([0, 1]))

    result = run_evaluate_codes(
        f"--query={tmp_path / 'query.npz'}", f"--database={tmp_path / 'database.npz'}", flag
    )

    assert result.returncode != 0
    assert re.search(message, result.stderr)
    assert "labels from" not in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_codes_warns_when_nothing_is_relevant(tmp_path):
    code_files.write_code_file(tmp_path / "query.npz", SIGNS, np.array([5, 6]))
    code_files.write_code_file(tmp_path / "database.npz", SIGNS, np.array([0, 1]))

    result = run_evaluate_codes(
        f"--query={tmp_path / 'query.npz'}", f"--database={tmp_path / 'database.npz'}"
    )

    assert result.returncode == 0
    assert "Warning: no query shares a label" in result.stderr


def test_evaluate_codes_names_files_on_label_mismatch(tmp_path):
    code_files.write_code_file(tmp_path / "query.npz", SIGNS, np.array([0, 1]))
    code_files.write_code_file(tmp_path / "database.npz", SIGNS, np.array([[1, 0], [0, 1]]))

    result = run_evaluate_codes(
        f"--query={tmp_path / 'query.npz'}", f"--database={tmp_path / 'database.npz'}"
    )

    assert result.returncode != 0
    assert "same kind" in result.stderr
    assert "database labels from" in result.stderr
    assert "Traceback" not in result.stderr
