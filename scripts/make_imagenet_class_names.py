"""Write the ImageNet (ILSVRC-2012) class-name file from WordNet 3.0.

Reads the 1,000 synset ids in TFDS label order (the `labels.txt` that ships with
tensorflow_datasets' imagenet2012 builder) and their lemmas from WordNet 3.0's
`data.noun` (Debian package wordnet-base, /usr/share/wordnet). An ImageNet id
n<offset> is the noun synset at that byte offset of data.noun.

Two synsets can share a first lemma ("crane" the bird and the machine). Such names
get their first hypernym's first lemma in parentheses, e.g. "crane (wading bird)",
so every class has a distinct first name.

  apt-get install wordnet-base
  .venv/bin/python scripts/make_imagenet_class_names.py
"""

import argparse
import collections
import pathlib

import tensorflow_datasets as tfds

OUTPUT = pathlib.Path(__file__).parent.parent / "semhash_jax/datasets/data/imagenet2012.txt"


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
    parser.add_argument("--output", default=str(OUTPUT))
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
    pathlib.Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Wrote {len(synset_ids)} classes to {args.output}")


if __name__ == "__main__":
    main()
