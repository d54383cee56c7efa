"""Pretrained ResNet weights from a local safetensors file in PyTorch layout.

torchvision and timm name ResNet tensors the same way: `conv1`, `bn1`,
`layer{1-4}.{i}.conv{1-3}` / `bn{1-3}`, `layer{s}.{i}.downsample.{0,1}` and `fc`.
Conv weights are [out, in, kh, kw] and become nnx kernels [kh, kw, in, out];
batch norm weight, bias, running_mean and running_var become scale, bias, mean
and var. The classifier (`fc`) and `num_batches_tracked` are not used. A common
prefix such as "module." or "model." is removed first.

The backbones pad like PyTorch (explicit symmetric padding), so a converted
checkpoint computes the same features as the original.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from semhash_jax.models import backbones

# Tensors of a PyTorch ResNet checkpoint that the backbone does not use.
_UNUSED_SUFFIXES = ("num_batches_tracked",)
_UNUSED_PREFIXES = ("fc.",)
_KNOWN_PREFIXES = ("module.", "model.", "backbone.", "encoder.")
_NORM_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _torch_names(backbone_name: str) -> dict[str, tuple]:
    """Return {PyTorch tensor name: nnx state path} for a ResNet backbone."""
    block_type, stage_sizes = backbones.RESNET_LAYOUTS[backbone_name]
    layers_per_block = block_type.num_convs
    names = {"conv1.weight": ("stem_conv", "kernel")}
    for field, target in _NORM_FIELDS.items():
        names[f"bn1.{field}"] = ("stem_norm", target)
    block = 0
    for stage, count in enumerate(stage_sizes):
        for index in range(count):
            prefix = f"layer{stage + 1}.{index}"
            for layer in range(1, layers_per_block + 1):
                names[f"{prefix}.conv{layer}.weight"] = ("blocks", block, f"conv{layer}", "kernel")
                for field, target in _NORM_FIELDS.items():
                    names[f"{prefix}.bn{layer}.{field}"] = ("blocks", block, f"norm{layer}", target)
            names[f"{prefix}.downsample.0.weight"] = ("blocks", block, "shortcut", "conv", "kernel")
            for field, target in _NORM_FIELDS.items():
                names[f"{prefix}.downsample.1.{field}"] = (
                    "blocks",
                    block,
                    "shortcut",
                    "norm",
                    target,
                )
            block += 1
    return names


def _strip_prefix(tensors: dict) -> dict:
    for prefix in _KNOWN_PREFIXES:
        if tensors and all(name.startswith(prefix) for name in tensors):
            return {name[len(prefix) :]: value for name, value in tensors.items()}
    return tensors


def _get(tree, path):
    for key in path:
        if key not in tree:
            return None
        tree = tree[key]
    return tree


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def load_resnet(path: str | os.PathLike, backbone_name: str, backbone_params: dict) -> dict:
    """Return `backbone_params` (a pure dict of the backbone's state) with the file's weights.

    Raises ValueError naming the tensor when the file lacks a tensor the backbone
    needs, has one it cannot place, or a shape differs; FileNotFoundError when the
    file is missing.
    """
    from safetensors.numpy import load_file

    path = pathlib.Path(path)
    if not supported(backbone_name):
        raise ValueError(
            "Pretrained weights are supported for "
            f"{', '.join(sorted(backbones.RESNET_LAYOUTS))}, not "
            f"config.model.backbone={backbone_name!r}."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"Pretrained weights {str(path)!r} not found. Set --config.model.pretrained to a "
            "local .safetensors file with torchvision or timm ResNet tensor names, or to '' "
            "to train from scratch."
        )
    try:
        tensors = _strip_prefix(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types for bad headers.
        raise ValueError(f"Cannot read {str(path)!r} as safetensors: {e}") from e

    names = _torch_names(backbone_name)
    params = _copy_tree(backbone_params)
    expected_paths = {p for p in names.values() if _get(params, p) is not None}
    needed = {name for name, target in names.items() if target in expected_paths}
    unused = [
        name
        for name in tensors
        if name not in needed
        and not name.endswith(_UNUSED_SUFFIXES)
        and not name.startswith(_UNUSED_PREFIXES)
    ]
    missing = sorted(needed - set(tensors))
    if missing or unused:
        raise ValueError(
            f"{path} does not match a {backbone_name} backbone: missing tensors "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected tensors "
            f"{sorted(unused)[:5]}{' ...' if len(unused) > 5 else ''}. Use a torchvision or "
            f"timm {backbone_name} checkpoint, or set --config.model.backbone to its depth."
        )
    for name in sorted(needed):
        target = names[name]
        value = np.asarray(tensors[name], dtype=np.float32)
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        expected_shape = tuple(np.shape(_get(params, target)))
        if value.shape != expected_shape:
            hint = ""
            if name == "conv1.weight":
                hint = (
                    " The stem needs --config.model.stem=imagenet and "
                    "--config.num_channels=3 for ImageNet weights."
                )
            raise ValueError(
                f"Tensor {name!r} in {path} has shape {value.shape} after conversion, but "
                f"the backbone expects {expected_shape}.{hint}"
            )
        _set(params, target, value)
    return params


def _copy_tree(tree):
    if isinstance(tree, dict):
        return {key: _copy_tree(value) for key, value in tree.items()}
    return tree


def supported(backbone_name: str) -> bool:
    """Return whether pretrained weights can be loaded into `backbone_name`."""
    return backbone_name in backbones.RESNET_LAYOUTS
