"""The baselines (CSQ, OrthoHash, AdaLabelHash, classification): losses on tiny cases
computed by hand, one real training step each, and the inputs they refuse."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semhash_jax import config_checks, evaluation, losses, run_setup, sharding, train
from semhash_jax import train_state as train_state_lib
from semhash_jax.models import hash_centres, hash_nets
from tests import helpers


def method_config(method, **overrides):
    return helpers.runlocal_config(method=method, **overrides)


def test_csq_loss_by_hand():
    codes = jnp.array([[0.5, -0.5], [1.0, 1.0]])
    centres = jnp.array([[1.0, 1.0], [1.0, -1.0]])
    labels = jnp.array([[0.0, 1.0], [0.0, 1.0]])
    total, terms = losses.csq_loss(codes, centres, labels, quantization_weight=0.01)
    # Image 0, centre (1, -1): both bits have probability 0.75 of the right value.
    image0 = -math.log(0.75)
    # Image 1 is saturated: bit 0 right (probability 1), bit 1 wrong (probability 0,
    # clipped at 1e-30 like BCELoss's clamp of the log).
    image1 = (0.0 - math.log(1e-30)) / 2
    alignment = (image0 + image1) / 2
    quantization = (0.25 + 0.25 + 0 + 0) / 4
    np.testing.assert_allclose(terms["alignment_loss"], alignment, rtol=1e-5)
    np.testing.assert_allclose(terms["quantization_loss"], quantization, rtol=1e-6)
    np.testing.assert_allclose(total, alignment + 0.01 * quantization, rtol=1e-5)
    grads = jax.grad(lambda c: losses.csq_loss(c, centres, labels, 0.01)[0])(codes)
    assert np.isfinite(grads).all()


def test_csq_multi_label_target_and_unlabelled_rows():
    centres = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    codes = jnp.array([[0.0, 0.0], [0.6, 0.2], [0.3, 0.3]])
    # Image 0: classes 0 and 1, sums (2, 0), tie -> class 0's bit: target (1, 1).
    # Image 1: no label: left out of the mean. Image 2: classes 1 and 2: sums (0, -2):
    # target (1, -1).
    labels = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    _, terms = losses.csq_loss(codes, centres, labels, quantization_weight=0.0)
    image0 = -math.log(0.5)
    image2 = -(math.log(0.65) + math.log(0.35)) / 2
    np.testing.assert_allclose(terms["alignment_loss"], (image0 + image2) / 2, rtol=1e-5)


def test_orthohash_loss_by_hand():
    codes = jnp.array([[0.6, 0.8]])
    class_codes = jnp.array([[1.0, 1.0], [1.0, -1.0]])
    labels = jnp.array([[1.0, 0.0]])
    total, terms = losses.orthohash_loss(
        codes, class_codes, labels, scale=8.0, margin=0.2, quantization_weight=0.5
    )
    cos0, cos1 = 1.4 / math.sqrt(2), -0.2 / math.sqrt(2)
    logit0, logit1 = 8 * (cos0 - 0.2), 8 * cos1
    ce = math.log(math.exp(logit0) + math.exp(logit1)) - logit0
    # 1 - cos(b, sign(b)) = 1 - (0.6 + 0.8) / (1 * sqrt(2)).
    quantization = 1 - 1.4 / math.sqrt(2)
    np.testing.assert_allclose(terms["alignment_loss"], ce, rtol=1e-4)
    np.testing.assert_allclose(terms["quantization_loss"], quantization, rtol=1e-5)
    np.testing.assert_allclose(total, ce + 0.5 * quantization, rtol=1e-4)


def test_orthohash_multi_label_uses_the_label_distribution():
    codes = jnp.array([[1.0, 0.0]])
    class_codes = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    labels = jnp.array([[1.0, 1.0, 0.0]])
    _, terms = losses.orthohash_loss(
        codes, class_codes, labels, scale=2.0, margin=0.1, quantization_weight=0.0
    )
    c = 1 / math.sqrt(2)
    logits = [2 * (c - 0.1), 2 * (c - 0.1), 2 * -c]
    log_z = math.log(sum(math.exp(v) for v in logits))
    expected = -0.5 * (logits[0] - log_z) - 0.5 * (logits[1] - log_z)
    np.testing.assert_allclose(terms["alignment_loss"], expected, rtol=1e-5)


def test_classification_loss_by_hand():
    codes = jnp.array([[0.5, -1.0]])
    weights = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = jnp.array([[0.0, 0.0, 1.0]])
    total, terms = losses.classification_loss(codes, weights, labels, quantization_weight=0.0)
    logits = [0.5, -1.0, -0.5]
    expected = math.log(sum(math.exp(v) for v in logits)) + 0.5
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    np.testing.assert_allclose(terms["quantization_loss"], (0.25 + 0) / 2)


def test_adalabelhash_is_the_hinge_whatever_config_loss_alignment():
    config = method_config("adalabelhash", **{"loss.alignment": "softmax_ce", "loss.margin": 0.8})
    codes = jnp.array([[0.5, 0.5]])
    codewords = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    labels = jnp.array([[1.0, 0.0, 0.0]])
    total, terms = losses.method_loss(config, codes, codewords, labels)
    # s = b.p / K = (0.5, 0, -0.5); hardest negative 0: max(0, 0.8 - 0.5 + 0) = 0.3.
    np.testing.assert_allclose(terms["alignment_loss"], 0.3, rtol=1e-6)
    np.testing.assert_allclose(total, 0.3 + config.loss.quantization_weight * 0.25, rtol=1e-6)


def test_class_sides_by_method():
    rngs = nnx.Rngs(0)
    embeddings = jnp.zeros((10, 4))
    table = hash_nets.create_class_side(
        "adalabelhash", num_classes=10, bits=16, embedding_dim=4, hidden=(), seed=0, rngs=rngs
    )
    assert table(embeddings).shape == (10, 16)
    assert np.abs(table(embeddings)).max() < 1
    fixed = hash_nets.create_class_side(
        "csq", num_classes=10, bits=16, embedding_dim=4, hidden=(), seed=0, rngs=rngs
    )
    np.testing.assert_array_equal(fixed(embeddings), hash_centres.hadamard(16)[:10])
    with pytest.raises(ValueError, match="contains codes of 10 classes but was given 12"):
        fixed(jnp.zeros((12, 4)))
    with pytest.raises(ValueError, match="Unknown config.method='dpsh'"):
        hash_nets.create_class_side(
            "dpsh", num_classes=10, bits=16, embedding_dim=4, hidden=(), seed=0, rngs=rngs
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    helpers.prepare_slice(data_dir, max_examples=300)
    config = method_config("csq", data_dir=str(data_dir))
    return run_setup.prepare_run(config, tmp_path_factory.mktemp("work"), create_split=True)


@pytest.mark.parametrize("method", ["csq", "orthohash", "adalabelhash", "classification"])
def test_one_step_changes_every_trainable_parameter(method, setup):
    config = method_config(method, **{"orthohash.quantization_weight": 0.1})
    mesh = sharding.make_mesh()
    schedule = train_state_lib.make_schedule(config)
    state = train_state_lib.create_train_state(
        config,
        mesh,
        embedding_dim=setup.class_embeddings.shape[1],
        schedule=schedule,
        num_classes=10,
    )

    def params_of(train_state):
        model, _ = nnx.merge(train_state.graphdef, train_state.state)
        return model, jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    _, before = params_of(state)
    step = train.make_train_step(config, state, mesh, 10, schedule)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(32, 28, 28, 1)).astype(np.float32),
        "label": np.arange(32, dtype=np.int32) % 10,
    }
    # Two steps: warmup starts the learning rate at 0.
    for _ in range(2):
        state.state, metrics = step(
            state.state,
            sharding.global_batch(batch, mesh),
            jnp.asarray(setup.class_embeddings),
            jax.random.key(0),
        )
    assert np.isfinite(float(metrics["loss"]))
    model, params = params_of(state)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), params, before)
    flat = jax.tree_util.tree_leaves_with_path(changed)
    assert flat and all(value for _, value in flat), [p for p, v in flat if not v]
    fixed = jax.device_get(nnx.to_pure_dict(nnx.state(model, hash_nets.FixedCode)))
    for path, value in jax.tree_util.tree_leaves_with_path(fixed):
        # The fixed codes stay as drawn.
        np.testing.assert_array_equal(value, hash_centres.hadamard(32)[:10])
    if method in ("adalabelhash", "classification"):  # The loss-owned class table trains.
        assert "semantic" in params
        assert jax.tree.leaves(params["semantic"])


@pytest.mark.parametrize("method", ["csq", "orthohash", "adalabelhash", "classification"])
def test_baselines_refuse_zero_shot(method):
    config = method_config(method, unseen_classes=("Shirt",))
    with pytest.raises(ValueError, match=f"config.method='{method}'.*cannot score"):
        config_checks.check_config(config, 8)


def test_bad_baseline_settings_named():
    with pytest.raises(ValueError, match="Unknown config.method='hashnet'"):
        config_checks.check_config(method_config("hashnet"), 8)
    with pytest.raises(ValueError, match="orthohash.scale=0.0 must be positive"):
        config_checks.check_config(method_config("orthohash", **{"orthohash.scale": 0.0}), 8)
    with pytest.raises(ValueError, match=r"csq.quantization_weight=-1.0 must be >= 0"):
        config_checks.check_config(method_config("csq", **{"csq.quantization_weight": -1.0}), 8)


@pytest.mark.parametrize(
    ("method", "label"),
    [("semantic_hash", "class-name queries"), ("csq", "class-code queries")],
)
def test_printed_class_query_label(method, label):
    results = {
        "step": 2,
        "bits": 16,
        "protocol": {"name": "p", "num_query": 1, "num_database": 2, "num_train": 3},
        "metrics": {"mAP@all": 0.5},
        "tie_rule": "database index",
        "classification": {"nearest_prototype_accuracy": 0.25},
        "text_queries": {"all_classes": {"mAP@all": 0.75}},
        "config": {"method": method},
    }
    table = evaluation.format_results(results)
    assert f"{label} (all classes) mAP@all  0.7500" in table
