"""The two hash networks of SemanticHash and the model that joins them.

The visual hash network maps an image to K values in (-1, 1). The semantic
hash network maps the text embedding of a class name to a K-dim class
prototype in (-1, 1). At test time both are binarised with sign.
"""

from typing import Sequence

from flax import nnx
import jax.numpy as jnp

from semhash_jax.models import backbones


class VisualHashNet(nnx.Module):
    """Backbone, then Dense(K) and tanh.

    The hash layer computes in float32 whatever the backbone's compute dtype, so
    codes and the loss keep full precision under mixed precision.
    """

    def __init__(self, backbone: nnx.Module, bits: int, *, rngs: nnx.Rngs):
        self.backbone = backbone
        self.hash_layer = nnx.Linear(backbone.feature_dim, bits, rngs=rngs)

    def __call__(self, images):
        features = self.backbone(images).astype(jnp.float32)
        return jnp.tanh(self.hash_layer(features))


class SemanticHashNet(nnx.Module):
    """MLP with ReLU hidden layers from the text embedding width to K, then tanh."""

    def __init__(self, embedding_dim: int, hidden: Sequence[int], bits: int, *, rngs: nnx.Rngs):
        widths = (embedding_dim,) + tuple(hidden)
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.output = nnx.Linear(widths[-1], bits, rngs=rngs)

    def __call__(self, embeddings):
        x = embeddings
        for layer in self.hidden:
            x = nnx.relu(layer(x))
        return jnp.tanh(self.output(x))


class SemanticHash(nnx.Module):
    """Visual and semantic hash networks, trained jointly."""

    def __init__(self, visual: VisualHashNet, semantic: SemanticHashNet):
        self.visual = visual
        self.semantic = semantic

    def __call__(self, images, class_embeddings):
        """Return image codes [B, K] and class prototypes [C, K], both in (-1, 1)."""
        return self.visual(images), self.semantic(class_embeddings)


def create_model(
    model_config, *, bits: int, in_channels: int, embedding_dim: int, rngs: nnx.Rngs
) -> SemanticHash:
    """Build SemanticHash from `config.model`."""
    backbone = backbones.create_backbone(
        model_config.backbone,
        in_channels,
        rngs=rngs,
        stem=model_config.stem,
        dtype=model_config.get("dtype", "float32"),
    )
    visual = VisualHashNet(backbone, bits, rngs=rngs)
    semantic = SemanticHashNet(embedding_dim, tuple(model_config.semantic_hidden), bits, rngs=rngs)
    return SemanticHash(visual, semantic)
