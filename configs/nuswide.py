r"""SemanticHash on NUS-WIDE, the multi-label web-image benchmark (21 or 81 concepts).

NUS-WIDE has no TFDS builder and no download: get its 269,648 Flickr images from
the authors (https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html)
into <root>/images/, and pass --config.source_dir=<root>. The image_folder builder
prepares them once (the whole folder is one pseudo-class; labels come from the
lists), skipping and counting unreadable files. The protocol comes from list files
in --config.list_dir, rows "images/<file> c_1 ... c_C":
- concepts=21 (default): the lists of HashNet published in data/nuswide_21 of
  github.com/swuxyj/DeepHash-pytorch, train.txt (10,500), test.txt (2,100 queries)
  and database.txt (193,734); line counts and the SHA-256 of train.txt and test.txt
  are checked. Metric: mAP@5000.
- concepts=81: lists of the same format with 81 columns, made by the user; their
  sizes are not checked. Metric: mAP@5000.
Rows without any concept are dropped and counted in the log. An item is relevant
to a query when they share at least one concept.

  python -m semhash_jax.main --config=configs/nuswide.py --config.source_dir=/data/nus-wide \
      --config.list_dir=/path/to/lists --config.model.pretrained=/path/to/resnet50.safetensors \
      --workdir=DIR

Variants after the colon: concepts=21|81, bits=<K>, runlocal (a few steps at 64 px
with a ResNet-18 and no list checks, for tests).

Settings: as configs/coco.py (ResNet-50 at 224 px fine-tuned with Adam at 1e-4,
batch 64, 20,000 steps, bert-base-uncased class embeddings); starting points, not
tuned values.
"""

from semhash_jax import config_defaults


def get_config(arg: str | None = None):
    variants = config_defaults.parse_variants(arg, ("concepts", "bits", "runlocal"))
    concepts = variants.get("concepts", "21")
    if concepts not in ("21", "81"):
        raise ValueError(f"Invalid config variant concepts={concepts!r}: use 21 or 81.")
    config = config_defaults.list_benchmark(
        "image_folder", f"nuswide{concepts}_lists", variants, declared=concepts == "21"
    )
    config.class_names = f"nuswide{concepts}"
    config.top_k = 5000
    if concepts == "81":
        config.check_counts = False
    config.lock()
    return config
