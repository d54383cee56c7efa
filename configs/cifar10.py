r"""SemanticHash on CIFAR-10 (TFDS `cifar10`, downloaded by TFDS when online).

Protocols (docs/datasets.md):
  query1000_per_class  protocol (a): 1,000 queries (100 per class from test),
                       59,000 database (the rest), 5,000 training images (500 per
                       class from the database), mAP@all. The default.
  train_test_split     protocol (b): 10,000 queries (test), 50,000 database and
                       training images (train), mAP@1000.

  python -m semhash_jax.main --config=configs/cifar10.py --workdir=DIR
  python -m semhash_jax.main --config=configs/cifar10.py:protocol=train_test_split,bits=64 \
      --workdir=DIR

Variants after the colon, separated by commas: protocol=<name>, bits=<K>,
zero_shot (hold out "cat" and "truck" from training; their prototypes come from
their names, and their queries are scored apart), and runlocal (a few steps with small batches and no count check, for tests on mock
data). Training settings (ResNet-18 with the 3x3 stem at 32 px, Adam, 100 epochs
of protocol (a)'s 5,000 images or 40 of protocol (b)'s 50,000) are chosen, not tuned.
"""

from semhash_jax import config_defaults


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("protocol", "bits", "zero_shot", "runlocal"))
    config = config_defaults.base_config()
    protocol = variants.get("protocol", "query1000_per_class")
    config_defaults.data_fields(config, "cifar10", protocol)
    config.image_size = 32
    config.num_channels = 3
    # Per-channel mean and standard deviation of the CIFAR-10 training images in [0, 1].
    config.mean = (0.4914, 0.4822, 0.4465)
    config.std = (0.2470, 0.2435, 0.2616)
    # The usual CIFAR augmentation: flips and shifts of up to 4 pixels.
    config.augment_max_shift = 4
    # 50,000 images take 150 MB decoded.
    config.cache_train_images = True

    config.model.backbone = "resnet18"
    config.model.stem = "cifar"
    config.batch_size = 128
    epochs = 100 if protocol == "query1000_per_class" else 40
    num_train = 5_000 if protocol == "query1000_per_class" else 50_000
    config.num_train_steps = epochs * num_train // config.batch_size
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 500
    config.optimizer.weight_decay = 0.05
    config.checkpoint_every_steps = 2000
    config_defaults.set_bits(config, variants)
    if "zero_shot" in variants:
        # Each has a seen class near it in text and in looks (dog, automobile).
        config.unseen_classes = ("cat", "truck")

    if "runlocal" in variants:
        config_defaults.runlocal(config)
    config.lock()
    return config


def sweep(name: str, arg: str | None = None):
    """Return the runs of the sweep `name` ("methods", "loss" or "text")."""
    variants = config_defaults.parse_variants(arg, ("protocol", "bits", "zero_shot", "runlocal"))
    return config_defaults.sweep_grid(name, get_config(arg), variants)
