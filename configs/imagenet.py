r"""SemanticHash on full ImageNet (ILSVRC-2012, TFDS `imagenet2012`).

TFDS cannot download ImageNet: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in the manual dir (~/tensorflow_datasets/downloads/manual,
or --config.source_dir) and the first run prepares the dataset (docs/datasets.md).

Protocol train_validation_split: 50,000 queries (validation), 1,281,167 database
and training images (train), mAP@1000, 1,000 classes named by their WordNet lemmas.

  python -m semhash_jax.main --config=configs/imagenet.py --workdir=DIR
  python -m semhash_jax.main --config=configs/imagenet.py:bits=64 --workdir=DIR

Variants after the colon: bits=<K>, and runlocal (a few steps at 64 px with small
batches and no count check, for tests on mock data).

Training from scratch: ResNet-50 at 224 px with the ImageNet stem, inception crops,
SGD with momentum, batch 1024, 90 epochs, 5 warmup epochs, learning rate 0.4
(0.1 per 256 images). These follow the usual ResNet-50 ImageNet recipe and are not
tuned for hashing.

Class names are embedded with bert-base-uncased, the paper's text encoder,
downloaded on first use. With HF_HUB_OFFLINE=1 it is used when cached, else
all-MiniLM-L6-v2.
"""

from semhash_jax import config_defaults

TRAIN_IMAGES = 1_281_167


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("bits", "runlocal"))
    config = config_defaults.base_config()
    config_defaults.data_fields(config, "imagenet2012", "train_validation_split")
    config_defaults.photo_preprocessing(config, image_size=224)
    config.data_workers = 8
    config.text.model = config_defaults.paper_text_model()
    config.text.templates = ("a photo of a {}.",)

    config.model.backbone = "resnet50"
    config.model.stem = "imagenet"
    config.batch_size = 1024
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.num_train_steps = 90 * steps_per_epoch
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.4
    config.optimizer.warmup_steps = 5 * steps_per_epoch
    config.optimizer.weight_decay = 1e-4
    config.log_every_steps = 500
    config.checkpoint_every_steps = 5000
    config.eval_batch_size = 1024
    config_defaults.set_bits(config, variants)

    if "runlocal" in variants:
        config_defaults.runlocal(config)
        config_defaults.small_photo_runlocal(config)
        config.data_workers = 0
    config.lock()
    return config
