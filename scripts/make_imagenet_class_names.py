"""Write the ImageNet (ILSVRC-2012) class-name file from WordNet 3.0.

Reads the 1,000 synset ids in TFDS label order (the `labels.txt` that ships with
tensorflow_datasets' imagenet2012 builder) and their lemmas from WordNet 3.0's
`data.noun` (Debian package wordnet-base, /usr/share/wordnet). An ImageNet id
n<offset> is the noun synset at that byte offset of data.noun.

Two synsets can share a first lemma ("crane" the bird and the machine). Such names
get their first hypernym's first lemma in parentheses, e.g. "crane (wading bird)",
so every class has a distinct first name.

It also writes the ImageNet-100 subset's names (imagenet100.txt).

  apt-get install wordnet-base
  .venv/bin/python scripts/make_imagenet_class_names.py
"""

import argparse
import collections
import pathlib

import tensorflow_datasets as tfds

DATA_DIR = pathlib.Path(__file__).parent.parent / "semhash_jax/datasets/data"

# The ImageNet-100 hashing subset (HashNet, Cao et al., ICCV 2017), in the column order
# of its list files, which is ascending synset id.
IMAGENET100_SYNSETS = (
    "n01514668",
    "n01537544",
    "n01560419",
    "n01629819",
    "n01632458",
    "n01664065",
    "n01685808",
    "n01687978",
    "n01698640",
    "n01729322",
    "n01774750",
    "n01797886",
    "n01819313",
    "n01828970",
    "n01944390",
    "n01986214",
    "n02017213",
    "n02018207",
    "n02077923",
    "n02088466",
    "n02093256",
    "n02094114",
    "n02096177",
    "n02096294",
    "n02097209",
    "n02098105",
    "n02102177",
    "n02105162",
    "n02106550",
    "n02111129",
    "n02111277",
    "n02113023",
    "n02128385",
    "n02256656",
    "n02281787",
    "n02346627",
    "n02391049",
    "n02408429",
    "n02415577",
    "n02454379",
    "n02488291",
    "n02526121",
    "n02655020",
    "n02834397",
    "n02840245",
    "n02841315",
    "n02865351",
    "n02871525",
    "n02895154",
    "n02939185",
    "n02948072",
    "n02965783",
    "n02992211",
    "n03018349",
    "n03045698",
    "n03047690",
    "n03196217",
    "n03223299",
    "n03272562",
    "n03291819",
    "n03345487",
    "n03445924",
    "n03483316",
    "n03584829",
    "n03680355",
    "n03690938",
    "n03733131",
    "n03743016",
    "n03803284",
    "n03814639",
    "n03838899",
    "n03857828",
    "n03891332",
    "n03895866",
    "n03899768",
    "n03902125",
    "n03944341",
    "n04026417",
    "n04153751",
    "n04201297",
    "n04238763",
    "n04254120",
    "n04344873",
    "n04350905",
    "n04366367",
    "n04404412",
    "n04417672",
    "n04435653",
    "n04486054",
    "n04548362",
    "n04560804",
    "n04579432",
    "n04596742",
    "n07583066",
    "n07584110",
    "n07753113",
    "n07754684",
    "n07836838",
    "n12057211",
    "n13044778",
)


def read_synset(data_noun: bytes, offset: int) -> tuple[list[str], list[int]]:
    """Return (lemmas, hypernym offsets) of the noun synset at `offset`."""
    end = data_noun.index(b"\n", offset)
    fields = data_noun[offset:end].decode("utf-8").split(" | ")[0].split()
    if int(fields[0]) != offset:
        raise ValueError(f"data.noun has no synset at offset {offset}")
    word_count = int(fields[3], 16)
    lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(word_count)]
    position = 4 + 2 * word_count
    pointer_count = int(fields[position])
    hypernyms = []
    for i in range(pointer_count):
        symbol, target, part_of_speech = fields[position + 1 + 4 * i : position + 4 + 4 * i]
        if symbol in ("@", "@i") and part_of_speech == "n":
            hypernyms.append(int(target))
    return lemmas, hypernyms


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet_dir", default="/usr/share/wordnet")
    parser.add_argument("--output_dir", default=str(DATA_DIR))
    args = parser.parse_args()

    labels_path = pathlib.Path(tfds.__file__).parent / "datasets/imagenet2012/labels.txt"
    synset_ids = labels_path.read_text().split()
    if len(synset_ids) != 1000:
        raise SystemExit(f"{labels_path} lists {len(synset_ids)} synsets, expected 1000")
    data_noun = (pathlib.Path(args.wordnet_dir) / "data.noun").read_bytes()

    synsets = [read_synset(data_noun, int(synset_id[1:])) for synset_id in synset_ids]
    first_counts = collections.Counter(lemmas[0] for lemmas, _ in synsets)
    lines = [
        "# ImageNet (ILSVRC-2012) class names, one class per line in TFDS label order:",
        "# WordNet synset id, then the synset's lemmas (WordNet 3.0, Princeton University,",
        "# https://wordnet.princeton.edu). A first lemma shared by two classes gets its",
        "# hypernym's first lemma in parentheses. Written by scripts/make_imagenet_class_names.py.",
    ]
    for synset_id, (lemmas, hypernyms) in zip(synset_ids, synsets):
        if first_counts[lemmas[0]] > 1:
            parent = read_synset(data_noun, hypernyms[0])[0][0]
            lemmas = [f"{lemmas[0]} ({parent})"] + lemmas[1:]
        lines.append("\t".join([synset_id] + lemmas))
    firsts = [line.split("\t")[1] for line in lines[4:]]
    duplicates = sorted(name for name, count in collections.Counter(firsts).items() if count > 1)
    if duplicates:
        raise SystemExit(f"first names still shared by several classes: {duplicates}")
    output_dir = pathlib.Path(args.output_dir)
    (output_dir / "imagenet2012.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Wrote {len(synset_ids)} classes to {output_dir / 'imagenet2012.txt'}")

    by_synset = {line.split("\t")[0]: line for line in lines[4:]}
    subset = [
        "# The 100 classes of the ImageNet-100 hashing subset (HashNet, Cao et al., ICCV 2017),",
        "# one per line in the column order of its list files (ascending synset id), with the",
        "# names of imagenet2012.txt. Written by scripts/make_imagenet_class_names.py.",
    ] + [by_synset[synset_id] for synset_id in IMAGENET100_SYNSETS]
    (output_dir / "imagenet100.txt").write_text("\n".join(subset) + "\n", encoding="utf-8")
    print(f"Wrote {len(IMAGENET100_SYNSETS)} classes to {output_dir / 'imagenet100.txt'}")


if __name__ == "__main__":
    main()
