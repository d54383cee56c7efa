"""Semantic spaces: where the embeddings of class names and text queries come from.

`config.text.space` chooses one:
  "bert":         a BERT-family encoder (`text.model`, a folder or a hub name),
                  pooled over tokens (`text.pooling`) and averaged over the prompt
                  templates (`text.templates`).
  "word_vectors": static word vectors from a GloVe, word2vec or fastText text file
                  (`text.word_vectors`); a name's words are averaged.
  "one_hot":      class i of the training dataset is the i-th unit vector. A control
                  without semantics: any other text gets the zero vector.
  "random":       a Gaussian vector drawn from a seed made of `text.random_seed` and
                  the lowercased text. A control: the same name always gets the same
                  vector, but related names get unrelated vectors.

Every space is cached in the run's cache folder as text_embeddings_<hash>.npz,
keyed by its inputs (see `embeddings.class_name_embeddings`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from absl import logging
import numpy as np

from semhash_jax.text import embeddings as bert_embeddings
from semhash_jax.text import word_vectors

SPACES = ("bert", "word_vectors", "one_hot", "random")


def _normalize_rows(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)


def _bert(texts: list[str], text_config, cache_dir) -> np.ndarray:
    """Average the embeddings of every prompt template, then renormalise."""
    per_template = [
        bert_embeddings.class_name_embeddings(
            texts,
            model=text_config.model,
            template=template,
            pooling=text_config.pooling,
            normalize=text_config.normalize,
            cache_dir=cache_dir,
        )
        for template in text_config.templates
    ]
    if len(per_template) == 1:
        return per_template[0]
    logging.info("Averaged the embeddings of %d prompt templates.", len(per_template))
    averaged = np.mean(per_template, axis=0)
    return _normalize_rows(averaged) if text_config.normalize else averaged.astype(np.float32)


def _one_hot(texts: list[str], vocabulary: Sequence[str]) -> np.ndarray:
    index = {name.lower(): i for i, name in enumerate(vocabulary)}
    result = np.zeros((len(texts), len(vocabulary)), np.float32)
    unknown = []
    for row, text in enumerate(texts):
        column = index.get(text.lower())
        if column is None:
            unknown.append(text)
        else:
            result[row, column] = 1.0
    if unknown:
        logging.warning(
            "The one_hot space has no vector for %s, which is not a class of the training "
            "dataset, so the zero vector is used.",
            ", ".join(repr(text) for text in unknown),
        )
    return result


def random_vector(text: str, seed: int, dim: int) -> np.ndarray:
    """Return a standard Gaussian vector [dim] determined by `seed` and the lowercased text."""
    name_seed = int.from_bytes(hashlib.sha256(text.lower().encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, name_seed]).standard_normal(dim).astype(np.float32)


def _random(texts: list[str], text_config) -> np.ndarray:
    vectors = np.stack(
        [random_vector(text, text_config.random_seed, text_config.random_dim) for text in texts]
    )
    return _normalize_rows(vectors) if text_config.normalize else vectors


def _word_vectors(texts: list[str], text_config) -> np.ndarray:
    return word_vectors.embed_names(
        texts, text_config.word_vectors, normalize=text_config.normalize
    ).embeddings


def embed_texts(
    texts: Sequence[str], text_config, *, vocabulary: Sequence[str], cache_dir
) -> np.ndarray:
    """Embed each text (a class name or a query) in the space of `text_config`.

    Args:
      texts: the texts, e.g. class names.
      text_config: `config.text`.
      vocabulary: the class names of the training dataset, in label order. The
        one_hot space has one dimension per entry; the other spaces ignore it.
      cache_dir: folder of the embedding cache, or None for no cache.

    Returns:
      float32 [len(texts), H].
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string.")
    texts = list(texts)
    space = text_config.space
    if space == "bert":
        # class_name_embeddings caches each template's embeddings itself.
        return _bert(texts, text_config, cache_dir)
    key = {"space": space, "texts": texts, "normalize": bool(text_config.normalize)}
    if space == "one_hot":
        key["vocabulary"] = list(vocabulary)
        return bert_embeddings.cached_embeddings(
            key, len(texts), cache_dir, lambda: _one_hot(texts, vocabulary)
        )
    if space == "random":
        key.update(seed=int(text_config.random_seed), dim=int(text_config.random_dim))
        return bert_embeddings.cached_embeddings(
            key, len(texts), cache_dir, lambda: _random(texts, text_config)
        )
    if space == "word_vectors":
        key["file"] = word_vectors.file_identity(os.fspath(text_config.word_vectors))
        return bert_embeddings.cached_embeddings(
            key, len(texts), cache_dir, lambda: _word_vectors(texts, text_config)
        )
    raise ValueError(
        f"Unknown text space {space!r}. Set --config.text.space to one of: {', '.join(SPACES)}."
    )


def center(embeddings: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Subtract `mean` from each row, then L2-normalise the rows.

    Class names embedded with one prompt template share a large common component
    (all-MiniLM-L6-v2 gives cosine 0.3-0.6 between unrelated Fashion-MNIST
    classes). Subtracting the mean of the training classes leaves what distinguishes the
    classes apart. Other texts (unseen classes, queries, another dataset's
    classes) are shifted by the same training mean.
    """
    # In the embeddings' own dtype (float32), so that runs are bit-for-bit repeatable
    # across versions that centre the same embeddings.
    return _normalize_rows(embeddings - np.asarray(mean, embeddings.dtype))
