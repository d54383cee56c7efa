r"""SemanticHash on ImageNet-100, the 100-class hashing subset of ILSVRC-2012 (HashNet).

Needs the prepared TFDS `imagenet2012` (see configs/imagenet.py and
docs/datasets.md) and the subset's three list files, train.txt (13,000 training
images), test.txt (5,000 validation queries) and database.txt (128,503 database
images), as published in data/imagenet of github.com/swuxyj/DeepHash-pytorch.
Their line counts, and the SHA-256 of train.txt and test.txt, are checked before
training. Metric: mAP@1000. Class names are embedded with bert-base-uncased when it
is in the local Hugging Face cache, else with the default all-MiniLM-L6-v2.

  python -m semhash_jax.main --config=configs/imagenet100.py \
      --config.list_dir=/path/to/lists --config.model.pretrained=/path/to/resnet50.safetensors \
      --workdir=DIR

Variants after the colon: bits=<K>, and runlocal (a few steps at 64 px with a
ResNet-18 and no list checks, for tests on mock data).

Settings: ResNet-50 at 224 px (ImageNet-pretrained weights through
--config.model.pretrained, as in the field), inception crops, Adam at 1e-4 with
warmup and cosine decay, batch 64 for 20,000 steps (about 100 epochs of the
13,000 training images). These are starting points, not tuned values.
"""

from semhash_jax import config_defaults


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("bits", "runlocal"))
    config = config_defaults.base_config()
    config_defaults.data_fields(config, "imagenet2012", "imagenet100_lists")
    config_defaults.photo_preprocessing(config, image_size=224)
    config.text.model = config_defaults.bert_base_if_cached()

    config.model.backbone = "resnet50"
    config.model.stem = "imagenet"
    config.batch_size = 64
    config.num_train_steps = 20_000
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 500
    config.log_every_steps = 200
    config.checkpoint_every_steps = 2000
    config.eval_batch_size = 256
    config_defaults.set_bits(config, variants)

    if "runlocal" in variants:
        config_defaults.runlocal(config)
        config.image_size = 64
        config.model.backbone = "resnet18"
        config.batch_size = 16
        config.eval_batch_size = 32
    config.lock()
    return config
