"""The hash networks of SemanticHash and its baselines, and the model that joins them.

The visual hash network maps an image to K values in (-1, 1). The class side
maps the classes to K-dim prototypes [C, K]; which module it is depends on the
method (`config.method`):

  semantic_hash   SemanticHashNet: an MLP over the text embedding of each class
                  name, then tanh. Classes never trained on get prototypes too.
  adalabelhash    CodewordTable: free learned codewords, tanh of a [C, K] table.
  csq, orthohash  FixedCodes: fixed -1/+1 codes (`hash_centres`), not trained.
  classification  ClassifierWeights: the [C, K] weights of a linear softmax
                  classifier over the image codes (no bias, no tanh).

The table-based class sides take the class embeddings only for their count, so
every method has the same call signature. At test time codes and prototypes
are binarised with sign.
"""

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from semhash_jax.models import backbones, hash_centres

METHODS = ("semantic_hash", "adalabelhash", "csq", "orthohash", "classification")


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


class _ClassTable(nnx.Module):
    """Base of the class sides that hold one row per class."""

    num_classes: int

    def _check(self, class_embeddings):
        if class_embeddings.shape[0] != self.num_classes:
            raise ValueError(
                f"This {type(self).__name__} contains codes of {self.num_classes} classes but "
                f"was given {class_embeddings.shape[0]}. Only config.method='semantic_hash' "
                "encodes classes it was not built with."
            )


class CodewordTable(_ClassTable):
    """AdaLabelHash's class codewords: tanh of a learned [C, K] table."""

    def __init__(self, num_classes: int, bits: int, *, rngs: nnx.Rngs):
        self.num_classes = num_classes
        # Unit-variance entries make distinct codewords from the start (|tanh| ~ 0.6).
        # With small ones every similarity starts near 0, the hinge gives the image
        # codes almost no gradient, and the quantization term saturates them first.
        init = jax.nn.initializers.normal(stddev=1.0)
        self.table = nnx.Param(init(rngs.params(), (num_classes, bits)))

    def __call__(self, class_embeddings):
        self._check(class_embeddings)
        return jnp.tanh(self.table[...])


class FixedCode(nnx.Variable):
    """Class codes that are part of the model but never trained."""


class FixedCodes(_ClassTable):
    """Fixed -1/+1 class codes from `hash_centres.hash_centres` (CSQ, OrthoHash)."""

    def __init__(self, num_classes: int, bits: int, *, seed: int):
        self.num_classes = num_classes
        centres = hash_centres.hash_centres(num_classes, bits, seed=seed)
        self.codes = FixedCode(jnp.asarray(centres, jnp.float32))

    def __call__(self, class_embeddings):
        self._check(class_embeddings)
        return self.codes[...]


class ClassifierWeights(_ClassTable):
    """Weights [C, K] of a linear classifier over image codes: logits = codes @ W.T."""

    def __init__(self, num_classes: int, bits: int, *, rngs: nnx.Rngs):
        self.num_classes = num_classes
        init = jax.nn.initializers.lecun_normal()
        self.weights = nnx.Param(init(rngs.params(), (num_classes, bits)))

    def __call__(self, class_embeddings):
        self._check(class_embeddings)
        return self.weights[...]


class SemanticHash(nnx.Module):
    """The visual hash network and a class side, trained jointly."""

    def __init__(self, visual: VisualHashNet, semantic: nnx.Module):
        self.visual = visual
        self.semantic = semantic

    def __call__(self, images, class_embeddings):
        """Return image codes [B, K] and class prototypes [C, K], both in (-1, 1)."""
        return self.visual(images), self.semantic(class_embeddings)


def create_class_side(
    method: str,
    *,
    num_classes: int,
    bits: int,
    embedding_dim: int,
    hidden: Sequence[int],
    seed: int,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Return the class side of `method` (see the module docstring)."""
    if method == "semantic_hash":
        return SemanticHashNet(embedding_dim, hidden, bits, rngs=rngs)
    if method == "adalabelhash":
        return CodewordTable(num_classes, bits, rngs=rngs)
    if method in ("csq", "orthohash"):
        return FixedCodes(num_classes, bits, seed=seed)
    if method == "classification":
        return ClassifierWeights(num_classes, bits, rngs=rngs)
    raise ValueError(
        f"Unknown config.method={method!r}. Set --config.method to one of: {', '.join(METHODS)}."
    )


def create_model(
    model_config,
    *,
    bits: int,
    in_channels: int,
    embedding_dim: int,
    rngs: nnx.Rngs,
    method: str = "semantic_hash",
    num_classes: int | None = None,
    seed: int = 0,
) -> SemanticHash:
    """Build the model of `method` from `config.model`.

    `num_classes` (the classes trained on) is needed by every method but
    semantic_hash; `seed` draws the fixed codes of csq and orthohash when they are
    not Hadamard rows.
    """
    backbone = backbones.create_backbone(
        model_config.backbone,
        in_channels,
        rngs=rngs,
        stem=model_config.stem,
        dtype=model_config.get("dtype", "float32"),
    )
    visual = VisualHashNet(backbone, bits, rngs=rngs)
    semantic = create_class_side(
        method,
        num_classes=num_classes,
        bits=bits,
        embedding_dim=embedding_dim,
        hidden=tuple(model_config.semantic_hidden),
        seed=seed,
        rngs=rngs,
    )
    return SemanticHash(visual, semantic)
