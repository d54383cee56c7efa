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

Baselines (`config.method`, see semhash_jax/models/hash_nets.py), each with the
loss of its paper on the same codes b in (-1, 1):

  "adalabelhash": the hinge above against learned codewords, with the
      similarity, margin and quantization weight of `config.loss`.
  "csq": binary cross-entropy of (b + 1) / 2 against the bits of the image's
      hash centre, mean over bits, plus lambda * mean((|b| - 1)^2)
      (`config.csq`). Multi-label centres: `hash_centres.multi_label_centres`.
  "orthohash": cross-entropy of softmax(s (cos(b, c_j) - m y_j)) against the
      label distribution, where c_j are fixed orthogonal codes, s the scale and
      m the margin (`config.orthohash`); optional quantization
      1 - cos(b, sign(b)) with sign(b) held constant, OrthoHash's "cs" form.
  "classification": cross-entropy of softmax(b W^T) against the label
      distribution, W the classifier weights, plus optional quantization
      (`config.classification`).
"""

import jax
import jax.numpy as jnp
import optax

from semhash_jax.models import hash_centres, hash_nets

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


def semantic_hash_loss(codes, prototypes, labels, loss_config, *, alignment: str | None = None):
    """Return (total loss, dict of its terms) for one batch.

    Args:
      codes: image codes [B, K] in (-1, 1).
      prototypes: class prototypes [C, K] in (-1, 1).
      labels: multi-hot labels [B, C].
      loss_config: `config.loss` (alignment, similarity, margin, scale,
        quantization_weight, quantize_prototypes).
      alignment: replaces loss_config.alignment when given.
    """
    labels = labels.astype(codes.dtype)
    kind = alignment or loss_config.alignment
    sim = similarity(codes, prototypes, loss_config.similarity)
    if kind == "hinge":
        aligned = hinge_loss(sim, labels, loss_config.margin)
    elif kind == "softmax_ce":
        aligned = softmax_ce_loss(sim, labels, loss_config.scale)
    else:
        raise ValueError(
            f"Unknown alignment loss {kind!r}. Set "
            f"--config.loss.alignment to one of: {', '.join(ALIGNMENT_LOSSES)}."
        )
    quantization = quantization_loss(codes)
    if loss_config.quantize_prototypes:
        quantization = quantization + quantization_loss(prototypes)
    return _terms(aligned, quantization, loss_config.quantization_weight)


# Config fields that a method's model and loss never read, as dotted prefixes. Runs
# that differ only in them compute the same thing (used by the sweep runner). Only
# SemanticHash reads the class names' text embeddings.
_OTHER_METHODS_SETTINGS = ("csq.", "orthohash.", "classification.")
_TEXT_SIDE = ("text.", "model.semantic_hidden")
UNUSED_CONFIG_FIELDS = {
    "semantic_hash": _OTHER_METHODS_SETTINGS,
    "adalabelhash": _OTHER_METHODS_SETTINGS + _TEXT_SIDE + ("loss.alignment", "loss.scale"),
    "csq": _TEXT_SIDE + ("loss.", "orthohash.", "classification."),
    "orthohash": _TEXT_SIDE + ("loss.", "csq.", "classification."),
    "classification": _TEXT_SIDE + ("loss.", "csq.", "orthohash."),
}


def _terms(alignment, quantization, weight):
    total = alignment + weight * quantization
    return total, {"alignment_loss": alignment, "quantization_loss": quantization}


def csq_loss(codes, centres, labels, quantization_weight: float):
    """CSQ: per-bit binary cross-entropy to the image's hash centre, plus quantization.

    The log of each bit's probability is clipped at log(1e-30), as PyTorch's
    BCELoss clamps it, so codes saturated at -1 or +1 give finite values.
    """
    labels = labels.astype(codes.dtype)
    targets = hash_centres.multi_label_centres(centres, labels)
    probability = jnp.clip((1.0 + targets * codes) / 2.0, 1e-30, 1.0)
    per_row = -jnp.mean(jnp.log(probability), axis=-1)
    alignment = _mean_over_labelled_rows(per_row, jnp.sum(labels, axis=-1) > 0)
    return _terms(alignment, quantization_loss(codes), quantization_weight)


def orthohash_loss(codes, class_codes, labels, *, scale: float, margin: float, quantization_weight):
    """OrthoHash: cosine-margin softmax cross-entropy to fixed class codes."""
    labels = labels.astype(codes.dtype)
    cosine = similarity(codes, class_codes, "cosine")
    logits = scale * (cosine - margin * (labels > 0))
    targets = labels / jnp.maximum(jnp.sum(labels, axis=-1, keepdims=True), 1e-12)
    per_row = optax.softmax_cross_entropy(logits, targets)
    alignment = _mean_over_labelled_rows(per_row, jnp.sum(labels, axis=-1) > 0)
    signs = jax.lax.stop_gradient(jnp.where(codes >= 0, 1.0, -1.0))
    norms = jnp.maximum(jnp.linalg.norm(codes, axis=-1), 1e-8) * jnp.sqrt(codes.shape[-1])
    quantization = 1.0 - jnp.mean(jnp.sum(codes * signs, axis=-1) / norms)
    return _terms(alignment, quantization, quantization_weight)


def classification_loss(codes, weights, labels, quantization_weight: float):
    """Softmax cross-entropy of a bias-free linear classifier over the codes."""
    labels = labels.astype(codes.dtype)
    targets = labels / jnp.maximum(jnp.sum(labels, axis=-1, keepdims=True), 1e-12)
    per_row = optax.softmax_cross_entropy(codes @ weights.T, targets)
    alignment = _mean_over_labelled_rows(per_row, jnp.sum(labels, axis=-1) > 0)
    return _terms(alignment, quantization_loss(codes), quantization_weight)


def method_loss(config, codes, prototypes, labels):
    """Return (total loss, dict of its terms) of `config.method` for one batch.

    `prototypes` is the class side's output [C, K]: SemanticHash prototypes,
    AdaLabelHash codewords, CSQ or OrthoHash fixed codes, or classifier weights.
    """
    method = config.get("method", "semantic_hash")
    if method == "semantic_hash":
        return semantic_hash_loss(codes, prototypes, labels, config.loss)
    if method == "adalabelhash":
        return semantic_hash_loss(codes, prototypes, labels, config.loss, alignment="hinge")
    if method == "csq":
        return csq_loss(codes, prototypes, labels, config.csq.quantization_weight)
    if method == "orthohash":
        return orthohash_loss(
            codes,
            prototypes,
            labels,
            scale=config.orthohash.scale,
            margin=config.orthohash.margin,
            quantization_weight=config.orthohash.quantization_weight,
        )
    if method == "classification":
        return classification_loss(
            codes, prototypes, labels, config.classification.quantization_weight
        )
    raise ValueError(
        f"Unknown config.method={method!r}. Set --config.method to one of: "
        f"{', '.join(hash_nets.METHODS)}."
    )
