"""Image backbones, selected by name: a small CNN and ResNet-18/50.

Every backbone maps images [B, H, W, C] to features [B, D] and exposes
`feature_dim`. Batch normalisation uses batch statistics in training mode and
running averages after `model.eval()`.
"""

from typing import Callable

from flax import nnx
import jax.numpy as jnp


def _pad(kernel: int):
    """Symmetric padding of (kernel - 1) // 2 pixels, as PyTorch's ResNets pad."""
    return ((kernel - 1) // 2,) * 2


def conv(in_channels, out_channels, kernel: int, *, rngs, stride: int = 1):
    """Bias-free convolution with PyTorch-style padding (see `_pad`).

    XLA's "SAME" padding puts the extra pixel of a strided convolution at the end,
    which shifts the sampling grid against PyTorch's. The explicit padding keeps
    converted torchvision and timm weights exact.
    """
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel, kernel),
        strides=stride,
        padding=(_pad(kernel), _pad(kernel)),
        use_bias=False,
        rngs=rngs,
    )


class SmallCNN(nnx.Module):
    """Three 3x3 conv blocks (conv, BN, ReLU, 2x2 max pool), then one dense layer.

    Sized for 28-32 px images; the default widths (32, 64, 128, dense 256)
    follow the small CNN that hashing toolkits use on MNIST-like data.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        rngs: nnx.Rngs,
        widths: tuple[int, ...] = (32, 64, 128),
        dense: int = 256,
    ):
        convs, norms = [], []
        channels = in_channels
        for width in widths:
            convs.append(nnx.Conv(channels, width, (3, 3), use_bias=False, rngs=rngs))
            norms.append(nnx.BatchNorm(width, momentum=0.9, rngs=rngs))
            channels = width
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        # Global average pooling keeps the dense layer independent of image size.
        self.dense = nnx.Linear(channels, dense, rngs=rngs)
        self.feature_dim = dense

    def __call__(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = nnx.relu(norm(conv(x)))
            x = nnx.max_pool(x, (2, 2), (2, 2), padding="SAME")
        x = jnp.mean(x, axis=(1, 2))
        return nnx.relu(self.dense(x))


class BasicBlock(nnx.Module):
    """ResNet basic block: two 3x3 convs with a shortcut."""

    expansion = 1
    num_convs = 2

    def __init__(self, in_channels, width, stride, *, rngs):
        out = width * self.expansion
        self.conv1 = conv(in_channels, width, 3, stride=stride, rngs=rngs)
        self.norm1 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
        self.conv2 = conv(width, out, 3, rngs=rngs)
        # Zero-initialised last scale: each block starts as the identity.
        self.norm2 = nnx.BatchNorm(out, momentum=0.9, rngs=rngs, scale_init=nnx.initializers.zeros)
        self.shortcut = _shortcut(in_channels, out, stride, rngs)

    def __call__(self, x):
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return nnx.relu(y + (self.shortcut(x) if self.shortcut else x))


class Bottleneck(nnx.Module):
    """ResNet bottleneck block: 1x1, 3x3 (strided), 1x1 convs with a shortcut."""

    expansion = 4
    num_convs = 3

    def __init__(self, in_channels, width, stride, *, rngs):
        out = width * self.expansion
        self.conv1 = conv(in_channels, width, 1, rngs=rngs)
        self.norm1 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
        self.conv2 = conv(width, width, 3, stride=stride, rngs=rngs)
        self.norm2 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
        self.conv3 = conv(width, out, 1, rngs=rngs)
        self.norm3 = nnx.BatchNorm(out, momentum=0.9, rngs=rngs, scale_init=nnx.initializers.zeros)
        self.shortcut = _shortcut(in_channels, out, stride, rngs)

    def __call__(self, x):
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = nnx.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return nnx.relu(y + (self.shortcut(x) if self.shortcut else x))


class Shortcut(nnx.Module):
    """Projection shortcut: strided 1x1 conv and batch norm."""

    def __init__(self, in_channels, out_channels, stride, *, rngs):
        self.conv = conv(in_channels, out_channels, 1, stride=stride, rngs=rngs)
        self.norm = nnx.BatchNorm(out_channels, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv(x))


def _shortcut(in_channels, out_channels, stride, rngs):
    if stride == 1 and in_channels == out_channels:
        return None
    return Shortcut(in_channels, out_channels, stride, rngs=rngs)


class ResNet(nnx.Module):
    """ResNet v1.5 (stride in the 3x3 conv) with a choice of stem.

    stem="imagenet" is the 7x7/2 conv plus 3x3/2 max pool for 224 px images;
    stem="cifar" is one 3x3/1 conv without pooling, for 32 px images.
    """

    def __init__(self, block, stage_sizes, in_channels, *, rngs, stem="imagenet"):
        if stem == "imagenet":
            self.stem_conv = conv(in_channels, 64, 7, stride=2, rngs=rngs)
        elif stem == "cifar":
            self.stem_conv = conv(in_channels, 64, 3, rngs=rngs)
        else:
            raise ValueError(
                f"Unknown ResNet stem {stem!r}. Set --config.model.stem to 'imagenet' or 'cifar'."
            )
        self.stem = stem
        self.stem_norm = nnx.BatchNorm(64, momentum=0.9, rngs=rngs)
        blocks = []
        channels = 64
        for stage, count in enumerate(stage_sizes):
            width = 64 * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(channels, width, stride, rngs=rngs))
                channels = width * block.expansion
        self.blocks = nnx.List(blocks)
        self.feature_dim = channels

    def __call__(self, x):
        x = nnx.relu(self.stem_norm(self.stem_conv(x)))
        if self.stem == "imagenet":
            x = nnx.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return jnp.mean(x, axis=(1, 2))


# Block type and blocks per stage of each ResNet depth.
RESNET_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}

BACKBONES: dict[str, Callable[..., nnx.Module]] = {
    "small_cnn": lambda in_channels, rngs, stem: SmallCNN(in_channels, rngs=rngs),
    **{
        name: lambda in_channels, rngs, stem, layout=layout: ResNet(
            *layout, in_channels, rngs=rngs, stem=stem
        )
        for name, layout in RESNET_LAYOUTS.items()
    },
}


def create_backbone(
    name: str, in_channels: int, *, rngs: nnx.Rngs, stem: str = "imagenet"
) -> nnx.Module:
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Set --config.model.backbone to one of: "
            f"{', '.join(sorted(BACKBONES))}."
        )
    return BACKBONES[name](in_channels, rngs, stem)
