"""Tests of class name embeddings from word vector files written by hand in tmp_path.

Expected values are computed here with numpy from the numbers in the files.
"""

import gzip
import logging

import numpy as np
import pytest

from semhash_jax.text.word_vectors import embed_names, file_identity, tokenize

# GloVe format: no header line, a word and 3 values per row.
GLOVE_TEXT = """\
cat 1.0 2.0 2.0
dog 0.0 3.0 4.0
ankle 1.0 0.0 0.0
boot 0.0 1.0 0.0
Apple 2.0 0.0 0.0
apple 0.0 2.0 0.0
t 1.0 1.0 0.0
shirt 0.0 1.0 1.0
rex 0.0 0.0 5.0
zero 0.0 0.0 0.0
"""

CAT = np.array([1.0, 2.0, 2.0])
DOG = np.array([0.0, 3.0, 4.0])
ANKLE = np.array([1.0, 0.0, 0.0])
BOOT = np.array([0.0, 1.0, 0.0])


def _write(tmp_path, text, name="vectors.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _unit(vector):
    return vector / np.linalg.norm(vector)


def test_glove_format_normalized(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["cat", "dog"], path)

    assert result.dim == 3
    assert result.embeddings.dtype == np.float32
    assert result.embeddings.shape == (2, 3)
    np.testing.assert_allclose(result.embeddings[0], _unit(CAT), rtol=1e-6)
    np.testing.assert_allclose(result.embeddings[1], _unit(DOG), rtol=1e-6)
    assert result.out_of_vocabulary == {}


def test_glove_format_unnormalized(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["cat", "dog"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], CAT, rtol=1e-6)
    np.testing.assert_allclose(result.embeddings[1], DOG, rtol=1e-6)


def test_word2vec_header_format(tmp_path):
    path = _write(tmp_path, "2 4\nsky 1.0 -1.0 0.5 0.25\nsea 0.0 2.0 0.0 -2.0\n", "vectors.vec")

    result = embed_names(["sea", "sky"], path, normalize=False)

    assert result.dim == 4
    np.testing.assert_allclose(result.embeddings[0], [0.0, 2.0, 0.0, -2.0], rtol=1e-6)
    np.testing.assert_allclose(result.embeddings[1], [1.0, -1.0, 0.5, 0.25], rtol=1e-6)


def test_word2vec_trailing_space_and_crlf(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_bytes(b"1 2\r\nsky 1.5 -2.5 \r\n")

    result = embed_names(["sky"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [1.5, -2.5], rtol=1e-6)


def test_gzip_file(tmp_path):
    path = tmp_path / "vectors.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write(GLOVE_TEXT)

    result = embed_names(["dog"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], DOG, rtol=1e-6)


def test_truncated_gzip_raises(tmp_path):
    path = tmp_path / "vectors.txt.gz"
    path.write_bytes(gzip.compress(GLOVE_TEXT.encode())[:-12])

    with pytest.raises(ValueError, match="gzip") as error:
        embed_names(["cat", "okapi"], path)

    assert str(path) in str(error.value)


def test_multi_word_name_averaged(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    unnormalized = embed_names(["ankle boot"], path, normalize=False)
    normalized = embed_names(["ankle boot"], path)

    expected = (ANKLE + BOOT) / 2
    np.testing.assert_allclose(unnormalized.embeddings[0], expected, rtol=1e-6)
    np.testing.assert_allclose(normalized.embeddings[0], _unit(expected), rtol=1e-6)


def test_separators_split_words(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["cat/dog", "cat_dog", "cat, dog"], path, normalize=False)

    expected = (CAT + DOG) / 2
    for row in result.embeddings:
        np.testing.assert_allclose(row, expected, rtol=1e-6)


def test_case_fallback_to_lowercase(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["Cat", "DOG"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], CAT, rtol=1e-6)
    np.testing.assert_allclose(result.embeddings[1], DOG, rtol=1e-6)
    assert result.out_of_vocabulary == {}


def test_exact_case_preferred(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["Apple", "apple", "APPLE"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [2.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(result.embeddings[1], [0.0, 2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(result.embeddings[2], [0.0, 2.0, 0.0], rtol=1e-6)


def test_hyphen_fallback_to_parts(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["T-shirt/top", "cat"], path, normalize=False)

    # 'T-shirt' is embedded as the mean of 't' and 'shirt', and 'top' is missing.
    expected = (np.array([1.0, 1.0, 0.0]) + np.array([0.0, 1.0, 1.0])) / 2
    np.testing.assert_allclose(result.embeddings[0], expected, rtol=1e-6)
    assert result.out_of_vocabulary == {"T-shirt/top": ["top"]}


def test_hyphen_whole_word_preferred(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT + "t-shirt 3.0 0.0 4.0\n")

    result = embed_names(["T-shirt"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [3.0, 0.0, 4.0], rtol=1e-6)


def test_hyphen_missing_part_reported(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["tyrannosaurus-rex"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [0.0, 0.0, 5.0], rtol=1e-6)
    assert result.out_of_vocabulary == {"tyrannosaurus-rex": ["tyrannosaurus"]}


def test_oov_word_reported(tmp_path, caplog):
    path = _write(tmp_path, GLOVE_TEXT)

    with caplog.at_level(logging.WARNING, logger="absl"):
        result = embed_names(["cat", "ankle zebra"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[1], ANKLE, rtol=1e-6)
    assert result.out_of_vocabulary == {"ankle zebra": ["zebra"]}
    assert "'ankle zebra'" in caplog.text
    assert "zebra" in caplog.text.replace("'ankle zebra'", "")
    assert "'cat'" not in caplog.text


def test_all_oov_name_raises(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    with pytest.raises(ValueError, match="--config.class_names") as error:
        embed_names(["cat", "zebra crossing", "okapi"], path)

    message = str(error.value)
    assert "'zebra crossing' (words: zebra, crossing)" in message
    assert "'okapi' (words: okapi)" in message
    assert "'cat'" not in message


def test_inconsistent_dimension_raises(tmp_path):
    path = _write(tmp_path, "cat 1.0 2.0\ndog 3.0 4.0\nboot 5.0\nankle 6.0 7.0\n")

    with pytest.raises(ValueError, match=r"vectors\.txt:3: expected a word followed by 2 values"):
        embed_names(["ankle"], path)


def test_header_dimension_enforced(tmp_path):
    path = _write(tmp_path, "2 3\ncat 1.0 2.0\ndog 3.0 4.0\n")

    with pytest.raises(ValueError, match=r"vectors\.txt:2: expected a word followed by 3 values"):
        embed_names(["dog"], path)


def test_extra_values_raise(tmp_path):
    path = _write(tmp_path, "cat 1.0 2.0\ndog 3.0 4.0 5.0\n")

    with pytest.raises(ValueError, match=r"vectors\.txt:2: expected 2 values after the word 'dog'"):
        embed_names(["dog"], path)


def test_non_float_value_raises(tmp_path):
    path = _write(tmp_path, "cat 1.0 2.0\ndog 3.0 four\n")

    with pytest.raises(ValueError, match=r"vectors\.txt:2: invalid value 'four'"):
        embed_names(["dog"], path)


def test_nan_value_raises(tmp_path):
    path = _write(tmp_path, "cat 1.0 2.0\ndog 3.0 nan\n")

    with pytest.raises(ValueError, match=r"vectors\.txt:2: .*NaN"):
        embed_names(["dog"], path)


def test_word_with_spaces_skipped(tmp_path):
    # GloVe 840B contains rows such as ". . ." whose word has spaces.
    text = "cat 1.0 2.0\n. . . 9.0 9.0\nat name@domain.com 8.0 8.0\nat 3.0 4.0\n"
    path = _write(tmp_path, text)

    result = embed_names(["at"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [3.0, 4.0], rtol=1e-6)


def test_invalid_utf8_raises(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_bytes(b"cat 1.0 2.0\ncaf\xe9 3.0 4.0\n")

    with pytest.raises(ValueError, match=r"vectors\.txt:2: invalid UTF-8"):
        embed_names(["dog"], path)


def test_stops_after_exact_words_found(tmp_path):
    # The invalid last row is never read because 'cat' and 'dog' were found first.
    path = _write(tmp_path, "cat 1.0 2.0\ndog 3.0 4.0\nrow-without-values\n")

    result = embed_names(["dog", "cat"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [3.0, 4.0], rtol=1e-6)


def test_first_vector_of_duplicate_kept(tmp_path):
    path = _write(tmp_path, "cat 1.0 2.0\nDog 5.0 5.0\ncat 7.0 7.0\ndog 3.0 4.0\n")

    result = embed_names(["cat", "Dog"], path, normalize=False)

    np.testing.assert_allclose(result.embeddings[0], [1.0, 2.0], rtol=1e-6)


def test_zero_vector_stays_zero(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    result = embed_names(["zero"], path)

    np.testing.assert_array_equal(result.embeddings[0], [0.0, 0.0, 0.0])


def test_missing_file_raises(tmp_path):
    path = tmp_path / "glove.6B.300d.txt"

    with pytest.raises(FileNotFoundError, match="GloVe") as error:
        embed_names(["cat"], path)

    assert str(path) in str(error.value)
    assert "fastText .vec" in str(error.value)
    assert ".gz" in str(error.value)


@pytest.mark.parametrize("text", ["", "\n", "400000 300\n"])
def test_empty_file_raises(tmp_path, text):
    path = _write(tmp_path, text)

    with pytest.raises(ValueError, match="contains no word vectors") as error:
        embed_names(["cat"], path)

    assert str(path) in str(error.value)


def test_empty_names_raises(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    with pytest.raises(ValueError, match="names is empty"):
        embed_names([], path)


def test_non_str_name_raises(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    with pytest.raises(TypeError, match=r"names\[1\] has type int"):
        embed_names(["cat", 3], path)


def test_single_str_names_raises(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    with pytest.raises(TypeError, match="single str"):
        embed_names("cat", path)


def test_name_without_words_raises(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)

    with pytest.raises(ValueError, match=r"names\[1\] = ' / ' contains no words"):
        embed_names(["cat", " / "], path)


def test_file_identity_changes_with_content(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)
    before = file_identity(path)

    path.write_text(GLOVE_TEXT.replace("cat 1.0", "cat 9.0"), encoding="utf-8")

    assert file_identity(path) != before


def test_file_identity_stable_for_same_content(tmp_path):
    path = _write(tmp_path, GLOVE_TEXT)
    before = file_identity(path)

    path.unlink()
    _write(tmp_path, GLOVE_TEXT)

    assert file_identity(path) == before
    assert str(path.resolve()) in before


def test_file_identity_large_file_tail(tmp_path):
    # Of files above 1 MiB only samples are hashed, and the last sample ends at the end.
    path = tmp_path / "large.txt"
    content = bytearray(b"x" * (3 << 20))
    path.write_bytes(content)
    before = file_identity(path)

    content[-1:] = b"y"
    path.write_bytes(content)

    assert file_identity(path) != before


def test_file_identity_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        file_identity(tmp_path / "missing.vec")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("T-shirt/top", ["T-shirt", "top"]),
        ("ankle boot", ["ankle", "boot"]),
        ("great_white_shark", ["great", "white", "shark"]),
        ("crane, bird", ["crane", "bird"]),
        ("  sea \t lion  ", ["sea", "lion"]),
        ("a//b__c,,d", ["a", "b", "c", "d"]),
        ("", []),
    ],
)
def test_tokenize_cases(name, expected):
    assert tokenize(name) == expected
