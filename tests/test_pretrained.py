"""Pretrained ResNet weights in PyTorch layout, converted on load.

The test writes a randomly initialised ResNet-18 checkpoint with torchvision's
tensor names and shapes (numpy + safetensors) and loads it into the nnx backbone.
It compares the features with a forward pass written here in PyTorch's conventions
(NCHW, OIHW kernels, symmetric padding, eval-mode batch norm).
"""

import jax
from jax import lax
import jax.numpy as jnp
from flax import nnx
import numpy as np
import pytest
from safetensors.numpy import save_file

from semhash_jax.models import backbones, pretrained

EPSILON = 1e-5


def torchvision_resnet18(seed=0):
    """Random tensors named and shaped as torchvision.models.resnet18's state_dict."""
    rng = np.random.default_rng(seed)
    tensors = {}

    def conv(name, out_channels, in_channels, kernel):
        fan_in = in_channels * kernel * kernel
        tensors[f"{name}.weight"] = rng.normal(
            0, np.sqrt(2 / fan_in), (out_channels, in_channels, kernel, kernel)
        ).astype(np.float32)

    def norm(name, channels):
        tensors[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        tensors[f"{name}.bias"] = rng.normal(0, 0.1, channels).astype(np.float32)
        tensors[f"{name}.running_mean"] = rng.normal(0, 0.1, channels).astype(np.float32)
        tensors[f"{name}.running_var"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        tensors[f"{name}.num_batches_tracked"] = np.array(100, np.int64)

    conv("conv1", 64, 3, 7)
    norm("bn1", 64)
    in_channels = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for index in range(2):
            prefix = f"layer{stage}.{index}"
            conv(f"{prefix}.conv1", width, in_channels, 3)
            norm(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            norm(f"{prefix}.bn2", width)
            if index == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", width, in_channels, 1)
                norm(f"{prefix}.downsample.1", width)
            in_channels = width
    tensors["fc.weight"] = rng.normal(0, 0.01, (1000, 512)).astype(np.float32)
    tensors["fc.bias"] = np.zeros(1000, np.float32)
    return tensors


def reference_features(tensors, images_nchw):
    """ResNet-18 eval-mode forward pass in PyTorch's conventions."""

    def conv(x, name, stride, padding):
        return lax.conv_general_dilated(
            x,
            tensors[f"{name}.weight"],
            (stride, stride),
            [(padding, padding)] * 2,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
            precision=lax.Precision.HIGHEST,
        )

    def norm(x, name):
        shape = (1, -1, 1, 1)
        scale = tensors[f"{name}.weight"] / np.sqrt(tensors[f"{name}.running_var"] + EPSILON)
        shift = tensors[f"{name}.bias"] - tensors[f"{name}.running_mean"] * scale
        return x * scale.reshape(shape) + shift.reshape(shape)

    x = jax.nn.relu(norm(conv(images_nchw, "conv1", 2, 3), "bn1"))
    x = lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1))
    )
    for stage in range(1, 5):
        for index in range(2):
            prefix = f"layer{stage}.{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            y = jax.nn.relu(norm(conv(x, f"{prefix}.conv1", stride, 1), f"{prefix}.bn1"))
            y = norm(conv(y, f"{prefix}.conv2", 1, 1), f"{prefix}.bn2")
            if f"{prefix}.downsample.0.weight" in tensors:
                x = norm(conv(x, f"{prefix}.downsample.0", stride, 0), f"{prefix}.downsample.1")
            x = jax.nn.relu(x + y)
    return jnp.mean(x, axis=(2, 3))


def load_into_backbone(path, stem="imagenet"):
    backbone = backbones.create_backbone("resnet18", 3, rngs=nnx.Rngs(0), stem=stem)
    params = nnx.to_pure_dict(nnx.state(backbone))
    loaded = pretrained.load_resnet(path, "resnet18", params)
    state = nnx.state(backbone)
    nnx.replace_by_pure_dict(state, loaded)
    nnx.update(backbone, state)
    backbone.eval()
    return backbone


@pytest.mark.parametrize("prefix", ["", "module."])
def test_loaded_features_match_pytorch_forward(tmp_path, prefix):
    tensors = torchvision_resnet18()
    path = tmp_path / "resnet18.safetensors"
    save_file({prefix + name: value for name, value in tensors.items()}, str(path))
    backbone = load_into_backbone(path)
    images = np.random.default_rng(1).normal(size=(2, 3, 37, 45)).astype(np.float32)
    expected = reference_features(tensors, images)
    with jax.default_matmul_precision("highest"):
        actual = backbone(jnp.asarray(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_kernel_layout_is_hwio(tmp_path):
    tensors = torchvision_resnet18()
    path = tmp_path / "resnet18.safetensors"
    save_file(tensors, str(path))
    backbone = load_into_backbone(path)
    kernel = np.asarray(backbone.blocks[2].shortcut.conv.kernel[...])
    weight = tensors["layer2.0.downsample.0.weight"]  # [128, 64, 1, 1]
    assert kernel.shape == (1, 1, 64, 128)
    assert kernel[0, 0, 5, 7] == weight[7, 5, 0, 0]


def test_missing_tensor_is_named(tmp_path):
    tensors = torchvision_resnet18()
    del tensors["layer4.1.bn2.weight"]
    path = tmp_path / "resnet18.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=r"missing tensors \['layer4.1.bn2.weight'\]"):
        load_into_backbone(path)


def test_cifar_stem_rejects_imagenet_weights(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(torchvision_resnet18(), str(path))
    with pytest.raises(ValueError, match="model.stem=imagenet"):
        load_into_backbone(path, stem="cifar")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_into_backbone(tmp_path / "absent.safetensors")


def test_small_cnn_has_no_pretrained_weights(tmp_path):
    with pytest.raises(ValueError, match="not config.model.backbone='small_cnn'"):
        pretrained.load_resnet(tmp_path / "x.safetensors", "small_cnn", {})


def test_train_state_gets_pretrained_backbone(tmp_path):
    from configs import imagenet
    from semhash_jax import sharding, train_state as train_state_lib

    tensors = torchvision_resnet18()
    path = tmp_path / "resnet18.safetensors"
    save_file(tensors, str(path))
    config = imagenet.get_config("runlocal")
    config.unlock()
    config.model.pretrained = str(path)
    config.lock()
    mesh = sharding.make_mesh()
    schedule = train_state_lib.make_schedule(config)
    state = train_state_lib.create_train_state(config, mesh, embedding_dim=8, schedule=schedule)
    loaded = train_state_lib.load_pretrained_backbone(state, config)
    model = nnx.merge(state.graphdef, loaded)[0]
    stem = np.asarray(model.visual.backbone.stem_conv.kernel[...])
    np.testing.assert_array_equal(stem, tensors["conv1.weight"].transpose(2, 3, 1, 0))
    mean = np.asarray(model.visual.backbone.blocks[7].norm2.mean[...])
    np.testing.assert_array_equal(mean, tensors["layer4.1.bn2.running_mean"])
    for leaf, expected in zip(jax.tree.leaves(loaded), jax.tree.leaves(state.sharding)):
        assert leaf.sharding == expected
