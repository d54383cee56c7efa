"""BERT encoder in Flax NNX that loads Hugging Face `BertModel` safetensors checkpoints.

The network follows the original post-LN BERT: embeddings (word + absolute position
+ token type) with LayerNorm, then blocks of self-attention and a feed-forward layer
with exact (erf) GELU, each followed by a residual add and LayerNorm. It is
inference-only, so dropout is left out, and it returns the last hidden state without
the pooler.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

# Full float32 matmuls. On GPUs XLA may otherwise use TF32 for float32 dots, and its
# 10-bit mantissa is too coarse for the 1e-5 match with the PyTorch reference.
_PRECISION = jax.lax.Precision.HIGHEST

# Checkpoint entries that are not part of the encoder: the pooler, the pre-training
# heads of BertForPreTraining / BertForMaskedLM, and the position_ids buffer.
_IGNORED_KEY_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")

_SUPPORTED_HIDDEN_ACT = "gelu"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyperparameters of a BERT encoder, with Hugging Face `BertConfig` field names."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> BertConfig:
        """Read `config.json` in `model_dir` through `transformers.AutoConfig`.

        Raises:
            ValueError: the model_type is not "bert", or the activation or position
                embedding type is one that `BertEncoder` does not implement.
        """
        # Imported on first use because importing transformers takes about a second.
        import transformers

        hf_config = transformers.AutoConfig.from_pretrained(str(model_dir))
        model_type = getattr(hf_config, "model_type", None)
        if model_type != "bert":
            raise ValueError(
                f"Unsupported model_type {model_type!r} in {Path(model_dir) / 'config.json'}: "
                "only 'bert' is supported."
            )
        hidden_act = getattr(hf_config, "hidden_act", _SUPPORTED_HIDDEN_ACT)
        if hidden_act != _SUPPORTED_HIDDEN_ACT:
            raise ValueError(
                f"Unsupported hidden_act {hidden_act!r} in {Path(model_dir) / 'config.json'}: "
                f"only {_SUPPORTED_HIDDEN_ACT!r} (exact erf GELU) is supported."
            )
        position_type = getattr(hf_config, "position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"Unsupported position_embedding_type {position_type!r} in "
                f"{Path(model_dir) / 'config.json'}: only 'absolute' is supported."
            )
        pad_token_id = getattr(hf_config, "pad_token_id", None)
        return cls(
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.hidden_size,
            num_hidden_layers=hf_config.num_hidden_layers,
            num_attention_heads=hf_config.num_attention_heads,
            intermediate_size=hf_config.intermediate_size,
            max_position_embeddings=hf_config.max_position_embeddings,
            type_vocab_size=hf_config.type_vocab_size,
            layer_norm_eps=float(hf_config.layer_norm_eps),
            pad_token_id=0 if pad_token_id is None else int(pad_token_id),
        )


def _linear(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, precision=_PRECISION, rngs=rngs)


def _layer_norm(config: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False computes E[(x - mean)^2] as PyTorch does. The fast
    # E[x^2] - mean^2 form loses precision when the mean is large relative to the spread.
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=config.layer_norm_eps,
        use_fast_variance=False,
        rngs=rngs,
    )


class BertEmbeddings(nnx.Module):
    """Sum of word, position and token type embeddings, followed by LayerNorm."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, rngs=rngs)
        self.position_embeddings = nnx.Embed(
            config.max_position_embeddings, config.hidden_size, rngs=rngs
        )
        self.token_type_embeddings = nnx.Embed(
            config.type_vocab_size, config.hidden_size, rngs=rngs
        )
        self.layer_norm = _layer_norm(config, rngs)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        seq_len = input_ids.shape[1]
        position_ids = jnp.arange(seq_len)[None, :]
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.layer_norm(embeddings)


class BertSelfAttention(nnx.Module):
    """Multi-head scaled dot-product self-attention with the output projection."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = _linear(config.hidden_size, config.hidden_size, rngs)
        self.key = _linear(config.hidden_size, config.hidden_size, rngs)
        self.value = _linear(config.hidden_size, config.hidden_size, rngs)
        self.output = _linear(config.hidden_size, config.hidden_size, rngs)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        batch, seq_len, _ = x.shape
        return x.reshape(batch, seq_len, self.num_heads, self.head_dim)

    def __call__(self, hidden: jax.Array, mask_bias: jax.Array) -> jax.Array:
        """Attend over `hidden` [B, T, H], adding `mask_bias` [B, 1, 1, T] to the scores."""
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))

        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, precision=_PRECISION)
        scores = scores / math.sqrt(self.head_dim) + mask_bias
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value, precision=_PRECISION)

        batch, seq_len = hidden.shape[:2]
        return self.output(context.reshape(batch, seq_len, -1))


class BertLayer(nnx.Module):
    """One post-LN transformer block: attention and feed-forward, each with residual and LayerNorm."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.attention = BertSelfAttention(config, rngs=rngs)
        self.attention_layer_norm = _layer_norm(config, rngs)
        self.intermediate = _linear(config.hidden_size, config.intermediate_size, rngs)
        self.output = _linear(config.intermediate_size, config.hidden_size, rngs)
        self.output_layer_norm = _layer_norm(config, rngs)

    def __call__(self, hidden: jax.Array, mask_bias: jax.Array) -> jax.Array:
        hidden = self.attention_layer_norm(hidden + self.attention(hidden, mask_bias))
        feed_forward = self.output(jax.nn.gelu(self.intermediate(hidden), approximate=False))
        return self.output_layer_norm(hidden + feed_forward)


class BertEncoder(nnx.Module):
    """BERT encoder that returns the last hidden state, without the pooler."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.List(
            [BertLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Encode token ids [B, T] and return the last hidden state [B, T, hidden_size].

        `attention_mask` is 1 for real tokens and 0 for padding. Padding keys get the
        minimum float32 value added to their attention scores, so they receive zero
        weight. The hidden states at padding positions are not meaningful.
        `token_type_ids` defaults to zeros.
        """
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {seq_len} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}."
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)

        hidden = self.embeddings(input_ids, token_type_ids)
        dtype = hidden.dtype
        keep = attention_mask.astype(bool)[:, None, None, :]
        mask_bias = jnp.where(keep, jnp.zeros((), dtype), jnp.finfo(dtype).min)
        for layer in self.layers:
            hidden = layer(hidden, mask_bias)
        return hidden


def _checkpoint_parameter_map(config: BertConfig) -> Iterator[tuple[str, tuple, bool]]:
    """Yield (checkpoint key, parameter path in `BertEncoder`, transpose) for every parameter.

    Keys are those of Hugging Face `BertModel` without the `bert.` prefix. PyTorch
    stores Linear weights as [out, in] and NNX as [in, out], so those are transposed.
    """

    def embedding(key: str, path: tuple) -> Iterator[tuple[str, tuple, bool]]:
        yield f"{key}.weight", (*path, "embedding"), False

    def linear(key: str, path: tuple) -> Iterator[tuple[str, tuple, bool]]:
        yield f"{key}.weight", (*path, "kernel"), True
        yield f"{key}.bias", (*path, "bias"), False

    def layer_norm(key: str, path: tuple) -> Iterator[tuple[str, tuple, bool]]:
        yield f"{key}.weight", (*path, "scale"), False
        yield f"{key}.bias", (*path, "bias"), False

    yield from embedding("embeddings.word_embeddings", ("embeddings", "word_embeddings"))
    yield from embedding("embeddings.position_embeddings", ("embeddings", "position_embeddings"))
    yield from embedding(
        "embeddings.token_type_embeddings", ("embeddings", "token_type_embeddings")
    )
    yield from layer_norm("embeddings.LayerNorm", ("embeddings", "layer_norm"))
    for index in range(config.num_hidden_layers):
        key = f"encoder.layer.{index}"
        path = ("layers", index)
        yield from linear(f"{key}.attention.self.query", (*path, "attention", "query"))
        yield from linear(f"{key}.attention.self.key", (*path, "attention", "key"))
        yield from linear(f"{key}.attention.self.value", (*path, "attention", "value"))
        yield from linear(f"{key}.attention.output.dense", (*path, "attention", "output"))
        yield from layer_norm(f"{key}.attention.output.LayerNorm", (*path, "attention_layer_norm"))
        yield from linear(f"{key}.intermediate.dense", (*path, "intermediate"))
        yield from linear(f"{key}.output.dense", (*path, "output"))
        yield from layer_norm(f"{key}.output.LayerNorm", (*path, "output_layer_norm"))


def _get_variable(module: nnx.Module, path: tuple) -> nnx.Variable:
    node = module
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def _strip_bert_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # BertFor* task models store the encoder under "bert.", and BertModel stores it at the root.
    return {key.removeprefix("bert."): value for key, value in tensors.items()}


def load_bert_encoder(model_dir: str | os.PathLike) -> BertEncoder:
    """Build a `BertEncoder` from `config.json` and `model.safetensors` in `model_dir`.

    Keys may carry a `bert.` prefix. Pooler, pre-training head and position_ids entries
    are ignored, and any other unused key is logged as a warning. Weights are cast to
    float32.

    Raises:
        ValueError: the config is not a supported BERT, or the checkpoint lacks
            parameters or has parameters of the wrong shape. The message names the
            keys and the file.
    """
    # Imported here so that importing this module does not require safetensors.
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    config = BertConfig.from_pretrained(model_dir)
    weights_path = model_dir / "model.safetensors"
    tensors = _strip_bert_prefix(load_file(str(weights_path)))

    # Build without allocating random weights, then fill every parameter from the file.
    model = nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0)))

    missing, bad_shapes, used = [], [], set()
    for key, path, transpose in _checkpoint_parameter_map(config):
        variable = _get_variable(model, path)
        expected_shape = tuple(variable.get_value().shape)
        if transpose:
            expected_shape = expected_shape[::-1]
        if key not in tensors:
            missing.append(key)
            continue
        used.add(key)
        array = tensors[key]
        if array.shape != expected_shape:
            bad_shapes.append(f"{key} has shape {array.shape}, expected {expected_shape}")
            continue
        array = np.asarray(array, dtype=np.float32)
        variable.set_value(jnp.asarray(array.T if transpose else array))

    if missing or bad_shapes:
        problems = []
        if missing:
            problems.append("missing keys: " + ", ".join(missing))
        if bad_shapes:
            problems.append("keys with unexpected shapes: " + "; ".join(bad_shapes))
        raise ValueError(f"Invalid BERT checkpoint {weights_path}: " + ". ".join(problems) + ".")

    unused = sorted(
        key for key in tensors if key not in used and not key.startswith(_IGNORED_KEY_PREFIXES)
    )
    if unused:
        logging.warning(
            "Ignoring %d unused keys in %s: %s", len(unused), weights_path, ", ".join(unused)
        )
    return model
