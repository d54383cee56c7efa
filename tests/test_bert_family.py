"""Tests of the RoBERTa and DistilBERT variants of the BERT encoder.

Tiny random checkpoints with the key names of Hugging Face `RobertaModel`,
`DistilBertModel` and their masked-LM task models are written to tmp_path. The
encoder's hidden states are compared with a float64 numpy forward pass, written
here from the Hugging Face PyTorch code, that reads the raw checkpoint arrays.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.special import erf

from semhash_jax.text.bert import BertConfig, load_bert_encoder, padding_offset_position_ids
from semhash_jax.text.embeddings import TextEncoder

ATOL = 1e-5
VOCAB_SIZE = 30
HIDDEN_SIZE = 8
NUM_LAYERS = 2
NUM_HEADS = 2
INTERMEDIATE_SIZE = 16
ROBERTA_LAYER_NORM_EPS = 1e-5
# DistilBertModel hard-codes this eps, and its config has no layer_norm_eps field.
DISTILBERT_LAYER_NORM_EPS = 1e-12

# Checkpoint key names of one transformer layer, without the model prefix.
LAYER_KEYS = {
    "roberta": {
        "layer": "encoder.layer.{}.",
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    },
    "distilbert": {
        "layer": "transformer.layer.{}.",
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_output": "attention.out_lin",
        "attention_norm": "sa_layer_norm",
        "intermediate": "ffn.lin1",
        "output": "ffn.lin2",
        "output_norm": "output_layer_norm",
    },
}

# Entries outside the encoder that real checkpoints contain: the pooler of
# RobertaModel, the LM head of RobertaForMaskedLM and the vocabulary head of
# DistilBertForMaskedLM.
HEAD_SHAPES = {
    "roberta": {
        "pooler.dense.weight": (HIDDEN_SIZE, HIDDEN_SIZE),
        "pooler.dense.bias": (HIDDEN_SIZE,),
        "lm_head.dense.weight": (HIDDEN_SIZE, HIDDEN_SIZE),
        "lm_head.bias": (VOCAB_SIZE,),
    },
    "distilbert": {
        "vocab_transform.weight": (HIDDEN_SIZE, HIDDEN_SIZE),
        "vocab_transform.bias": (HIDDEN_SIZE,),
        "vocab_layer_norm.weight": (HIDDEN_SIZE,),
        "vocab_layer_norm.bias": (HIDDEN_SIZE,),
        "vocab_projector.bias": (VOCAB_SIZE,),
    },
}


def _family(model_type: str) -> str:
    return "distilbert" if model_type == "distilbert" else "roberta"


def _encoder_shapes(model_type: str, max_position_embeddings: int) -> dict[str, tuple]:
    family = _family(model_type)
    shapes = {
        "embeddings.word_embeddings.weight": (VOCAB_SIZE, HIDDEN_SIZE),
        "embeddings.position_embeddings.weight": (max_position_embeddings, HIDDEN_SIZE),
        "embeddings.LayerNorm.weight": (HIDDEN_SIZE,),
        "embeddings.LayerNorm.bias": (HIDDEN_SIZE,),
    }
    if family == "roberta":
        shapes["embeddings.token_type_embeddings.weight"] = (1, HIDDEN_SIZE)
    keys = LAYER_KEYS[family]
    linear_shapes = {
        "query": (HIDDEN_SIZE, HIDDEN_SIZE),
        "key": (HIDDEN_SIZE, HIDDEN_SIZE),
        "value": (HIDDEN_SIZE, HIDDEN_SIZE),
        "attention_output": (HIDDEN_SIZE, HIDDEN_SIZE),
        "intermediate": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
        "output": (HIDDEN_SIZE, INTERMEDIATE_SIZE),
    }
    for index in range(NUM_LAYERS):
        layer = keys["layer"].format(index)
        for part, (out_features, in_features) in linear_shapes.items():
            shapes[f"{layer}{keys[part]}.weight"] = (out_features, in_features)
            shapes[f"{layer}{keys[part]}.bias"] = (out_features,)
        for part in ("attention_norm", "output_norm"):
            shapes[f"{layer}{keys[part]}.weight"] = (HIDDEN_SIZE,)
            shapes[f"{layer}{keys[part]}.bias"] = (HIDDEN_SIZE,)
    return shapes


def _config_json(model_type: str, max_position_embeddings: int, pad_token_id: int) -> dict:
    if model_type == "distilbert":
        return {
            "model_type": "distilbert",
            "vocab_size": VOCAB_SIZE,
            "dim": HIDDEN_SIZE,
            "n_layers": NUM_LAYERS,
            "n_heads": NUM_HEADS,
            "hidden_dim": INTERMEDIATE_SIZE,
            "max_position_embeddings": max_position_embeddings,
            "activation": "gelu",
            "sinusoidal_pos_embds": False,
            "pad_token_id": pad_token_id,
        }
    return {
        "model_type": model_type,
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "intermediate_size": INTERMEDIATE_SIZE,
        "hidden_act": "gelu",
        "max_position_embeddings": max_position_embeddings,
        "type_vocab_size": 1,
        "layer_norm_eps": ROBERTA_LAYER_NORM_EPS,
        "pad_token_id": pad_token_id,
    }


def _write_checkpoint(
    folder: Path,
    model_type: str,
    *,
    prefix: str,
    max_position_embeddings: int,
    pad_token_id: int,
    drop_key: str | None = None,
    config_overrides: dict | None = None,
) -> dict[str, np.ndarray]:
    """Write config.json and model.safetensors and return the encoder arrays without prefix.

    Encoder keys get `prefix`, as in task model checkpoints when it is "roberta." or
    "distilbert.". Head keys stay at the root, as Hugging Face saves them.
    """
    rng = np.random.default_rng(0)
    encoder = {
        key: rng.normal(size=shape).astype(np.float32)
        for key, shape in _encoder_shapes(model_type, max_position_embeddings).items()
    }
    tensors = {f"{prefix}{key}": value for key, value in encoder.items() if key != drop_key}
    for key, shape in HEAD_SHAPES[_family(model_type)].items():
        tensors[key] = rng.normal(size=shape).astype(np.float32)

    config = _config_json(model_type, max_position_embeddings, pad_token_id)
    config.update(config_overrides or {})
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return encoder


def _roberta_positions_by_loop(input_ids: np.ndarray, pad_token_id: int) -> np.ndarray:
    # RobertaEmbeddings: tokens other than padding count up from pad_token_id + 1, and
    # padding tokens get pad_token_id.
    positions = np.full(input_ids.shape, pad_token_id)
    for row in range(input_ids.shape[0]):
        count = 0
        for column in range(input_ids.shape[1]):
            if input_ids[row, column] != pad_token_id:
                count += 1
                positions[row, column] = pad_token_id + count
    return positions


def _numpy_layer_norm(x, weights, name, eps):
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normalized = (x - mean) / np.sqrt(variance + eps)
    return normalized * weights[f"{name}.weight"] + weights[f"{name}.bias"]


def _numpy_linear(x, weights, name):
    return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


def _numpy_attention(query, key, value, attention_mask):
    """Softmax attention of every query over the non-padding keys, head by head."""
    batch, _, hidden = query.shape
    head_dim = hidden // NUM_HEADS
    context = np.zeros_like(query)
    for row in range(batch):
        keep = attention_mask[row].astype(bool)
        for head in range(NUM_HEADS):
            columns = slice(head * head_dim, (head + 1) * head_dim)
            row_keys = key[row][keep][:, columns]
            row_values = value[row][keep][:, columns]
            scores = query[row][:, columns] @ row_keys.T / math.sqrt(head_dim)
            probabilities = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probabilities /= probabilities.sum(axis=-1, keepdims=True)
            context[row][:, columns] = probabilities @ row_values
    return context


def _numpy_encoder(encoder_arrays, model_type, input_ids, attention_mask, pad_token_id):
    """Return the last hidden state [B, T, HIDDEN_SIZE] in float64."""
    family = _family(model_type)
    weights = {key: value.astype(np.float64) for key, value in encoder_arrays.items()}
    eps = DISTILBERT_LAYER_NORM_EPS if family == "distilbert" else ROBERTA_LAYER_NORM_EPS

    if family == "roberta":
        positions = _roberta_positions_by_loop(input_ids, pad_token_id)
    else:
        positions = np.tile(np.arange(input_ids.shape[1]), (input_ids.shape[0], 1))
    hidden = weights["embeddings.word_embeddings.weight"][input_ids]
    hidden = hidden + weights["embeddings.position_embeddings.weight"][positions]
    if family == "roberta":
        hidden = hidden + weights["embeddings.token_type_embeddings.weight"][0]
    hidden = _numpy_layer_norm(hidden, weights, "embeddings.LayerNorm", eps)

    keys = LAYER_KEYS[family]
    for index in range(NUM_LAYERS):
        layer = keys["layer"].format(index)
        query = _numpy_linear(hidden, weights, layer + keys["query"])
        key = _numpy_linear(hidden, weights, layer + keys["key"])
        value = _numpy_linear(hidden, weights, layer + keys["value"])
        context = _numpy_attention(query, key, value, attention_mask)
        attended = _numpy_linear(context, weights, layer + keys["attention_output"])
        hidden = _numpy_layer_norm(hidden + attended, weights, layer + keys["attention_norm"], eps)

        intermediate = _numpy_linear(hidden, weights, layer + keys["intermediate"])
        intermediate = 0.5 * intermediate * (1.0 + erf(intermediate / math.sqrt(2.0)))
        feed_forward = _numpy_linear(intermediate, weights, layer + keys["output"])
        hidden = _numpy_layer_norm(hidden + feed_forward, weights, layer + keys["output_norm"], eps)
    return hidden


def _padded_batch(pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a [3, 7] batch: one full row, one right-padded row and one left-padded row."""
    token_ids = [
        [0, 5, 6, 7, 8, 9, 2],
        [0, 11, 12, 2, None, None, None],
        [None, None, 0, 13, 14, 15, 2],
    ]
    input_ids = np.array(
        [[pad_token_id if token is None else token for token in row] for row in token_ids],
        np.int32,
    )
    attention_mask = np.array([[token is not None for token in row] for row in token_ids], np.int32)
    return input_ids, attention_mask


CHECKPOINT_LAYOUTS = [
    # (model_type, key prefix, pad_token_id)
    ("roberta", "", 1),
    ("roberta", "roberta.", 3),
    ("xlm-roberta", "roberta.", 1),
    ("camembert", "roberta.", 1),
    ("distilbert", "", 0),
    ("distilbert", "distilbert.", 0),
]


@pytest.mark.parametrize(("model_type", "prefix", "pad_token_id"), CHECKPOINT_LAYOUTS)
def test_encoder_matches_numpy(tmp_path, model_type, prefix, pad_token_id):
    input_ids, attention_mask = _padded_batch(pad_token_id)
    seq_len = input_ids.shape[1]
    # The smallest table that fits seq_len, so the full row uses the last position.
    if model_type == "distilbert":
        max_position_embeddings = seq_len
    else:
        max_position_embeddings = seq_len + pad_token_id + 1
    arrays = _write_checkpoint(
        tmp_path,
        model_type,
        prefix=prefix,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
    )

    hidden = np.asarray(load_bert_encoder(tmp_path)(input_ids, attention_mask))

    expected = _numpy_encoder(arrays, model_type, input_ids, attention_mask, pad_token_id)
    np.testing.assert_allclose(hidden, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("model_type", "prefix", "pad_token_id"), CHECKPOINT_LAYOUTS)
def test_head_keys_load_without_warning(tmp_path, caplog, model_type, prefix, pad_token_id):
    _write_checkpoint(
        tmp_path,
        model_type,
        prefix=prefix,
        max_position_embeddings=16,
        pad_token_id=pad_token_id,
    )

    with caplog.at_level(logging.WARNING, logger="absl"):
        load_bert_encoder(tmp_path)

    assert "unused keys" not in caplog.text


def test_roberta_position_ids_by_hand():
    input_ids = np.array([[0, 5, 6, 2, 1, 1], [1, 1, 0, 7, 2, 1]])

    position_ids = np.asarray(padding_offset_position_ids(input_ids, 1))

    expected = np.array([[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1]])
    np.testing.assert_array_equal(position_ids, expected)


def test_distilbert_ignores_token_type_ids(tmp_path):
    _write_checkpoint(tmp_path, "distilbert", prefix="", max_position_embeddings=16, pad_token_id=0)
    model = load_bert_encoder(tmp_path)
    input_ids, attention_mask = _padded_batch(0)

    with_types = model(input_ids, attention_mask, np.ones_like(input_ids))

    np.testing.assert_array_equal(with_types, model(input_ids, attention_mask))


def test_distilbert_sinusoidal_config_loads(tmp_path):
    # DistilBertModel stores its fixed sinusoidal table in the checkpoint like a
    # learned one, so the loader uses the stored table.
    arrays = _write_checkpoint(
        tmp_path,
        "distilbert",
        prefix="distilbert.",
        max_position_embeddings=16,
        pad_token_id=0,
        config_overrides={"sinusoidal_pos_embds": True},
    )

    model = load_bert_encoder(tmp_path)

    table = np.asarray(model.embeddings.position_embeddings.embedding.get_value())
    np.testing.assert_array_equal(table, arrays["embeddings.position_embeddings.weight"])


def test_distilbert_relu_activation_raises(tmp_path):
    _write_checkpoint(
        tmp_path,
        "distilbert",
        prefix="",
        max_position_embeddings=16,
        pad_token_id=0,
        config_overrides={"activation": "relu"},
    )

    with pytest.raises(ValueError, match="Unsupported activation 'relu'") as info:
        load_bert_encoder(tmp_path)

    assert str(tmp_path / "config.json") in str(info.value)


@pytest.mark.parametrize("model_type", ["gpt2", "mpnet", "deberta-v2"])
def test_unsupported_model_type_raises(tmp_path, model_type):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"model_type": model_type}))

    with pytest.raises(ValueError, match=f"Unsupported model_type '{model_type}'") as info:
        load_bert_encoder(tmp_path)

    message = str(info.value)
    assert str(config_path) in message
    for supported in ("bert", "roberta", "xlm-roberta", "camembert", "distilbert"):
        assert f"'{supported}'" in message


@pytest.mark.parametrize(
    ("model_type", "prefix", "key"),
    [
        ("roberta", "roberta.", "encoder.layer.1.attention.self.key.bias"),
        ("roberta", "", "embeddings.token_type_embeddings.weight"),
        ("distilbert", "distilbert.", "transformer.layer.0.ffn.lin1.weight"),
        ("distilbert", "", "transformer.layer.1.sa_layer_norm.bias"),
    ],
)
def test_missing_key_raises(tmp_path, model_type, prefix, key):
    _write_checkpoint(
        tmp_path,
        model_type,
        prefix=prefix,
        max_position_embeddings=16,
        pad_token_id=1 if _family(model_type) == "roberta" else 0,
        drop_key=key,
    )

    with pytest.raises(ValueError, match="missing keys") as info:
        load_bert_encoder(tmp_path)

    assert key in str(info.value)
    assert str(tmp_path / "model.safetensors") in str(info.value)


def test_roberta_max_sequence_length(tmp_path):
    _write_checkpoint(tmp_path, "roberta", prefix="", max_position_embeddings=20, pad_token_id=1)

    config = BertConfig.from_pretrained(tmp_path)

    assert config.max_sequence_length == 18


def test_roberta_long_input_raises(tmp_path):
    _write_checkpoint(tmp_path, "roberta", prefix="", max_position_embeddings=20, pad_token_id=1)
    model = load_bert_encoder(tmp_path)
    input_ids = np.full((1, 19), 5, np.int32)

    with pytest.raises(ValueError, match="Sequence length 19 exceeds") as info:
        model(input_ids, np.ones_like(input_ids))

    assert "18 (max_position_embeddings 20 minus pad_token_id 1 minus 1" in str(info.value)


def _write_roberta_text_model(folder: Path) -> dict[str, np.ndarray]:
    """Write a RoBERTa checkpoint with 128 usable positions and a word-level tokenizer."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    arrays = _write_checkpoint(
        folder, "roberta", prefix="roberta.", max_position_embeddings=130, pad_token_id=1
    )
    words = ["<s>", "<pad>", "</s>", "<unk>", "a", "photo", "of", "the", "cat", "dog", "."]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    ).save_pretrained(str(folder))
    return arrays


def test_roberta_text_encoder_matches_numpy(tmp_path):
    arrays = _write_roberta_text_model(tmp_path)
    texts = ["a photo of the cat .", "dog", "a photo of a photo of the dog ."]

    encoder = TextEncoder(tmp_path)
    embeddings = encoder.encode(texts)

    tokens = encoder.tokenizer(texts, padding="longest", return_tensors="np")
    input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
    hidden = _numpy_encoder(arrays, "roberta", input_ids, attention_mask, 1)
    mask = attention_mask[..., None]
    pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    assert encoder.max_length == 128
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=ATOL)


def test_roberta_max_length_too_large_raises(tmp_path):
    _write_roberta_text_model(tmp_path)

    with pytest.raises(ValueError, match="Invalid max_length 129") as info:
        TextEncoder(tmp_path, max_length=129)

    assert "expected 2 to 128 (max_position_embeddings 130" in str(info.value)
