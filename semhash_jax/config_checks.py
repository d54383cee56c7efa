"""Checks of a config and workdir that run before any work starts.

Each failure raises one error that names the offending value and the fix, so a
wrong setting is found in seconds rather than after the dataset is prepared or
the model is compiled.
"""

import numbers
import os
import pathlib
import tempfile

from semhash_jax import losses, preprocessing, sharding
from semhash_jax.datasets import class_names, protocols, registry
from semhash_jax.models import backbones, hash_nets, pretrained
from semhash_jax.text import embeddings, semantic_space

OPTIMIZERS = ("adam", "sgd")


def _check_positive_int(value, name: str):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"config.{name}={value!r} is invalid: it must be a positive integer. "
            f"Set --config.{name}=<integer > 0>."
        )


def _check_choice(value, name: str, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown config.{name}={value!r}. Set --config.{name} to one of: "
            f"{', '.join(sorted(choices))}."
        )


def check_workdir(workdir: str | os.PathLike):
    """Create the workdir if needed and raise when it cannot be written."""
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check"):
            pass
    except OSError as e:
        raise OSError(
            f"The workdir {str(path)!r} cannot be created or written: {e.strerror} "
            f"({e.filename}). Pass a --workdir in a folder that you can write to."
        ) from e


def check_config(config, device_count: int):
    """Raise on invalid values in `config` for a run on `device_count` devices."""
    _check_positive_int(config.bits, "bits")
    _check_positive_int(config.batch_size, "batch_size")
    _check_positive_int(config.eval_batch_size, "eval_batch_size")
    _check_positive_int(config.num_train_steps, "num_train_steps")
    _check_positive_int(config.log_every_steps, "log_every_steps")
    _check_positive_int(config.checkpoint_every_steps, "checkpoint_every_steps")
    _check_positive_int(config.max_checkpoints_to_keep, "max_checkpoints_to_keep")
    _check_positive_int(config.image_size, "image_size")
    _check_positive_int(config.num_channels, "num_channels")
    if config.top_k is not None:
        _check_positive_int(config.top_k, "top_k")
    radius = config.get("radius", 2)
    if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= config.bits:
        raise ValueError(
            f"config.radius must be an integer in [0, bits = {config.bits}], got {radius!r}"
        )
    for name in ("batch_size", "eval_batch_size"):
        if config[name] % device_count:
            raise ValueError(
                f"config.{name}={config[name]} does not divide across "
                f"{device_count} devices. Set --config.{name} to a multiple of "
                f"{device_count}."
            )
    for name in ("mean", "std"):
        if len(config[name]) != config.num_channels:
            raise ValueError(
                f"config.{name} has {len(config[name])} values but "
                f"config.num_channels={config.num_channels}. Give one per channel."
            )
    if any(value <= 0 for value in config.std):
        raise ValueError(f"config.std={config.std} must be positive.")
    _check_choice(config.model.backbone, "model.backbone", backbones.BACKBONES)
    _check_choice(config.model.stem, "model.stem", ("cifar", "imagenet"))
    _check_choice(config.model.get("dtype", "float32"), "model.dtype", backbones.COMPUTE_DTYPES)
    sharding.mesh_shape(config.get("mesh", sharding.DEFAULT_MESH), device_count)
    _check_positive_int(config.get("fsdp_min_size", 1), "fsdp_min_size")
    for width in config.model.semantic_hidden:
        _check_positive_int(width, "model.semantic_hidden")
    _check_method(config)
    _check_choice(config.loss.alignment, "loss.alignment", losses.ALIGNMENT_LOSSES)
    _check_choice(config.loss.similarity, "loss.similarity", losses.SIMILARITIES)
    _check_choice(config.optimizer.name, "optimizer.name", OPTIMIZERS)
    _check_choice(config.text.pooling, "text.pooling", embeddings.POOLING_MODES)
    _check_choice(config.protocol, "protocol", protocols.PROTOCOLS)
    _check_choice(config.preprocess, "preprocess", preprocessing.PREPROCESS_MODES)
    _check_choice(config.text.lemmas, "text.lemmas", ("first", "average"))
    if not 0 < config.crop_fraction <= 1:
        raise ValueError(
            f"config.crop_fraction={config.crop_fraction!r} must be in (0, 1], e.g. 0.875."
        )
    _check_text(config.text)
    if isinstance(config.unseen_classes, str) or not all(
        isinstance(name, str) for name in config.unseen_classes
    ):
        raise ValueError(
            f"config.unseen_classes={config.unseen_classes!r} must be a tuple of class "
            'names, e.g. --config.unseen_classes=\'("shirt", "ankle boot")\'.'
        )
    warmup = config.optimizer.warmup_steps
    if (
        isinstance(warmup, bool)
        or not isinstance(warmup, int)
        or not (0 <= warmup < config.num_train_steps)
    ):
        raise ValueError(
            f"config.optimizer.warmup_steps={warmup!r} must be an integer in [0, "
            f"num_train_steps = {config.num_train_steps}), so that the cosine decay has "
            "steps left. Lower it or raise --config.num_train_steps."
        )
    if config.optimizer.learning_rate <= 0:
        raise ValueError(
            f"config.optimizer.learning_rate={config.optimizer.learning_rate} must be positive."
        )


def _check_method(config):
    method = config.get("method", "semantic_hash")
    _check_choice(method, "method", hash_nets.METHODS)
    if method != "semantic_hash" and config.unseen_classes:
        raise ValueError(
            f"config.method={method!r} has class codes only for the classes it trains on, "
            f"so it cannot score config.unseen_classes={tuple(config.unseen_classes)!r}. "
            "Use --config.method=semantic_hash for zero-shot runs, or set "
            "--config.unseen_classes='()'."
        )
    for name in (
        "csq.quantization_weight",
        "orthohash.quantization_weight",
        "classification.quantization_weight",
        "loss.quantization_weight",
    ):
        group, field = name.split(".")
        if group in config and config[group][field] < 0:
            raise ValueError(f"config.{name}={config[group][field]!r} must be >= 0.")
    if "orthohash" in config:
        if config.orthohash.scale <= 0:
            raise ValueError(
                f"config.orthohash.scale={config.orthohash.scale!r} must be positive, e.g. 8."
            )
        if not 0 <= config.orthohash.margin < 2:
            raise ValueError(
                f"config.orthohash.margin={config.orthohash.margin!r} must be in [0, 2) "
                "(a cosine margin), e.g. 0.2."
            )


def _check_text(text):
    _check_choice(text.space, "text.space", semantic_space.SPACES)
    templates = text.templates
    if isinstance(templates, str) or not templates:
        raise ValueError(
            f"config.text.templates={templates!r} must be a non-empty tuple of templates, "
            "e.g. --config.text.templates='(\"a photo of a {}.\",)'."
        )
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"config.text.templates contains {template!r}, which must contain exactly "
                "one '{}' where the class name goes."
            )
    _check_positive_int(text.random_dim, "text.random_dim")
    if text.space == "word_vectors" and not text.word_vectors:
        raise ValueError(
            "config.text.space='word_vectors' needs --config.text.word_vectors=<file>: a "
            "GloVe, word2vec (text) or fastText .vec file."
        )


def check_inputs(config):
    """Raise when the dataset source or the text model cannot be found."""
    registry.check_source(config.dataset, config.data_dir, config.source_dir)
    if config.class_names:
        class_names.load(config.class_names)
    pretrained_path = config.model.get("pretrained", "")
    if pretrained_path:
        if not pretrained.supported(config.model.backbone):
            raise ValueError(
                f"config.model.pretrained is set but config.model.backbone="
                f"{config.model.backbone!r} cannot load pretrained weights. Use resnet18 or "
                "resnet50, or set --config.model.pretrained=''."
            )
        if not os.path.isfile(pretrained_path):
            raise FileNotFoundError(
                f"config.model.pretrained={pretrained_path!r} is not a file. Give a local "
                ".safetensors file with torchvision or timm ResNet weights, or '' to train "
                "from scratch."
            )
    if config.text.space == "bert":
        try:
            embeddings.resolve_model_dir(config.text.model)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"Invalid --config.text.model: {e}") from e
    if config.text.space == "word_vectors" and not os.path.isfile(config.text.word_vectors):
        raise FileNotFoundError(
            f"config.text.word_vectors={config.text.word_vectors!r} is not a file. Give a "
            "GloVe, word2vec (text) or fastText .vec file, optionally gzipped."
        )
