r"""SemanticHash on your own images: one folder per class, named after the class.

  python -m semhash_jax.main --config=configs/image_folder.py \
      --config.source_dir=/path/to/images --workdir=DIR

The folder contains <class>/<image> files, or train/, validation/ and test/ folders
that each contain <class>/<image> files (docs/datasets.md). Class names are the folder
names ("_" reads as a space), so pick names a person would use: the text encoder
embeds them. Unreadable images are skipped and counted in the log when the folder
is prepared.

Variants after the colon, separated by commas:
  protocol=holdout_per_class   the default: 10% of each class (at least one
                               image) as queries, the rest as database and
                               training set.
  protocol=train_test_split    queries: test/, database and training set: train/.
  protocol=train_validation_split  the same with validation/.
  bits=<K>                     code length.
  runlocal                     a few steps at 32 px with a small CNN, for tests.

Defaults: ResNet-50 at 224 px with inception crops, Adam at 1e-4 for 5,000 steps
of batch 64, mAP@all. Set --config.model.pretrained to a torchvision or timm
ResNet-50 safetensors file to fine-tune from ImageNet weights. These are starting
points, not tuned values.
"""

from semhash_jax import config_defaults


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("protocol", "bits", "runlocal"))
    config = config_defaults.base_config()
    protocol = variants.get("protocol", "holdout_per_class")
    config_defaults.data_fields(config, "image_folder", protocol, declared=False)
    config.check_counts = False
    config_defaults.photo_preprocessing(config, image_size=224)

    config.model.backbone = "resnet50"
    config.model.stem = "imagenet"
    config.batch_size = 64
    config.num_train_steps = 5000
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 200
    config.eval_batch_size = 256
    config_defaults.set_bits(config, variants)

    if "runlocal" in variants:
        config_defaults.runlocal(config)
        config.image_size = 32
        config.model.backbone = "small_cnn"
        config.eval_batch_size = 32
    config.lock()
    return config
