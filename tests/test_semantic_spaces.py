"""Semantic spaces: BERT with several templates, word vectors, one-hot and random controls."""

import hashlib

import ml_collections
import numpy as np
import pytest

from semhash_jax import config_checks
from semhash_jax.text import embeddings, semantic_space
from semhash_jax.text.embeddings import DEFAULT_TEXT_MODEL

VOCABULARY = ("T-shirt/top", "Trouser", "Ankle boot")


def text_config(**overrides):
    config = ml_collections.ConfigDict(
        {
            "space": "bert",
            "model": DEFAULT_TEXT_MODEL,
            "templates": ("a photo of a {}.",),
            "pooling": "mean",
            "normalize": True,
            "word_vectors": "",
            "random_dim": 16,
            "random_seed": 0,
        }
    )
    config.update(overrides)
    return config


def embed(texts, config, cache_dir=None):
    return semantic_space.embed_texts(texts, config, vocabulary=VOCABULARY, cache_dir=cache_dir)


def test_one_hot_is_identity():
    result = embed(list(VOCABULARY), text_config(space="one_hot"))
    np.testing.assert_array_equal(result, np.eye(3, dtype=np.float32))


def test_one_hot_matches_names_ignoring_case():
    result = embed(["ankle BOOT"], text_config(space="one_hot"))
    np.testing.assert_array_equal(result, [[0.0, 0.0, 1.0]])


def test_one_hot_unknown_text_is_zero(caplog):
    result = embed(["sneaker"], text_config(space="one_hot"))
    np.testing.assert_array_equal(result, np.zeros((1, 3)))
    assert "'sneaker'" in caplog.text


def test_random_is_seeded_gaussian_per_name():
    config = text_config(space="random", normalize=False)
    result = embed(["Trouser", "bag"], config)
    # Independent draw: numpy's generator seeded with (seed, first 8 bytes of SHA-256).
    name_seed = int.from_bytes(hashlib.sha256(b"trouser").digest()[:8], "little")
    expected = np.random.default_rng([0, name_seed]).standard_normal(16)
    np.testing.assert_allclose(result[0], expected, rtol=1e-6)


def test_random_same_name_same_vector():
    config = text_config(space="random")
    first = embed(["Trouser"], config)
    again = embed(["trouser", "bag"], config)
    np.testing.assert_array_equal(first[0], again[0])


def test_random_seed_changes_vectors():
    first = embed(["bag"], text_config(space="random", random_seed=0))
    second = embed(["bag"], text_config(space="random", random_seed=1))
    assert not np.allclose(first, second)


def test_random_rows_are_unit_norm():
    result = embed(["bag", "coat", "dress"], text_config(space="random"))
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, rtol=1e-6)


def test_bert_templates_are_averaged():
    templates = ("a photo of a {}.", "a picture of a {}.")
    result = embed(["bag", "coat"], text_config(templates=templates))
    separate = [
        embeddings.class_name_embeddings(
            ["bag", "coat"], model=DEFAULT_TEXT_MODEL, template=template, cache_dir=None
        )
        for template in templates
    ]
    mean = (separate[0] + separate[1]) / 2
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_bert_cls_pooling_differs_from_mean():
    mean = embed(["bag"], text_config())
    cls = embed(["bag"], text_config(pooling="cls"))
    assert not np.allclose(mean, cls, atol=1e-3)


def write_vectors(path):
    path.write_text("ankle 1 0 0\nboot 0 1 0\ntrouser 0 0 2\n")
    return path


def test_word_vectors_average_words(tmp_path):
    config = text_config(space="word_vectors", normalize=False)
    config.word_vectors = str(write_vectors(tmp_path / "glove.txt"))
    result = embed(["Ankle boot", "Trouser"], config)
    np.testing.assert_allclose(result, [[0.5, 0.5, 0.0], [0.0, 0.0, 2.0]])


def test_word_vectors_report_oov(tmp_path, caplog):
    config = text_config(space="word_vectors", normalize=False)
    config.word_vectors = str(write_vectors(tmp_path / "glove.txt"))
    result = embed(["ankle sock"], config)
    np.testing.assert_allclose(result, [[1.0, 0.0, 0.0]])
    assert "sock" in caplog.text


def cache_files(cache_dir):
    return sorted(cache_dir.glob("text_embeddings_*.npz"))


def test_cache_written_and_reused(tmp_path, monkeypatch):
    config = text_config(space="word_vectors")
    config.word_vectors = str(write_vectors(tmp_path / "glove.txt"))
    first = embed(["ankle boot"], config, cache_dir=tmp_path / "cache")
    assert len(cache_files(tmp_path / "cache")) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(semantic_space.word_vectors, "embed_names", fail)
    again = embed(["ankle boot"], config, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first, again)


def test_cache_key_covers_vector_file(tmp_path):
    config = text_config(space="word_vectors")
    config.word_vectors = str(write_vectors(tmp_path / "glove.txt"))
    embed(["ankle boot"], config, cache_dir=tmp_path / "cache")
    (tmp_path / "glove.txt").write_text("ankle 0 0 1\nboot 0 1 0\n")
    changed = embed(["ankle boot"], config, cache_dir=tmp_path / "cache")
    assert len(cache_files(tmp_path / "cache")) == 2
    np.testing.assert_allclose(changed, [[0.0, 2**-0.5, 2**-0.5]], rtol=1e-6)


def test_cache_key_covers_space(tmp_path):
    embed(["bag"], text_config(space="random"), cache_dir=tmp_path)
    embed(["bag"], text_config(space="one_hot"), cache_dir=tmp_path)
    assert len(cache_files(tmp_path)) == 2


def test_center_subtracts_mean_and_normalises():
    result = semantic_space.center(np.array([[3.0, 4.0], [1.0, 1.0]]), np.array([1.0, 1.0]))
    # (3, 4) - (1, 1) = (2, 3), of norm sqrt(13); (1, 1) - (1, 1) stays zero.
    expected = [[2 / 13**0.5, 3 / 13**0.5], [0.0, 0.0]]
    np.testing.assert_allclose(result, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("space", "glove", "text.space"),
        ("templates", (), "text.templates"),
        ("templates", ("a {} and {}",), "exactly one"),
        ("random_dim", 0, "text.random_dim"),
        ("space", "word_vectors", "text.word_vectors"),
    ],
)
def test_bad_text_config_raises(field, value, message):
    config = text_config()
    config[field] = value
    with pytest.raises(ValueError, match=message):
        config_checks._check_text(config)
