r"""SemanticHash on MS-COCO 2014 (TFDS `coco/2014`), the multi-label hashing benchmark.

TFDS downloads COCO 2014 (about 20 GB of images and annotations) when online. The
protocol comes from the list files of HashNet, as published in data/coco of
github.com/swuxyj/DeepHash-pytorch. They are train.txt (10,000 training images),
test.txt (5,000 queries) and database.txt (117,218 database images). Each row is a
path and 80 columns of 0/1 labels in COCO category-id order. Line counts, and the SHA-256 of
train.txt and test.txt, are checked before training. An item is relevant to a query
when they share at least one category. Metric: mAP@5000.

  python -m semhash_jax.main --config=configs/coco.py --config.list_dir=/path/to/lists \
      --config.model.pretrained=/path/to/resnet50.safetensors --workdir=DIR

Without the lists, protocol=coco_sampled draws the same sizes by --config.split_seed
from the train and validation images that have at least one object, with labels
from the objects' categories; year=2017 uses TFDS `coco/2017` (sampled protocol
only, as the lists name 2014 files).

Variants after the colon: protocol=coco_lists|coco_sampled, year=2014|2017,
bits=<K>, and runlocal (a few steps at 64 px with a ResNet-18 and no count
checks, for tests on mock data).

Settings: ResNet-50 at 224 px (ImageNet-pretrained weights through
--config.model.pretrained), inception crops, softmax cross-entropy against the
normalised label vector, Adam at 1e-4, batch 64 for 20,000 steps. These are
starting points, not tuned values.

Class names are embedded with bert-base-uncased, the paper's text encoder,
downloaded on first use. With HF_HUB_OFFLINE=1 it is used when cached, else
all-MiniLM-L6-v2.
"""

from semhash_jax import config_defaults


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("protocol", "year", "bits", "runlocal"))
    protocol = variants.get("protocol", "coco_lists")
    year = variants.get("year", "2014")
    if year not in ("2014", "2017"):
        raise ValueError(f"Invalid config variant year={year!r}: use 2014 or 2017.")
    if year == "2017" and protocol == "coco_lists":
        raise ValueError(
            "The COCO list files name 2014 images: use year=2017 with protocol=coco_sampled."
        )
    dataset = f"coco/{year}"
    config = config_defaults.list_benchmark(dataset, protocol, variants, declared=year == "2014")
    config.class_names = "coco"
    config.top_k = 5000
    config.lock()
    return config
