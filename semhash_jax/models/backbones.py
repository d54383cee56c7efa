"""Image backbones, selected by name: a small CNN and ResNet-18/50/101/152.

Every backbone maps images [B, H, W, C] to features [B, D] and exposes
`feature_dim`. Batch normalisation uses batch statistics in training mode and
running averages after `model.eval()`. `dtype` is the compute dtype of
convolutions and batch norm outputs; parameters are float32 whatever it is, and
batch statistics are computed in float32.
"""

from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp

# Compute dtypes by config name (config.model.dtype).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _pad(kernel: int):
    """Symmetric padding of (kernel - 1) // 2 pixels, as PyTorch's ResNets pad."""
    return ((kernel - 1) // 2,) * 2


def conv(in_channels, out_channels, kernel: int, *, rngs, stride: int = 1, dtype=jnp.float32):
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
        dtype=dtype,
        rngs=rngs,
    )


def batch_norm(features: int, *, rngs, dtype, zero_scale: bool = False):
    """Batch norm with momentum 0.9 (running averages, as in PyTorch's 0.1)."""
    extra = {"scale_init": nnx.initializers.zeros} if zero_scale else {}
    return nnx.BatchNorm(features, momentum=0.9, dtype=dtype, rngs=rngs, **extra)


def _pool_windows(x):
    """Return [B, H/2, 2, W/2, 2, C] windows of x [B, H, W, C]; odd sizes pad -inf at the end."""
    batch, height, width, channels = x.shape
    if height % 2 or width % 2:
        padding = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
        x = jnp.pad(x, padding, constant_values=-jnp.inf)
    return x.reshape(batch, (height + 1) // 2, 2, (width + 1) // 2, 2, channels)


def _pool_with_argmax(x):
    """Return the 2x2 window maxima of x and the position (0..3, row-major) of each.

    A tie goes to the first position. The positions come from comparisons of the
    window elements themselves, not from testing which element equals the max,
    because XLA may recompute the inputs in the backward pass with other
    rounding, and an equality test then matches no element.
    """
    windows = _pool_windows(x)
    top_left, top_right = windows[:, :, 0, :, 0], windows[:, :, 0, :, 1]
    bottom_left, bottom_right = windows[:, :, 1, :, 0], windows[:, :, 1, :, 1]
    top = jnp.maximum(top_left, top_right)
    top_index = jnp.where(top_right > top_left, 1, 0).astype(jnp.int8)
    bottom = jnp.maximum(bottom_left, bottom_right)
    bottom_index = jnp.where(bottom_right > bottom_left, 3, 2).astype(jnp.int8)
    pooled = jnp.maximum(top, bottom)
    return pooled, jnp.where(bottom > top, bottom_index, top_index)


@jax.custom_vjp
def max_pool_2x2(x):
    """2x2 max pooling with stride 2 of [B, H, W, C], as nnx.max_pool with "SAME" padding.

    Values and gradients equal `nnx.max_pool(x, (2, 2), (2, 2), padding="SAME")`,
    ties included: a window's gradient goes to its first maximum in row-major
    order. XLA's CPU backend computes the gradient of a strided reduce-window
    through index arrays and a scatter, which took over half of the small CNN's
    training step (benchmarks/train_step.py). Elementwise maxima and selects cost
    a fraction of that.
    """
    return _pool_with_argmax(x)[0]


def _max_pool_2x2_forward(x):
    pooled, position = _pool_with_argmax(x)
    return pooled, (position, x.shape)


def _max_pool_2x2_backward(residuals, gradient):
    position, shape = residuals
    zero = jnp.zeros_like(gradient)
    routed = [jnp.where(position == index, gradient, zero) for index in range(4)]
    top = jnp.stack(routed[:2], axis=3)  # [B, H/2, W/2, 2, C]: the windows' first rows
    bottom = jnp.stack(routed[2:], axis=3)
    windows = jnp.stack([top, bottom], axis=2)  # [B, H/2, 2, W/2, 2, C]
    batch, height, width, channels = shape
    full = windows.reshape(batch, 2 * ((height + 1) // 2), 2 * ((width + 1) // 2), channels)
    return (full[:, :height, :width, :],)


max_pool_2x2.defvjp(_max_pool_2x2_forward, _max_pool_2x2_backward)


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
        dtype=jnp.float32,
    ):
        convs, norms = [], []
        channels = in_channels
        for width in widths:
            convs.append(nnx.Conv(channels, width, (3, 3), use_bias=False, dtype=dtype, rngs=rngs))
            norms.append(batch_norm(width, dtype=dtype, rngs=rngs))
            channels = width
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        # Global average pooling keeps the dense layer independent of image size.
        self.dense = nnx.Linear(channels, dense, dtype=dtype, rngs=rngs)
        self.feature_dim = dense

    def __call__(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = nnx.relu(norm(conv(x)))
            x = max_pool_2x2(x)
        x = jnp.mean(x, axis=(1, 2))
        return nnx.relu(self.dense(x))


class BasicBlock(nnx.Module):
    """ResNet basic block: two 3x3 convs with a shortcut."""

    expansion = 1
    num_convs = 2

    def __init__(self, in_channels, width, stride, *, rngs, dtype=jnp.float32):
        out = width * self.expansion
        self.conv1 = conv(in_channels, width, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.norm1 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = conv(width, out, 3, dtype=dtype, rngs=rngs)
        # Zero-initialised last scale: each block starts as the identity.
        self.norm2 = batch_norm(out, dtype=dtype, rngs=rngs, zero_scale=True)
        self.shortcut = _shortcut(in_channels, out, stride, rngs, dtype)

    def __call__(self, x):
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return nnx.relu(y + (self.shortcut(x) if self.shortcut else x))


class Bottleneck(nnx.Module):
    """ResNet bottleneck block: 1x1, 3x3 (strided), 1x1 convs with a shortcut."""

    expansion = 4
    num_convs = 3

    def __init__(self, in_channels, width, stride, *, rngs, dtype=jnp.float32):
        out = width * self.expansion
        self.conv1 = conv(in_channels, width, 1, dtype=dtype, rngs=rngs)
        self.norm1 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = conv(width, width, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.norm2 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv3 = conv(width, out, 1, dtype=dtype, rngs=rngs)
        self.norm3 = batch_norm(out, dtype=dtype, rngs=rngs, zero_scale=True)
        self.shortcut = _shortcut(in_channels, out, stride, rngs, dtype)

    def __call__(self, x):
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = nnx.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return nnx.relu(y + (self.shortcut(x) if self.shortcut else x))


class Shortcut(nnx.Module):
    """Projection shortcut: strided 1x1 conv and batch norm."""

    def __init__(self, in_channels, out_channels, stride, *, rngs, dtype=jnp.float32):
        self.conv = conv(in_channels, out_channels, 1, stride=stride, dtype=dtype, rngs=rngs)
        self.norm = batch_norm(out_channels, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv(x))


def _shortcut(in_channels, out_channels, stride, rngs, dtype):
    if stride == 1 and in_channels == out_channels:
        return None
    return Shortcut(in_channels, out_channels, stride, rngs=rngs, dtype=dtype)


class ResNet(nnx.Module):
    """ResNet v1.5 (stride in the 3x3 conv) with a choice of stem.

    stem="imagenet" is the 7x7/2 conv plus 3x3/2 max pool for 224 px images;
    stem="cifar" is one 3x3/1 conv without pooling, for 32 px images.
    """

    def __init__(
        self, block, stage_sizes, in_channels, *, rngs, stem="imagenet", dtype=jnp.float32
    ):
        if stem == "imagenet":
            self.stem_conv = conv(in_channels, 64, 7, stride=2, dtype=dtype, rngs=rngs)
        elif stem == "cifar":
            self.stem_conv = conv(in_channels, 64, 3, dtype=dtype, rngs=rngs)
        else:
            raise ValueError(
                f"Unknown ResNet stem {stem!r}. Set --config.model.stem to 'imagenet' or 'cifar'."
            )
        self.stem = stem
        self.stem_norm = batch_norm(64, dtype=dtype, rngs=rngs)
        blocks = []
        channels = 64
        for stage, count in enumerate(stage_sizes):
            width = 64 * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(channels, width, stride, rngs=rngs, dtype=dtype))
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
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}

BACKBONES: dict[str, Callable[..., nnx.Module]] = {
    "small_cnn": lambda in_channels, rngs, stem, dtype: SmallCNN(
        in_channels, rngs=rngs, dtype=dtype
    ),
    **{
        name: lambda in_channels, rngs, stem, dtype, layout=layout: ResNet(
            *layout, in_channels, rngs=rngs, stem=stem, dtype=dtype
        )
        for name, layout in RESNET_LAYOUTS.items()
    },
}


def create_backbone(
    name: str, in_channels: int, *, rngs: nnx.Rngs, stem: str = "imagenet", dtype: str = "float32"
) -> nnx.Module:
    """Build backbone `name` computing in `dtype` (a key of COMPUTE_DTYPES)."""
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Set --config.model.backbone to one of: "
            f"{', '.join(sorted(BACKBONES))}."
        )
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"Unknown compute dtype {dtype!r}. Set --config.model.dtype to one of: "
            f"{', '.join(COMPUTE_DTYPES)}."
        )
    return BACKBONES[name](in_channels, rngs, stem, COMPUTE_DTYPES[dtype])
