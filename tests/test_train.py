"""Training on a real Fashion-MNIST slice: sharding, checkpoints, resume, bad input."""

import json

import jax
from flax import nnx
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from semhash_jax import checkpointing, config_checks, evaluation, input_pipeline, preprocessing
from semhash_jax import run_setup, sharding, train, train_state as train_state_lib
from tests import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    helpers.prepare_slice(path, max_examples=600)
    return str(path)


def make_config(data_dir, **overrides):
    return helpers.runlocal_config(data_dir=data_dir, **overrides)


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("setup")
    return run_setup.prepare_run(make_config(data_dir), workdir, create_split=True)


def first_batches(config, setup, count):
    source = input_pipeline.PoolSource(
        setup.builder, setup.split.splits, setup.split.split_sizes, setup.split.train_ids
    )
    iterator = input_pipeline.train_iterator(
        source,
        global_batch_size=config.batch_size,
        seed=0,
        mean=config.mean,
        std=config.std,
        transform=preprocessing.train_transform(config),
    )
    return [next(iterator) for _ in range(count)]


def run_steps(config, setup, mesh, batches):
    schedule = train_state_lib.make_schedule(config)
    state = train_state_lib.create_train_state(
        config, mesh, embedding_dim=setup.class_embeddings.shape[1], schedule=schedule
    )
    step = train.make_train_step(config, state, mesh, len(setup.class_names), schedule)
    embeddings = jnp.asarray(setup.class_embeddings)
    key = jax.random.key(1)
    metrics = []
    for batch in batches:
        state.state, step_metrics = step(
            state.state, sharding.global_batch(batch, mesh), embeddings, key
        )
        metrics.append(jax.device_get(step_metrics))
    return state, step, metrics


def test_eight_devices_match_one(data_dir, setup):
    assert jax.device_count() == 8
    config = make_config(data_dir)
    batches = first_batches(config, setup, 3)
    one, _, metrics_one = run_steps(
        config, setup, sharding.make_mesh(devices=jax.devices()[:1]), batches
    )
    eight, _, metrics_eight = run_steps(config, setup, sharding.make_mesh(), batches)
    for a, b in zip(metrics_one, metrics_eight):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    leaves_one = jax.tree.leaves(one.state)
    leaves_eight = jax.tree.leaves(eight.state)
    assert len(leaves_one) == len(leaves_eight)
    for a, b in zip(leaves_one, leaves_eight):
        # Equal up to float32 rounding of reductions split over devices.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_step_updates_all_params_compiles_once(data_dir, setup):
    config = make_config(data_dir)
    batches = first_batches(config, setup, 3)
    mesh = sharding.make_mesh()
    schedule = train_state_lib.make_schedule(config)
    initial = train_state_lib.create_train_state(
        config, mesh, embedding_dim=setup.class_embeddings.shape[1], schedule=schedule
    )
    initial_model, _ = nnx.merge(initial.graphdef, initial.state)
    initial_params = nnx.to_pure_dict(nnx.state(initial_model, nnx.Param))
    trained, step, metrics = run_steps(config, setup, mesh, batches)
    assert step._cache_size() == 1
    assert all(np.isfinite(m["loss"]) for m in metrics)
    trained_model, _ = nnx.merge(trained.graphdef, trained.state)
    trained_params = nnx.to_pure_dict(nnx.state(trained_model, nnx.Param))
    # Both the visual and the semantic network must receive gradients.
    paths = jax.tree_util.tree_leaves_with_path(initial_params)
    for (path, before), after in zip(paths, jax.tree.leaves(trained_params)):
        assert not np.array_equal(np.asarray(before), np.asarray(after)), path


def test_checkpoint_round_trip(data_dir, setup, tmp_path):
    config = make_config(data_dir)
    mesh = sharding.make_mesh()
    trained, _, _ = run_steps(config, setup, mesh, first_batches(config, setup, 2))
    fingerprint = checkpointing.config_fingerprint(config, 384, 10)
    saver = checkpointing.Checkpointer(tmp_path, fingerprint=fingerprint, config=config)
    saver.save(2, trained.state)
    saver.close()
    other = train_state_lib.create_train_state(
        make_config(data_dir, seed=5),
        mesh,
        embedding_dim=384,
        schedule=train_state_lib.make_schedule(config),
    )
    loader = checkpointing.Checkpointer(tmp_path, fingerprint=fingerprint)
    restored = loader.restore(2, other.state)
    for a, b in zip(jax.tree.leaves(trained.state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding.is_equivalent_to(sharding.replicated(mesh), leaf.ndim)


def read_params(workdir, step):
    path = workdir / "checkpoints" / str(step) / "state"
    return ocp.StandardCheckpointer().restore(path)


def test_resume_after_interruption_matches_uninterrupted(data_dir, tmp_path, monkeypatch):
    config = make_config(data_dir)
    straight = tmp_path / "straight"
    train.train_and_evaluate(config, str(straight))

    interrupted = tmp_path / "interrupted"
    real_make_train_step = train.make_train_step

    class FailingStep:
        """The jitted step, interrupted at its 13th call after compilation."""

        def __init__(self, jitted):
            self.jitted = jitted
            self.compiled = None
            self.calls = 0

        def lower(self, *args):
            self.compiled = self.jitted.lower(*args).compile()
            return self

        def compile(self):
            return self

        def memory_analysis(self):
            return self.compiled.memory_analysis()

        def __call__(self, *args):
            self.calls += 1
            if self.calls == 13:
                raise KeyboardInterrupt("simulated interruption at step 13")
            return self.compiled(*args)

    def failing_make_train_step(*args, **kwargs):
        return FailingStep(real_make_train_step(*args, **kwargs))

    monkeypatch.setattr(train, "make_train_step", failing_make_train_step)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, str(interrupted))
    assert checkpointing.Checkpointer(interrupted, fingerprint={}).all_steps() == [10]
    monkeypatch.setattr(train, "make_train_step", real_make_train_step)
    resumed = train.train_and_evaluate(config, str(interrupted))

    expected = read_params(straight, 20)
    actual = read_params(interrupted, 20)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
        np.testing.assert_array_equal(a, b)
    straight_results = json.loads((straight / "eval" / "results.json").read_text())
    assert resumed["metrics"] == straight_results["metrics"]


def test_evaluate_rejects_checkpoint_of_other_config(data_dir, tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(make_config(data_dir, num_train_steps=10), str(workdir))
    with pytest.raises(ValueError, match="bits: checkpoint 32, config 64"):
        evaluation.evaluate(make_config(data_dir, num_train_steps=10, bits=64), str(workdir))
    with pytest.raises(ValueError, match="model.semantic_hidden"):
        evaluation.evaluate(
            make_config(data_dir, num_train_steps=10, **{"model.semantic_hidden": (64,)}),
            str(workdir),
        )
    with pytest.raises(ValueError, match="method: checkpoint 'semantic_hash', config 'csq'"):
        evaluation.evaluate(make_config(data_dir, num_train_steps=10, method="csq"), str(workdir))
    results = evaluation.evaluate(make_config(data_dir, num_train_steps=10), str(workdir))
    assert results["step"] == 10
    with pytest.raises(FileNotFoundError, match="saved steps"):
        evaluation.evaluate(make_config(data_dir), str(workdir), step=7)


def test_nan_loss_stops_with_step_range():
    with pytest.raises(FloatingPointError, match="steps 6..10"):
        train._check_finite({"loss": float("nan")}, 6, 10)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("bits", 0, "config.bits=0"),
        ("bits", -4, "config.bits=-4"),
        ("batch_size", 12, "batch_size=12 does not divide across 8 devices"),
        ("model.backbone", "vgg99", "model.backbone"),
        ("loss.alignment", "triplet", "loss.alignment"),
        ("protocol", "cifar_z", "config.protocol"),
        ("text.templates", ("a photo",), "text.templates"),
        ("model.dtype", "float16", "model.dtype='float16'"),
        ("mesh", (("data", 3), ("fsdp", -1)), "do not divide the 8 devices"),
        ("mesh", (("model", 8),), "unknown axis name"),
        ("fsdp_min_size", 0, "config.fsdp_min_size=0"),
    ],
)
def test_bad_config_values_raise(data_dir, field, value, message):
    with pytest.raises(ValueError, match=message):
        config_checks.check_config(make_config(data_dir, **{field: value}), 8)


def test_non_integer_bits_raise():
    with pytest.raises(ValueError, match="positive integer"):
        config_checks._check_positive_int(1.5, "bits")


def test_unwritable_workdir_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot be created or written"):
        config_checks.check_workdir(blocker / "workdir")


def test_missing_text_model_raises(data_dir):
    config = make_config(data_dir, **{"text.model": "/nonexistent/text-model"})
    with pytest.raises(FileNotFoundError, match="/nonexistent/text-model"):
        config_checks.check_inputs(config)


def test_missing_data_raises(tmp_path):
    config = make_config(str(tmp_path / "empty_tfds"), source_dir=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        config_checks.check_inputs(config)


def test_fsdp_matches_replicated(data_dir, setup):
    # SGD, because Adam's first steps divide gradients by their own magnitude, so
    # float32 rounding of near-zero gradients (the first conv's, whose input has
    # large constant backgrounds) becomes full-size steps of either sign.
    config = make_config(data_dir, fsdp_min_size=1024, **{"optimizer.name": "sgd"})
    batches = first_batches(config, setup, 3)
    replicated_mesh = sharding.make_mesh((("data", 8),))
    fsdp_mesh = sharding.make_mesh((("data", 2), ("fsdp", 4)))
    replicated, _, metrics_replicated = run_steps(config, setup, replicated_mesh, batches)
    fsdp, _, metrics_fsdp = run_steps(config, setup, fsdp_mesh, batches)

    for a, b in zip(metrics_replicated, metrics_fsdp):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    sharded = [leaf for leaf in jax.tree.leaves(fsdp.state) if "fsdp" in str(leaf.sharding.spec)]
    # The conv kernels and dense weights of the small CNN (>= 1024 elements), and
    # their momentum.
    assert len(sharded) >= 2 * 4
    for leaf in sharded:
        assert leaf.addressable_shards[0].data.size == leaf.size // 4
    # Equal up to float32 rounding of the sums split differently over devices.
    for a, b in zip(jax.tree.leaves(replicated.state), jax.tree.leaves(fsdp.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_fsdp_lowers_memory_per_device(data_dir, setup):
    config = make_config(data_dir, fsdp_min_size=1024)
    batch = sharding.global_batch(first_batches(config, setup, 1)[0], sharding.make_mesh())
    sizes = {}
    for name, axes in {"replicated": (("data", 8),), "fsdp": (("fsdp", 8),)}.items():
        mesh = sharding.make_mesh(axes)
        state = train_state_lib.create_train_state(
            config, mesh, embedding_dim=384, schedule=train_state_lib.make_schedule(config)
        )
        step = train.make_train_step(config, state, mesh, 10, train_state_lib.make_schedule(config))
        compiled = step.lower(state.state, batch, jnp.zeros((10, 384)), jax.random.key(0)).compile()
        sizes[name] = train.memory_per_device(compiled)
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state.state))
    # Replicated, every device stores the whole state. FSDP over 8 devices stores
    # about an eighth of the large arrays, and the small ones whole.
    assert sizes["replicated"]["arguments"] >= state_bytes
    assert sizes["fsdp"]["arguments"] < sizes["replicated"]["arguments"] / 3
    assert sizes["fsdp"]["total"] > sizes["fsdp"]["arguments"]


def test_bfloat16_backbone_close_to_float32(data_dir, setup):
    batches = first_batches(make_config(data_dir), setup, 2)
    mesh = sharding.make_mesh()
    _, _, metrics_f32 = run_steps(make_config(data_dir), setup, mesh, batches)
    bf16_config = make_config(data_dir, **{"model.dtype": "bfloat16"})
    bf16, _, metrics_bf16 = run_steps(bf16_config, setup, mesh, batches)

    for a, b in zip(metrics_f32, metrics_bf16):
        assert np.isfinite(b["loss"])
        # bfloat16 keeps 8 bits of mantissa: the losses agree to about 1%.
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-2)
    for leaf in jax.tree.leaves(bf16.state):
        assert leaf.dtype in (jnp.float32, jnp.int32, jnp.uint32), leaf.dtype
    model, _ = nnx.merge(bf16.graphdef, bf16.state)
    images = jnp.asarray(batches[0]["image"])
    assert model.visual.backbone(images).dtype == jnp.bfloat16
    assert model.visual(images).dtype == jnp.float32
