"""BERT-family encoder in Flax NNX that loads Hugging Face safetensors checkpoints.

The network follows the original post-LN BERT: embeddings (word + absolute position
+ token type) with LayerNorm, then blocks of self-attention and a feed-forward layer
with exact (erf) GELU, each followed by a residual add and LayerNorm. It is
inference-only, so dropout is left out, and it returns the last hidden state without
the pooler.

The same network runs the checkpoints of these Hugging Face model types:
- "bert": `BertModel`.
- "roberta", "xlm-roberta", "camembert": `RobertaModel` and its copies. Position ids
  start after pad_token_id and skip padding tokens, see `padding_offset_position_ids`.
- "distilbert": `DistilBertModel`, which has no token type embeddings and other
  checkpoint key names.
`BertArchitecture` lists these differences for each model type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

# Full float32 matmuls. On GPUs XLA may otherwise use TF32 for float32 dots, and its
# 10-bit mantissa is too coarse for the 1e-5 match with the PyTorch reference.
_PRECISION = jax.lax.Precision.HIGHEST

_SUPPORTED_HIDDEN_ACT = "gelu"

# Matches the eps that Hugging Face `DistilBertModel` hard-codes in its LayerNorms.
_DISTILBERT_LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyperparameters of a BERT-family encoder, with Hugging Face `BertConfig` field names.

    `model_type` selects the `BertArchitecture`. DistilBERT configs use other field
    names, which `from_pretrained` maps to these.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int = 0
    model_type: str = "bert"

    def __post_init__(self):
        if self.model_type not in ARCHITECTURES:
            raise ValueError(
                f"Unsupported model_type {self.model_type!r}: expected one of "
                f"{', '.join(ARCHITECTURES)}."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}."
            )
        if self.max_sequence_length < 1:
            raise ValueError(
                f"Invalid {self.model_type} config: max_position_embeddings "
                f"{self.max_position_embeddings} leaves no positions after pad_token_id "
                f"{self.pad_token_id}."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def architecture(self) -> BertArchitecture:
        return ARCHITECTURES[self.model_type]

    @property
    def max_sequence_length(self) -> int:
        """Maximum input length, in tokens, whose position ids fit in the position table.

        With padding-offset positions the last token of a sequence of length T has
        position id pad_token_id + T, so T is at most
        max_position_embeddings - pad_token_id - 1 (512 for RoBERTa's 514 and 1).
        """
        if self.architecture.padding_offset_positions:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    def describe_max_sequence_length(self) -> str:
        """Return max_sequence_length and how it follows from the config, for error messages."""
        if self.architecture.padding_offset_positions:
            return (
                f"{self.max_sequence_length} (max_position_embeddings "
                f"{self.max_position_embeddings} minus pad_token_id {self.pad_token_id} "
                f"minus 1, because {self.model_type} position ids start after pad_token_id)"
            )
        return f"{self.max_sequence_length} (max_position_embeddings)"

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> BertConfig:
        """Read `config.json` in `model_dir` through `transformers.AutoConfig`.

        Raises:
            ValueError: the model_type is not one of `ARCHITECTURES`, or the activation
                or position embedding type is one that `BertEncoder` does not implement.
        """
        config_path = Path(model_dir) / "config.json"
        # Checked before AutoConfig, which rejects model types that transformers does
        # not know with a message that does not list the supported ones.
        with open(config_path, encoding="utf-8") as file:
            model_type = json.load(file).get("model_type")
        if model_type not in ARCHITECTURES:
            raise ValueError(
                f"Unsupported model_type {model_type!r} in {config_path}: supported model "
                f"types are {', '.join(repr(name) for name in ARCHITECTURES)}."
            )

        # Imported on first use because importing transformers takes about a second.
        import transformers

        hf_config = transformers.AutoConfig.from_pretrained(str(model_dir))
        if model_type == "distilbert":
            return cls._from_distilbert_config(hf_config, config_path)

        hidden_act = getattr(hf_config, "hidden_act", _SUPPORTED_HIDDEN_ACT)
        if hidden_act != _SUPPORTED_HIDDEN_ACT:
            raise ValueError(
                f"Unsupported hidden_act {hidden_act!r} in {config_path}: "
                f"only {_SUPPORTED_HIDDEN_ACT!r} (exact erf GELU) is supported."
            )
        position_type = getattr(hf_config, "position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"Unsupported position_embedding_type {position_type!r} in "
                f"{config_path}: only 'absolute' is supported."
            )
        pad_token_id = getattr(hf_config, "pad_token_id", None)
        if pad_token_id is None and ARCHITECTURES[model_type].padding_offset_positions:
            raise ValueError(
                f"Invalid {model_type} config {config_path}: pad_token_id is missing, and "
                "the position ids of this model type are computed from it. Set pad_token_id "
                "to the id of the tokenizer's padding token."
            )
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
            model_type=model_type,
        )

    @classmethod
    def _from_distilbert_config(cls, hf_config, config_path: Path) -> BertConfig:
        """Map the fields of a Hugging Face `DistilBertConfig` to those of `BertConfig`."""
        activation = getattr(hf_config, "activation", _SUPPORTED_HIDDEN_ACT)
        if activation != _SUPPORTED_HIDDEN_ACT:
            raise ValueError(
                f"Unsupported activation {activation!r} in {config_path}: "
                f"only {_SUPPORTED_HIDDEN_ACT!r} (exact erf GELU) is supported."
            )
        # sinusoidal_pos_embds needs no handling: DistilBertModel keeps the fixed
        # sinusoidal table in embeddings.position_embeddings.weight, which is saved in
        # the checkpoint like a learned table.
        pad_token_id = getattr(hf_config, "pad_token_id", None)
        return cls(
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.dim,
            num_hidden_layers=hf_config.n_layers,
            num_attention_heads=hf_config.n_heads,
            intermediate_size=hf_config.hidden_dim,
            max_position_embeddings=hf_config.max_position_embeddings,
            type_vocab_size=0,
            layer_norm_eps=_DISTILBERT_LAYER_NORM_EPS,
            pad_token_id=0 if pad_token_id is None else int(pad_token_id),
            model_type="distilbert",
        )


def padding_offset_position_ids(input_ids: jax.Array, padding_idx: int) -> jax.Array:
    """Return RoBERTa position ids [B, T] for `input_ids` [B, T].

    Non-padding tokens are numbered padding_idx + 1, padding_idx + 2, ... in order, and
    tokens equal to padding_idx get position padding_idx. Padding is detected from the
    token ids, not from the attention mask, as in Hugging Face `RobertaEmbeddings`.
    """
    is_token = (input_ids != padding_idx).astype(jnp.int32)
    return jnp.cumsum(is_token, axis=1) * is_token + padding_idx


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
    """Sum of word, position and token type embeddings, followed by LayerNorm.

    Architectures without token types (DistilBERT) have no token type embeddings and
    ignore `token_type_ids`.
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, rngs=rngs)
        self.position_embeddings = nnx.Embed(
            config.max_position_embeddings, config.hidden_size, rngs=rngs
        )
        if config.architecture.has_token_types:
            self.token_type_embeddings = nnx.Embed(
                config.type_vocab_size, config.hidden_size, rngs=rngs
            )
        else:
            self.token_type_embeddings = None
        self.layer_norm = _layer_norm(config, rngs)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        if self.config.architecture.padding_offset_positions:
            position_ids = padding_offset_position_ids(input_ids, self.config.pad_token_id)
        else:
            seq_len = input_ids.shape[1]
            position_ids = jnp.arange(seq_len)[None, :]
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
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
    """BERT-family encoder that returns the last hidden state, without the pooler."""

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
        `token_type_ids` defaults to zeros. RoBERTa-type models find padding tokens
        from `input_ids` == pad_token_id for their position ids, so padding must use
        that id.
        """
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_sequence_length:
            raise ValueError(
                f"Sequence length {seq_len} exceeds the maximum of this "
                f"{self.config.model_type} model, "
                f"{self.config.describe_max_sequence_length()}."
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


# A checkpoint parameter map yields (checkpoint key without the prefix, parameter path
# in `BertEncoder`, transpose) for every parameter. PyTorch stores Linear weights as
# [out, in] and NNX as [in, out], so those are transposed.
ParameterMap = Iterator[tuple[str, tuple, bool]]


def _embedding_entries(key: str, path: tuple) -> ParameterMap:
    yield f"{key}.weight", (*path, "embedding"), False


def _linear_entries(key: str, path: tuple) -> ParameterMap:
    yield f"{key}.weight", (*path, "kernel"), True
    yield f"{key}.bias", (*path, "bias"), False


def _layer_norm_entries(key: str, path: tuple) -> ParameterMap:
    yield f"{key}.weight", (*path, "scale"), False
    yield f"{key}.bias", (*path, "bias"), False


def _bert_parameter_map(config: BertConfig) -> ParameterMap:
    """Map the keys of Hugging Face `BertModel`, which `RobertaModel` shares."""
    yield from _embedding_entries("embeddings.word_embeddings", ("embeddings", "word_embeddings"))
    yield from _embedding_entries(
        "embeddings.position_embeddings", ("embeddings", "position_embeddings")
    )
    yield from _embedding_entries(
        "embeddings.token_type_embeddings", ("embeddings", "token_type_embeddings")
    )
    yield from _layer_norm_entries("embeddings.LayerNorm", ("embeddings", "layer_norm"))
    for index in range(config.num_hidden_layers):
        key = f"encoder.layer.{index}"
        path = ("layers", index)
        yield from _linear_entries(f"{key}.attention.self.query", (*path, "attention", "query"))
        yield from _linear_entries(f"{key}.attention.self.key", (*path, "attention", "key"))
        yield from _linear_entries(f"{key}.attention.self.value", (*path, "attention", "value"))
        yield from _linear_entries(f"{key}.attention.output.dense", (*path, "attention", "output"))
        yield from _layer_norm_entries(
            f"{key}.attention.output.LayerNorm", (*path, "attention_layer_norm")
        )
        yield from _linear_entries(f"{key}.intermediate.dense", (*path, "intermediate"))
        yield from _linear_entries(f"{key}.output.dense", (*path, "output"))
        yield from _layer_norm_entries(f"{key}.output.LayerNorm", (*path, "output_layer_norm"))


def _distilbert_parameter_map(config: BertConfig) -> ParameterMap:
    """Map the keys of Hugging Face `DistilBertModel`."""
    yield from _embedding_entries("embeddings.word_embeddings", ("embeddings", "word_embeddings"))
    yield from _embedding_entries(
        "embeddings.position_embeddings", ("embeddings", "position_embeddings")
    )
    yield from _layer_norm_entries("embeddings.LayerNorm", ("embeddings", "layer_norm"))
    for index in range(config.num_hidden_layers):
        key = f"transformer.layer.{index}"
        path = ("layers", index)
        yield from _linear_entries(f"{key}.attention.q_lin", (*path, "attention", "query"))
        yield from _linear_entries(f"{key}.attention.k_lin", (*path, "attention", "key"))
        yield from _linear_entries(f"{key}.attention.v_lin", (*path, "attention", "value"))
        yield from _linear_entries(f"{key}.attention.out_lin", (*path, "attention", "output"))
        yield from _layer_norm_entries(f"{key}.sa_layer_norm", (*path, "attention_layer_norm"))
        yield from _linear_entries(f"{key}.ffn.lin1", (*path, "intermediate"))
        yield from _linear_entries(f"{key}.ffn.lin2", (*path, "output"))
        yield from _layer_norm_entries(f"{key}.output_layer_norm", (*path, "output_layer_norm"))


@dataclasses.dataclass(frozen=True)
class BertArchitecture:
    """Differences between the BERT-family models that `BertEncoder` runs."""

    # Prefix of the encoder keys in the checkpoints of task models such as
    # BertForMaskedLM. Base models such as BertModel store the keys without it.
    key_prefix: str
    # Checkpoint entries outside the encoder that are ignored without a warning: the
    # pooler, pre-training heads and the position_ids buffer.
    ignored_key_prefixes: tuple[str, ...]
    # True for RoBERTa position ids (see `padding_offset_position_ids`), False for
    # 0, 1, ..., T - 1.
    padding_offset_positions: bool
    has_token_types: bool
    parameter_map: Callable[[BertConfig], ParameterMap]


_ROBERTA_ARCHITECTURE = BertArchitecture(
    key_prefix="roberta.",
    ignored_key_prefixes=("pooler.", "lm_head.", "embeddings.position_ids"),
    padding_offset_positions=True,
    has_token_types=True,
    parameter_map=_bert_parameter_map,
)

# Supported Hugging Face model types. XLMRobertaModel and CamembertModel are copies of
# RobertaModel, and their task models also use the "roberta." prefix.
ARCHITECTURES: dict[str, BertArchitecture] = {
    "bert": BertArchitecture(
        key_prefix="bert.",
        ignored_key_prefixes=("pooler.", "cls.", "embeddings.position_ids"),
        padding_offset_positions=False,
        has_token_types=True,
        parameter_map=_bert_parameter_map,
    ),
    "roberta": _ROBERTA_ARCHITECTURE,
    "xlm-roberta": _ROBERTA_ARCHITECTURE,
    "camembert": _ROBERTA_ARCHITECTURE,
    "distilbert": BertArchitecture(
        key_prefix="distilbert.",
        ignored_key_prefixes=(
            "vocab_transform.",
            "vocab_layer_norm.",
            "vocab_projector.",
            "embeddings.position_ids",
        ),
        padding_offset_positions=False,
        has_token_types=False,
        parameter_map=_distilbert_parameter_map,
    ),
}


def _get_variable(module: nnx.Module, path: tuple) -> nnx.Variable:
    node = module
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def load_bert_encoder(model_dir: str | os.PathLike) -> BertEncoder:
    """Build a `BertEncoder` from `config.json` and `model.safetensors` in `model_dir`.

    Keys may carry the task model prefix of the model type, such as `bert.` or
    `roberta.`. Pooler, pre-training head and position_ids entries are ignored, and any
    other unused key is logged as a warning. Weights are cast to float32.

    Raises:
        ValueError: the config is not of a supported model type, or the checkpoint
            lacks parameters or has parameters of the wrong shape. The message names
            the keys, without the prefix, and the file.
    """
    # Imported here so that importing this module does not require safetensors.
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    config = BertConfig.from_pretrained(model_dir)
    weights_path = model_dir / "model.safetensors"
    architecture = config.architecture
    tensors = {
        key.removeprefix(architecture.key_prefix): value
        for key, value in load_file(str(weights_path)).items()
    }

    # Build without allocating random weights, then fill every parameter from the file.
    model = nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0)))

    missing, bad_shapes, used = [], [], set()
    for key, path, transpose in architecture.parameter_map(config):
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
        raise ValueError(
            f"Invalid {config.model_type} checkpoint {weights_path}: " + ". ".join(problems) + "."
        )

    unused = sorted(
        key
        for key in tensors
        if key not in used and not key.startswith(architecture.ignored_key_prefixes)
    )
    if unused:
        logging.warning(
            "Ignoring %d unused keys in %s: %s", len(unused), weights_path, ", ".join(unused)
        )
    return model
