r"""SemanticHash on ImageNet-100, the 100-class hashing subset of ILSVRC-2012 (HashNet).

Needs the prepared TFDS `imagenet2012` (see configs/imagenet.py and
docs/datasets.md) and the subset's three list files, train.txt (13,000 training
images), test.txt (5,000 validation queries) and database.txt (128,503 database
images), as published in data/imagenet of github.com/swuxyj/DeepHash-pytorch.
Their line counts, and the SHA-256 of train.txt and test.txt, are checked before
training. Metric: mAP@1000.

Class names are embedded with bert-base-uncased, the paper's text encoder,
downloaded on first use. With HF_HUB_OFFLINE=1 it is used when cached, else
all-MiniLM-L6-v2.

  python -m semhash_jax.main --config=configs/imagenet100.py \
      --config.list_dir=/path/to/lists --config.model.pretrained=/path/to/resnet50.safetensors \
      --workdir=DIR

Variants after the colon: bits=<K>, zero_shot (hold out every tenth class of
the list order, 10 classes, from training; see ZERO_SHOT_UNSEEN), and runlocal
(a few steps at 64 px with a ResNet-18 and no list checks, for tests on mock data).
NOTE: ImageNet-pretrained backbones have seen the held-out classes during their
own pretraining on all 1,000 classes; a strict zero-shot study trains the
backbone from scratch or pretrains it without them.

Settings: ResNet-50 at 224 px (ImageNet-pretrained weights through
--config.model.pretrained, as in the field), inception crops, Adam at 1e-4 with
warmup and cosine decay, batch 64 for 20,000 steps (about 100 epochs of the
13,000 training images). These are starting points, not tuned values.
"""

from semhash_jax import config_defaults


# Zero-shot split: classes 9, 19, ..., 99 of the list columns (ascending synset id).
ZERO_SHOT_UNSEEN = (
    "hognose snake",
    "bloodhound",
    "Leonberg",
    "armadillo",
    "caldron",
    "envelope",
    "neck brace",
    "shoji",
    "wallet",
    "earthstar",
)


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("bits", "zero_shot", "runlocal"))
    config = config_defaults.list_benchmark("imagenet2012", "imagenet100_lists", variants)
    if "zero_shot" in variants:
        config.unseen_classes = ZERO_SHOT_UNSEEN
    config.lock()
    return config
