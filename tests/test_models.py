"""Model shapes, ranges and parameter counts against published values."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from semhash_jax.models import backbones, hash_nets


def count_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


# torchvision's resnet18 and resnet50 have 11,689,512 and 25,557,032
# parameters, of which the 1000-way classifier has 512*1000+1000 and
# 2048*1000+1000. Our backbones end at the pooled features.
@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", 11_689_512 - 513_000),
        ("resnet50", 25_557_032 - 2_049_000),
        ("resnet101", 44_549_160 - 2_049_000),
        ("resnet152", 60_192_808 - 2_049_000),
    ],
)
def test_resnet_param_count_matches_torchvision(name, expected):
    backbone = nnx.eval_shape(
        lambda: backbones.create_backbone(name, 3, rngs=nnx.Rngs(0), stem="imagenet")
    )
    assert count_params(backbone) == expected


def test_small_cnn_param_count_by_hand():
    # Convs without bias: 1*32*9 + 32*64*9 + 64*128*9; BN scale+bias: 2*(32+64+128);
    # dense 128->256 with bias.
    expected = 288 + 18_432 + 73_728 + 2 * 224 + 128 * 256 + 256
    backbone = backbones.create_backbone("small_cnn", 1, rngs=nnx.Rngs(0))
    assert count_params(backbone) == expected


@pytest.mark.parametrize(
    "backbone, stem, size",
    [
        ("small_cnn", "cifar", 28),
        ("resnet18", "cifar", 32),
        ("resnet18", "imagenet", 64),
    ],
)
def test_model_outputs_codes_and_prototypes(backbone, stem, size):
    config = ml_collections.ConfigDict(dict(backbone=backbone, stem=stem, semantic_hidden=(16,)))
    model = hash_nets.create_model(
        config, bits=12, in_channels=3, embedding_dim=8, rngs=nnx.Rngs(0)
    )
    images = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    codes, prototypes = model(images, jnp.ones((5, 8)))
    assert codes.shape == (2, 12)
    assert prototypes.shape == (5, 12)
    assert np.all(np.abs(codes) < 1)
    assert np.all(np.abs(prototypes) < 1)


def test_semantic_net_without_hidden_layers():
    net = hash_nets.SemanticHashNet(8, (), 4, rngs=nnx.Rngs(0))
    assert net(jnp.ones((3, 8))).shape == (3, 4)
    assert count_params(net) == 8 * 4 + 4


def test_eval_mode_is_batch_independent():
    config = ml_collections.ConfigDict(dict(backbone="small_cnn", stem="cifar", semantic_hidden=()))
    model = hash_nets.create_model(config, bits=8, in_channels=1, embedding_dim=4, rngs=nnx.Rngs(0))
    model.eval()
    images = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    batch_codes = model.visual(images)
    single_code = model.visual(images[2:3])
    np.testing.assert_allclose(batch_codes[2:3], single_code, atol=1e-6)


def test_unknown_backbone_raises():
    with pytest.raises(ValueError, match="model.backbone"):
        backbones.create_backbone("vgg99", 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="model.stem"):
        backbones.create_backbone("resnet18", 3, rngs=nnx.Rngs(0), stem="tiny")


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (6, 5)])
def test_max_pool_2x2_matches_reduce_window(size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    expected = nnx.max_pool(x, (2, 2), (2, 2), padding="SAME")
    np.testing.assert_array_equal(backbones.max_pool_2x2(x), expected)
    weights = jax.random.normal(jax.random.key(1), expected.shape)
    grad = jax.grad(lambda x: jnp.sum(backbones.max_pool_2x2(x) * weights))(x)
    expected_grad = jax.grad(
        lambda x: jnp.sum(nnx.max_pool(x, (2, 2), (2, 2), padding="SAME") * weights)
    )(x)
    np.testing.assert_array_equal(grad, expected_grad)


def test_max_pool_2x2_by_hand():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(backbones.max_pool_2x2(x)[0, :, :, 0], [[5, 7], [13, 15]])


def test_max_pool_2x2_ties_go_to_first_maximum():
    # Windows: all equal; two tied maxima in the second row; tie in the first column.
    x = jnp.asarray([[1.0, 1.0, 0.0, 0.0, 2.0, 5.0], [1.0, 1.0, 3.0, 3.0, 5.0, 2.0]]).reshape(
        1, 2, 6, 1
    )
    grad = jax.grad(
        lambda x: jnp.sum(
            backbones.max_pool_2x2(x) * jnp.asarray([1.0, 2.0, 3.0])[None, None, :, None]
        )
    )(x)
    expected = [[1.0, 0.0, 0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 2.0, 0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)
    reference = jax.grad(
        lambda x: jnp.sum(
            nnx.max_pool(x, (2, 2), (2, 2), padding="SAME")
            * jnp.asarray([1.0, 2.0, 3.0])[None, None, :, None]
        )
    )(x)
    np.testing.assert_array_equal(grad, reference)
