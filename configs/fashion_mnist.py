r"""SemanticHash on Fashion-MNIST: the embedded default configuration.

Trains a small CNN with 32-bit codes on the classic hashing protocol (1,000
queries, 69,000 database images, 5,000 training images) and reports mAP@all.

  python -m semhash_jax.main --config=configs/fashion_mnist.py --workdir=DIR

Variants, given after a colon and separated by commas:
  protocol=train_test_split  train and database: the 60,000 training images,
                             queries: the 10,000 test images, mAP@1000.
  zero_shot                  hold out "shirt" and "ankle boot" from training
                             (no image and no name of them is trained on);
                             their prototypes come from their names, and
                             unseen-class queries are scored apart.
  bits=<K>                   code length (default 32).
  schedule=deephash          the training budget of DeepHash-pytorch's runs on
                             this protocol: Adam at 1e-3, batch 128, 20 epochs of
                             the 5,000 training images (781 steps), no
                             augmentation and no weight decay, and no
                             quantization term. The studies in
                             docs/results.md use it.
  runlocal                   a few steps with small batches and no check of
                             the split sizes, for tests.
e.g. --config=configs/fashion_mnist.py:protocol=train_test_split,zero_shot
Any field can be overridden on the command line: --config.bits=64.

Sweeps (python -m semhash_jax.sweep --sweep=NAME): "methods" (SemanticHash and
the baselines at 16/32/64 bits, 3 seeds), "loss" (SemanticHash's loss and
network options one at a time) and "text" (its text options one at a time);
see config_defaults.sweep_grid.
"""

from semhash_jax import config_defaults


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(
        arg, ("protocol", "bits", "schedule", "zero_shot", "runlocal")
    )
    config = config_defaults.base_config()
    config_defaults.data_fields(
        config, "fashion_mnist", variants.get("protocol", "query1000_per_class")
    )
    # Folder with the four IDX files, read once when the dataset is prepared.
    # Debian's dataset-fashion-mnist package puts them here.
    config.source_dir = "/usr/share/datasets/fashion-mnist"
    # Image size in pixels (Fashion-MNIST images are 28x28) and channel count.
    config.image_size = 28
    config.num_channels = 1
    # Per-channel mean and standard deviation of the training images in [0, 1].
    config.mean = (0.2860,)
    config.std = (0.3530,)

    config_defaults.set_bits(config, variants)
    schedule = variants.get("schedule")
    if schedule == "deephash":
        config.batch_size = 128
        config.num_train_steps = 20 * 5_000 // 128
        config.optimizer.name = "adam"
        config.optimizer.learning_rate = 1e-3
        config.optimizer.warmup_steps = 0
        config.optimizer.weight_decay = 0.0
        config.augment_flip = False
        config.augment_max_shift = 0
        config.checkpoint_every_steps = 400
        # At this budget no quantization term beat 0.1 over 3 seeds (docs/method.md).
        config.loss.quantization_weight = 0.0
    elif schedule is not None:
        raise ValueError(f"Unknown schedule={schedule!r} in {arg!r}. Known: deephash.")

    if "zero_shot" in variants:
        # Each of the two has seen classes close to it in text and in looks: shirts
        # resemble T-shirts, pullovers and coats, and ankle boots resemble sneakers
        # and sandals. A text space can then place their prototypes usefully.
        config.unseen_classes = ("Shirt", "Ankle boot")
    if "runlocal" in variants:
        config_defaults.runlocal(config)
    config.lock()
    return config


def sweep(name: str, arg: str | None = None):
    """Runs of the sweep `name` for `python -m semhash_jax.sweep`."""
    variants = config_defaults.parse_variants(
        arg, ("protocol", "bits", "schedule", "zero_shot", "runlocal")
    )
    return config_defaults.sweep_grid(name, get_config(arg), variants)
