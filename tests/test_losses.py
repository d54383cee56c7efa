"""Losses on tiny cases computed by hand."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from semhash_jax import losses


def loss_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            alignment="hinge",
            similarity="inner_product",
            margin=0.5,
            scale=10.0,
            quantization_weight=0.1,
            quantize_prototypes=False,
        )
    )
    config.update(overrides)
    return config


# Two images, three classes, K = 2.
CODES = jnp.array([[1.0, 0.5], [-0.5, 1.0]])
PROTOTYPES = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
# Inner products b.p: image 0 -> [1.5, 0.5, -0.5]; image 1 -> [0.5, -1.5, 1.5].
# Divided by K = 2: image 0 -> [0.75, 0.25, -0.25]; image 1 -> [0.25, -0.75, 0.75].


def test_inner_product_similarity_by_hand():
    sim = losses.similarity(CODES, PROTOTYPES, "inner_product")
    np.testing.assert_allclose(sim, [[0.75, 0.25, -0.25], [0.25, -0.75, 0.75]])


def test_cosine_similarity_by_hand():
    sim = losses.similarity(jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 0.0]]), "cosine")
    np.testing.assert_allclose(sim, [[0.6]], rtol=1e-6)


def test_hinge_single_label_by_hand():
    labels = jnp.array([[1.0, 0, 0], [0, 0, 1.0]])
    sim = losses.similarity(CODES, PROTOTYPES, "inner_product")
    # Image 0: positive 0.75, hardest negative 0.25 -> max(0, 0.5 - 0.75 + 0.25) = 0.
    # Image 1: positive 0.75, hardest negative 0.25 -> 0. Use margin 1 instead:
    # image 0: 1 - 0.75 + 0.25 = 0.5; image 1: 1 - 0.75 + 0.25 = 0.5; mean 0.5.
    assert float(losses.hinge_loss(sim, labels, 0.5)) == pytest.approx(0.0)
    assert float(losses.hinge_loss(sim, labels, 1.0)) == pytest.approx(0.5)


def test_hinge_multi_label_averages_positives():
    # Image 0 with positives {0, 1}: hardest negative is class 2 (-0.25).
    # Class 0: max(0, 1 - 0.75 - 0.25) = 0; class 1: max(0, 1 - 0.25 - 0.25) = 0.5.
    # Mean over the two positives: 0.25.
    labels = jnp.array([[1.0, 1.0, 0]])
    sim = losses.similarity(CODES[:1], PROTOTYPES, "inner_product")
    assert float(losses.hinge_loss(sim, labels, 1.0)) == pytest.approx(0.25)


def test_softmax_ce_by_hand():
    labels = jnp.array([[1.0, 0, 0]])
    sim = jnp.array([[0.75, 0.25, -0.25]])
    scale = 2.0
    logits = np.array([1.5, 0.5, -0.5])
    expected = -(1.5 - np.log(np.exp(logits).sum()))
    assert float(losses.softmax_ce_loss(sim, labels, scale)) == pytest.approx(expected, rel=1e-6)


def test_softmax_ce_multi_label_by_hand():
    labels = jnp.array([[1.0, 1.0, 0]])
    sim = jnp.array([[0.75, 0.25, -0.25]])
    logits = np.array([0.75, 0.25, -0.25])
    log_z = np.log(np.exp(logits).sum())
    expected = -0.5 * ((0.75 - log_z) + (0.25 - log_z))
    assert float(losses.softmax_ce_loss(sim, labels, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_quantization_loss_by_hand():
    # (|1|-1)^2 = 0, (|0.5|-1)^2 = 0.25, (|-0.5|-1)^2 = 0.25, (|1|-1)^2 = 0 -> mean 0.125.
    assert float(losses.quantization_loss(CODES)) == pytest.approx(0.125)


@pytest.mark.parametrize("alignment", ["hinge", "softmax_ce"])
def test_row_without_label_adds_nothing(alignment):
    config = loss_config(alignment=alignment, quantization_weight=0.0)
    labels = jnp.array([[1.0, 0, 0], [0, 0, 0]])
    with_empty, _ = losses.semantic_hash_loss(CODES, PROTOTYPES, labels, config)
    alone, _ = losses.semantic_hash_loss(CODES[:1], PROTOTYPES, labels[:1], config)
    assert np.isfinite(float(with_empty))
    assert float(with_empty) == pytest.approx(float(alone), rel=1e-6)
    grads = jax.grad(lambda c: losses.semantic_hash_loss(c, PROTOTYPES, labels, config)[0])(CODES)
    assert np.all(np.isfinite(grads))
    np.testing.assert_array_equal(grads[1], 0.0)


@pytest.mark.parametrize("alignment", ["hinge", "softmax_ce"])
def test_all_rows_without_label_give_zero(alignment):
    config = loss_config(alignment=alignment, quantization_weight=0.0)
    loss, _ = losses.semantic_hash_loss(CODES, PROTOTYPES, jnp.zeros((2, 3)), config)
    assert float(loss) == 0.0


@pytest.mark.parametrize("alignment", ["hinge", "softmax_ce"])
@pytest.mark.parametrize("similarity", ["inner_product", "cosine"])
def test_large_k_and_scale_stay_finite(alignment, similarity):
    config = loss_config(alignment=alignment, similarity=similarity, scale=1e4)
    key = jax.random.key(0)
    codes = jnp.sign(jax.random.normal(key, (16, 128)))
    prototypes = -codes[:10]
    labels = jax.nn.one_hot(jnp.arange(16) % 10, 10)
    loss, grads = jax.value_and_grad(
        lambda c, p: losses.semantic_hash_loss(c, p, labels, config)[0], argnums=(0, 1)
    )(codes, prototypes)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_single_class_has_no_negative_and_stays_finite():
    sim = jnp.array([[0.3]])
    loss = losses.hinge_loss(sim, jnp.array([[1.0]]), 0.5)
    assert np.isfinite(float(loss))


def test_unknown_names_raise():
    labels = jnp.array([[1.0, 0, 0], [0, 0, 1.0]])
    with pytest.raises(ValueError, match="loss.alignment"):
        losses.semantic_hash_loss(CODES, PROTOTYPES, labels, loss_config(alignment="triplet"))
    with pytest.raises(ValueError, match="loss.similarity"):
        losses.semantic_hash_loss(CODES, PROTOTYPES, labels, loss_config(similarity="l2"))
