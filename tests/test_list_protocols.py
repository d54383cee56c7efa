"""List-file protocols (ImageNet-100) on TFDS mock data with list files written here.

The mock imagenet2012 records have random file names and labels among the 1,000
synsets. The test lists the records whose synset belongs to ImageNet-100, in the
published format: a path, then 100 one-hot columns in the subset's order.
"""

import dataclasses
import math

import tensorflow_datasets as tfds

import numpy as np
from PIL import Image
import pytest

from configs import coco, imagenet100, nuswide
from semhash_jax import run_setup, train
from semhash_jax.datasets import class_names, list_files, protocols, registry
from tests import helpers

NUM_EXAMPLES = 400


def subset_records(data_dir):
    """Return {split: [(file name, column, index in split), ...]} of mock ImageNet-100 records."""
    builder = registry.get_builder("imagenet2012", str(data_dir))
    synsets = builder.info.features["label"].names
    columns = {key: column for column, key in enumerate(class_names.load("imagenet100").keys)}
    records = {}
    for split in ("train", "validation"):
        labels = protocols.read_labels(builder, split)
        names = protocols.read_field(builder, split, "file_name")
        names = [protocols.as_text(name) for name in names]
        # Mock file names may contain spaces, which list rows cannot.
        records[split] = [
            (name, columns[synsets[label]], index)
            for index, (name, label) in enumerate(zip(names, labels))
            if synsets[label] in columns and name.split() == [name]
        ]
    return records


def write_list(path, rows, prefix="images/"):
    lines = []
    for name, column, _ in rows:
        one_hot = ["0"] * 100
        one_hot[column] = "1"
        lines.append(" ".join([prefix + name] + one_hot))
    path.write_text("\n".join(lines) + "\n")


def write_lists(list_dir, records):
    list_dir.mkdir(exist_ok=True)
    write_list(list_dir / "train.txt", records["train"][::2])
    write_list(list_dir / "test.txt", records["validation"])
    write_list(list_dir / "database.txt", records["train"])


def make_config(tmp_path, **overrides):
    overrides.setdefault("list_dir", str(tmp_path / "lists"))
    return helpers.two_step_config(
        imagenet100.get_config("runlocal,bits=16"), tmp_path / "tfds", **overrides
    )


def test_imagenet100_lists_train_and_evaluate(tmp_path, monkeypatch):
    with helpers.mock_tfds(monkeypatch, NUM_EXAMPLES):
        records = subset_records(tmp_path / "tfds")
        write_lists(tmp_path / "lists", records)
        config = make_config(tmp_path)
        setup = run_setup.prepare_run(config, tmp_path / "work", create_split=True)
        split = setup.split
        assert len(split.query_ids) == len(records["validation"])
        assert len(split.database_ids) == len(records["train"])
        assert len(split.train_ids) == len(records["train"][::2])
        # Labels are the list's columns, not the 1,000-class record labels.
        first_name, first_column, first_index = records["train"][0]
        assert split.labels[first_index] == first_column
        assert setup.class_names[0] == "cock"
        results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert math.isfinite(results["metrics"]["mAP@all"])


def test_missing_image_reported_with_line(tmp_path, monkeypatch):
    with helpers.mock_tfds(monkeypatch, NUM_EXAMPLES):
        records = subset_records(tmp_path / "tfds")
        write_lists(tmp_path / "lists", records)
        test_list = tmp_path / "lists" / "test.txt"
        lines = test_list.read_text().splitlines()
        lines[2] = "images/no_such_image.JPEG " + lines[2].split(" ", 1)[1]
        test_list.write_text("\n".join(lines) + "\n")
        with pytest.raises(
            ValueError,
            match=r"test.txt:3: image .no_such_image.JPEG. is not in split\(s\) validation",
        ):
            run_setup.prepare_run(make_config(tmp_path), tmp_path / "work", create_split=True)


def test_permuted_columns_rejected(tmp_path, monkeypatch):
    with helpers.mock_tfds(monkeypatch, NUM_EXAMPLES):
        records = subset_records(tmp_path / "tfds")
        shifted = {
            split: [(name, (column + 1) % 100, index) for name, column, index in rows]
            for split, rows in records.items()
        }
        write_lists(tmp_path / "lists", shifted)
        with pytest.raises(ValueError, match=r"train.txt:1: label column .* another order"):
            run_setup.prepare_run(make_config(tmp_path), tmp_path / "work", create_split=True)


def test_short_list_fails_line_count(tmp_path):
    (tmp_path / "test.txt").write_text("images/a.JPEG " + " ".join(["1"] + ["0"] * 99) + "\n")
    spec = list_files.ListFile("query", "test.txt", 5000)
    with pytest.raises(
        ValueError, match="has 1 lines but the query list of this protocol has 5000"
    ):
        list_files.read_list(tmp_path, spec, 100)


def test_published_checksum_enforced(tmp_path):
    (tmp_path / "train.txt").write_text("images/a.JPEG 1 0\nimages/b.JPEG 0 1\n")
    spec = list_files.ListFile("train", "train.txt", 2, sha256="0" * 64)
    with pytest.raises(ValueError, match="not the published contents"):
        list_files.read_list(tmp_path, spec, 2)
    parsed = list_files.read_list(tmp_path, spec, 2, check=False)
    assert parsed.file_names == ("a.JPEG", "b.JPEG")


@pytest.mark.parametrize(
    "row, message",
    [
        ("images/a.JPEG 1 0 0", r"train.txt:2: expected a path and 2 label columns, got 3"),
        ("images/a.JPEG 1 2", r"train.txt:2: label columns must be 0 or 1"),
        ("", r"train.txt:2: empty line"),
    ],
)
def test_malformed_row_names_line(tmp_path, row, message):
    (tmp_path / "train.txt").write_text(f"images/x.JPEG 1 0\n{row}\nimages/y.JPEG 0 1\n")
    spec = list_files.ListFile("train", "train.txt", 3)
    with pytest.raises(ValueError, match=message):
        list_files.read_list(tmp_path, spec, 2)


def test_unlabelled_rows_dropped_and_counted(tmp_path):
    (tmp_path / "train.txt").write_text("a.jpg 1 0\nb.jpg 0 0\nc.jpg 0 1\n")
    spec = list_files.ListFile("train", "train.txt", 3)
    parsed = list_files.read_list(tmp_path, spec, 2)
    assert parsed.file_names == ("a.jpg", "c.jpg")
    assert parsed.dropped_unlabelled == 1
    np.testing.assert_array_equal(parsed.line_numbers, [1, 3])


def test_several_labels_rejected_in_single_label_protocol(tmp_path):
    (tmp_path / "train.txt").write_text("a.jpg 1 0\nb.jpg 1 1\n")
    parsed = list_files.read_list(tmp_path, list_files.ListFile("train", "train.txt", 2), 2)
    with pytest.raises(ValueError, match=r"train.txt:2: 2 labels in a single-label protocol"):
        list_files.single_labels(parsed, tmp_path / "train.txt")


def test_list_dir_required(tmp_path, monkeypatch):
    with helpers.mock_tfds(monkeypatch, 20):
        config = make_config(tmp_path, list_dir=None)
        with pytest.raises(ValueError, match="Set --config.list_dir"):
            run_setup.prepare_run(config, tmp_path / "work", create_split=True)


def test_nuswide_multi_label_lists(tmp_path):
    # NUS-WIDE's layout: <root>/images/<file>, labels only in the lists. The images
    # are real PNG files; TFDS mock data cannot stand in for an image folder.
    rng = np.random.default_rng(0)
    folder = tmp_path / "nus" / "images"
    folder.mkdir(parents=True)
    names = [f"{index:04d}_{rng.integers(10**9)}.png" for index in range(36)]
    for name in names:
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)

    rows = (rng.uniform(size=(36, 21)) < 0.15).astype(int)
    rows[1:, 0] = np.maximum(rows[1:, 0], rows[1:].sum(axis=1) == 0)
    rows[0] = 0  # A row without labels is dropped, per the policy.
    (tmp_path / "lists").mkdir()
    for file_name, indices in (("train.txt", range(12)), ("test.txt", range(12, 18)),
                               ("database.txt", range(18, 36))):  # fmt: skip
        lines = [" ".join([f"images/{names[i]}"] + [str(v) for v in rows[i]]) for i in indices]
        (tmp_path / "lists" / file_name).write_text("\n".join(lines) + "\n")

    config = helpers.two_step_config(
        nuswide.get_config("runlocal,bits=16"),
        tmp_path / "tfds",
        source_dir=str(tmp_path / "nus"),
        list_dir=str(tmp_path / "lists"),
    )
    setup = run_setup.prepare_run(config, tmp_path / "work", create_split=True)

    split = setup.split
    assert split.labels.shape == (36, 21)
    assert len(split.train_ids) == 11
    assert len(split.query_ids) == 6
    first_query = int(split.query_ids[0])
    record = setup.builder.as_data_source(split="train")[first_query]
    name = list_files.base_name(protocols.as_text(record["file_name"]))
    np.testing.assert_array_equal(split.labels[first_query], rows[names.index(name)])
    assert setup.class_names[:3] == ("animal", "beach", "buildings")
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert math.isfinite(results["metrics"]["mAP@all"])


class FakeCocoSplit:
    """Records of one split of coco/2014 with only the features the pipeline reads.

    TFDS's mock generator cannot produce COCO's object sequences, so the test hands
    tfds.testing.mock_data these records instead.
    """

    def __init__(self, split, size):
        prefix = "train2014" if split == "train" else "val2014"
        self.records = [
            {
                "image": np.full((24 + index % 5, 30, 3), index, dtype=np.uint8),
                "image/filename": f"COCO_{prefix}_{index:012d}.jpg",
            }
            for index in range(size)
        ]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def __getitems__(self, indices):
        return [self.records[index] for index in indices]


def test_coco_lists_mix_train_and_validation(tmp_path, monkeypatch):
    sizes = {"train": 30, "validation": 20}
    fake = lambda builder, split, **kwargs: FakeCocoSplit(split, sizes[split])  # noqa: E731
    rng = np.random.default_rng(0)
    rows = {}
    for split, prefix in (("train", "train2014"), ("validation", "val2014")):
        for index in range(sizes[split]):
            labels = np.zeros(80, dtype=int)
            labels[rng.choice(80, size=rng.integers(1, 4), replace=False)] = 1
            rows[f"{prefix}/COCO_{prefix}_{index:012d}.jpg"] = labels

    paths = sorted(rows)
    rng.shuffle(paths)
    (tmp_path / "lists").mkdir()
    for file_name, chosen in (("train.txt", paths[:15]), ("test.txt", paths[15:25]),
                              ("database.txt", paths[25:])):  # fmt: skip
        lines = [" ".join([path] + [str(v) for v in rows[path]]) for path in chosen]
        (tmp_path / "lists" / file_name).write_text("\n".join(lines) + "\n")

    config = helpers.two_step_config(
        coco.get_config("runlocal,bits=16"), tmp_path / "tfds", list_dir=str(tmp_path / "lists")
    )
    with tfds.testing.mock_data(as_data_source_fn=fake):
        setup = run_setup.prepare_run(config, tmp_path / "work", create_split=True)

        split = setup.split
        assert split.split_sizes == (30, 20)
        assert split.labels.shape == (50, 80)
        # A val2014 image of the query list: pool id = 30 + its index in validation.
        query_path = next(path for path in paths[15:25] if path.startswith("val2014"))
        pool_id = 30 + int(query_path[-16:-4])
        assert pool_id in split.query_ids
        np.testing.assert_array_equal(split.labels[pool_id], rows[query_path])
        assert setup.class_names[-1] == "toothbrush"
        results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert math.isfinite(results["metrics"]["mAP@all"])


class FakeCocoObjects(FakeCocoSplit):
    """Fake COCO records with objects of categories {i % 7, i % 11}, none if i % 9 == 0."""

    def __init__(self, split, size):
        super().__init__(split, size)
        for index, record in enumerate(self.records):
            labels = [] if index % 9 == 0 else [index % 7, index % 11, index % 7]
            record["objects"] = {"label": np.asarray(labels, dtype=np.int64)}


def test_coco_sampled_labels_from_objects(tmp_path, monkeypatch):
    sizes = {"train": 40, "validation": 20}
    fake = lambda builder, split, **kwargs: FakeCocoObjects(split, sizes[split])  # noqa: E731
    small = dataclasses.replace(
        protocols.PROTOCOLS["coco_sampled"], queries_total=6, train_total=10
    )
    monkeypatch.setitem(protocols.PROTOCOLS, "coco_sampled", small)
    config = helpers.two_step_config(
        coco.get_config("protocol=coco_sampled,runlocal,bits=16"), tmp_path / "tfds"
    )
    with tfds.testing.mock_data(as_data_source_fn=fake):
        setup = run_setup.prepare_run(config, tmp_path / "work", create_split=True)
        split = setup.split
        # 40 + 20 images, of which ids 0, 9, 18, 27, 36 (train) and 40, 49, 58
        # (validation, indices 0, 9, 18) have no object.
        no_object = [0, 9, 18, 27, 36, 40, 49, 58]
        used = np.concatenate([split.query_ids, split.database_ids])
        assert sorted(used) == [i for i in range(60) if i not in no_object]
        assert len(split.query_ids) == 6
        assert len(split.train_ids) == 10
        assert set(split.train_ids) <= set(split.database_ids)
        expected = np.zeros(80, dtype=np.uint8)
        # Pool id 45 is validation record 5, whose objects are of categories 5 % 7 and
        # 5 % 11, both 5.
        expected[5] = 1
        np.testing.assert_array_equal(split.labels[45], expected)
        # Pool id 48 is validation record 8: categories 8 % 7 = 1 and 8 % 11 = 8.
        np.testing.assert_array_equal(np.flatnonzero(split.labels[48]), [1, 8])
        results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert math.isfinite(results["metrics"]["mAP@all"])


def test_coco_2017_needs_sampled_protocol():
    with pytest.raises(ValueError, match="year=2017 with protocol=coco_sampled"):
        coco.get_config("year=2017")
    assert coco.get_config("year=2017,protocol=coco_sampled").dataset == "coco/2017"
