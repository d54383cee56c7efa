"""SemanticHash losses: alignment of image codes with class prototypes, and
quantization.

Labels are multi-hot [B, C] everywhere (single-label data is one-hot), so one
code path serves both. A row with no positive label contributes zero loss and
is left out of the batch mean. Similarities:

  "inner_product": s = b.p / K, in [-1, 1]. For binary codes s = 1 - 2 d/K,
      where d is the Hamming distance, so a margin m requires a gap of m K / 2
      bits. AdaLabelHash's unnormalised margin 1 is m = 1/K here.
  "cosine":        s = b.p / (|b| |p|).

Alignment losses:

  "hinge": for every positive class j of image i,
      max(0, m - s_ij + max_{l negative} s_il), averaged over the positives of
      the image (AdaLabelHash's loss, with the hardest negative class).
  "softmax_ce": cross-entropy of softmax(scale * s_i) against the label
      distribution y_i / sum(y_i).

Quantization: lambda * mean((|b| - 1)^2) over image codes, and optionally over
prototypes.
"""

import jax
import jax.numpy as jnp
import optax

SIMILARITIES = ("inner_product", "cosine")
ALIGNMENT_LOSSES = ("hinge", "softmax_ce")

# Stands in for -inf where a row has no negative class, so that arithmetic on
# masked entries stays finite.
_NO_NEGATIVE = -1e4


def similarity(codes, prototypes, kind: str):
    """Return the [B, C] similarity of image codes and class prototypes."""
    if kind == "inner_product":
        return codes @ prototypes.T / codes.shape[-1]
    if kind == "cosine":
        codes = codes / jnp.maximum(jnp.linalg.norm(codes, axis=-1, keepdims=True), 1e-8)
        prototypes = prototypes / jnp.maximum(
            jnp.linalg.norm(prototypes, axis=-1, keepdims=True), 1e-8
        )
        return codes @ prototypes.T
    raise ValueError(
        f"Unknown similarity {kind!r}. Set --config.loss.similarity to one of: "
        f"{', '.join(SIMILARITIES)}."
    )


def _mean_over_labelled_rows(per_row, has_label):
    count = jnp.sum(has_label)
    return jnp.sum(jnp.where(has_label, per_row, 0.0)) / jnp.maximum(count, 1)


def hinge_loss(sim, labels, margin: float):
    """Hinge of every positive class against the hardest negative class."""
    positive = labels > 0
    hardest_negative = jnp.max(jnp.where(positive, _NO_NEGATIVE, sim), axis=-1)
    per_pair = jax.nn.relu(margin - sim + hardest_negative[:, None])
    num_positive = jnp.sum(positive, axis=-1)
    per_row = jnp.sum(jnp.where(positive, per_pair, 0.0), axis=-1) / jnp.maximum(num_positive, 1)
    return _mean_over_labelled_rows(per_row, num_positive > 0)


def softmax_ce_loss(sim, labels, scale: float):
    """Softmax cross-entropy over scaled similarities, multi-label targets."""
    num_positive = jnp.sum(labels > 0, axis=-1)
    targets = labels / jnp.maximum(jnp.sum(labels, axis=-1, keepdims=True), 1e-12)
    per_row = optax.softmax_cross_entropy(scale * sim, targets)
    return _mean_over_labelled_rows(per_row, num_positive > 0)


def quantization_loss(values):
    """mean((|x| - 1)^2): zero exactly when every value is -1 or +1."""
    return jnp.mean((jnp.abs(values) - 1.0) ** 2)


def semantic_hash_loss(codes, prototypes, labels, loss_config):
    """Return (total loss, dict of its terms) for one batch.

    Args:
      codes: image codes [B, K] in (-1, 1).
      prototypes: class prototypes [C, K] in (-1, 1).
      labels: multi-hot labels [B, C].
      loss_config: `config.loss` (alignment, similarity, margin, scale,
        quantization_weight, quantize_prototypes).
    """
    labels = labels.astype(codes.dtype)
    sim = similarity(codes, prototypes, loss_config.similarity)
    if loss_config.alignment == "hinge":
        alignment = hinge_loss(sim, labels, loss_config.margin)
    elif loss_config.alignment == "softmax_ce":
        alignment = softmax_ce_loss(sim, labels, loss_config.scale)
    else:
        raise ValueError(
            f"Unknown alignment loss {loss_config.alignment!r}. Set "
            f"--config.loss.alignment to one of: {', '.join(ALIGNMENT_LOSSES)}."
        )
    quantization = quantization_loss(codes)
    if loss_config.quantize_prototypes:
        quantization = quantization + quantization_loss(prototypes)
    total = alignment + loss_config.quantization_weight * quantization
    return total, {"alignment_loss": alignment, "quantization_loss": quantization}
