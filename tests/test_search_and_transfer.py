"""Search by text and image, and cross-dataset evaluation, on a zero-shot Fashion-MNIST run."""

import json

import ml_collections
import numpy as np
from PIL import Image
import pytest

from configs import fashion_mnist, image_folder
from semhash_jax import cross_dataset, searching
from semhash_jax.retrieval import code_files
from tests.test_end_to_end import ROOT, run_binary

CONFIG = (
    str(ROOT / "configs" / "fashion_mnist.py") + ":protocol=train_test_split,zero_shot,runlocal"
)
TARGET_CONFIG = str(ROOT / "configs" / "image_folder.py") + ":runlocal"
ANKLE_BOOT = 9


@pytest.fixture(scope="module")
def data_dir(zero_shot_data_dir):
    return zero_shot_data_dir


@pytest.fixture(scope="module")
def workdir(zero_shot_run):
    return zero_shot_run[0]


def read_bits(path):
    with np.load(path) as stored:
        return np.unpackbits(stored["codes"], axis=1)[:, : int(stored["bits"])].astype(bool)


def test_rank_by_hamming_hand_table():
    from semhash_jax.retrieval import codes

    database = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], bool)
    query = np.array([0, 0, 0, 0], bool)
    positions, distances = searching.rank_by_hamming(query, codes.pack_codes(database), 3)
    # Distances 2, 0, 1, 1: position 2 comes before position 3 at distance 1.
    np.testing.assert_array_equal(positions, [1, 2, 3])
    np.testing.assert_array_equal(distances, [0, 1, 1])


def search(workdir, *args, output=None):
    flags = [f"--workdir={workdir}", *args]
    if output is not None:
        flags.append(f"--output={output}")
    return run_binary("semhash_jax.search", *flags)


@pytest.mark.slow
def test_text_search_on_hand_made_codes(workdir, tmp_path):
    # The text "ankle boot" is encoded like the class name, so its code is the
    # class's prototype. The database is replaced by codes at known distances.
    prototype = read_bits(workdir / "eval" / "prototypes.npz")[ANKLE_BOOT]
    rows = [prototype.copy() for _ in range(5)]
    rows[0][:3] = ~rows[0][:3]  # distance 3
    rows[2][5] = ~rows[2][5]  # distance 1
    rows[3][7] = ~rows[3][7]  # distance 1, after row 2
    rows[4] = ~rows[4]  # distance 32
    codes = np.stack(rows).astype(np.int8) * 2 - 1
    database = workdir / "eval" / "database.npz"
    database.rename(workdir / "eval" / "database.saved.npz")
    try:
        code_files.write_code_file(
            database, codes, np.array([0, 9, 7, 5, 1]), ids=np.array([50, 51, 52, 53, 54])
        )
        completed = search(workdir, "--text=ankle boot", "--top_k=4", output=tmp_path / "r.json")
    finally:
        (workdir / "eval" / "database.saved.npz").replace(database)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert [item["id"] for item in result["results"]] == [51, 52, 53, 50]
    assert [item["hamming_distance"] for item in result["results"]] == [0, 1, 1, 3]
    assert result["results"][0]["labels"] == ["Ankle boot"]
    assert result["nearest_classes"][0] == {
        "class": "Ankle boot",
        "hamming_distance": 0,
        "seen_in_training": False,
    }
    assert "Ankle boot (not trained on): distance 0" in completed.stdout


@pytest.mark.slow
def test_image_search_finds_the_image(workdir, data_dir, tmp_path):
    from semhash_jax.datasets import registry

    builder = registry.get_builder("fashion_mnist", data_dir)
    record = builder.as_data_source(split="train")[7]
    path = tmp_path / "query.png"
    Image.fromarray(np.asarray(record["image"])[..., 0]).save(path)
    completed = search(
        workdir, f"--image={path}", "--top_k=400", "--plots", output=tmp_path / "r.json"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    # Pool id 7 is train record 7, a database item of the train_test_split protocol.
    zero_distance = [item["id"] for item in result["results"] if item["hamming_distance"] == 0]
    assert 7 in zero_distance
    plot = workdir / "eval" / "search" / "query_png.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_search_errors_are_one_line(workdir, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    completed = search(workdir, f"--image={broken}")
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1].startswith("Error: Cannot read image file")
    empty = search(tmp_path, "--text=bag")
    assert empty.returncode != 0
    assert "Run `python -m semhash_jax.evaluate" in empty.stderr.strip().splitlines()[-1]


def test_search_needs_one_query(tmp_path):
    completed = search(tmp_path, "--text=bag", f"--image={tmp_path}/x.png")
    assert completed.returncode != 0
    assert "exactly one of --text and --image" in completed.stderr


def test_transfer_config_takes_model_from_source():
    source = json.loads(fashion_mnist.get_config("runlocal").to_json())
    source["bits"] = 48
    target = image_folder.get_config("runlocal")
    target.unlock()
    target.source_dir = "/images"
    config = cross_dataset.transfer_config(target, source)
    assert config.bits == 48
    assert config.num_channels == 1
    assert config.model.backbone == "small_cnn"
    assert config.text.templates == ("a photo of a {}.",)
    assert config.dataset == "image_folder"
    assert config.source_dir == "/images"
    assert config.protocol == "holdout_per_class"


def test_transfer_config_ignores_unseen_classes():
    source = json.loads(fashion_mnist.get_config("zero_shot").to_json())
    target = ml_collections.ConfigDict(fashion_mnist.get_config("zero_shot").to_dict())
    config = cross_dataset.transfer_config(target, source)
    assert config.unseen_classes == ()


@pytest.fixture(scope="module")
def target_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("sneaker", "bag", "ankle_boot", "cat"):
        folder = root / name
        folder.mkdir()
        for index in range(10):
            pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def transferred(workdir, target_images, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("target_tfds")
    completed = run_binary(
        "semhash_jax.evaluate",
        f"--config={TARGET_CONFIG}",
        f"--config.source_dir={target_images}",
        f"--config.data_dir={data_dir}",
        f"--checkpoint_from={workdir}",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (out,) = (workdir / "transfer").iterdir()
    return out, completed.stdout


@pytest.mark.slow
def test_transfer_maps_classes_by_name(transferred, workdir):
    out, stdout = transferred
    results = json.loads((out / "eval" / "results.json").read_text())
    transfer = results["transfer"]
    # The source trained on Bag and Sneaker; Ankle boot was held out, and cat is new.
    assert transfer["classes_seen_by_source"] == ["bag", "sneaker"]
    assert transfer["classes_new_to_source"] == ["ankle boot", "cat"]
    assert transfer["source_dataset"] == "fashion_mnist"
    assert results["zero_shot"]["unseen_classes"] == ["ankle boot", "cat"]
    assert results["checkpoint"]["workdir"] == str(workdir)
    assert "model from" in stdout


@pytest.mark.slow
def test_transfer_results_named_by_folder(transferred, target_images):
    from semhash_jax.datasets import image_folder as image_folder_data

    out, _ = transferred
    expected = (
        f"image_folder_{image_folder_data.config_name(target_images)}_1.0.0-holdout_per_class"
    )
    assert out.name == expected


@pytest.mark.slow
def test_transfer_of_other_folder_gets_own_split(transferred, workdir, tmp_path):
    # A second folder of other classes and size must not reuse the first folder's split.
    other = tmp_path / "other_images"
    rng = np.random.default_rng(1)
    for name, count in (("dog", 12), ("hat", 8)):
        (other / name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(other / name / f"{index}.png")
    completed = run_binary(
        "semhash_jax.evaluate",
        f"--config={TARGET_CONFIG}",
        f"--config.source_dir={other}",
        f"--config.data_dir={tmp_path / 'tfds'}",
        f"--checkpoint_from={workdir}",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = sorted(path.name for path in (workdir / "transfer").iterdir())
    assert len(outputs) == 2
    first, _ = transferred
    results = json.loads((first / "eval" / "results.json").read_text())
    assert results["protocol"]["num_database"] == 36  # the first folder's results are kept


def test_saved_split_of_other_data_raises(tmp_path):
    from semhash_jax.datasets import protocols

    split = protocols.Split(
        protocol="holdout_per_class",
        dataset="image_folder",
        seed=0,
        splits=("train",),
        split_sizes=(3,),
        train_ids=np.array([0, 1]),
        query_ids=np.array([2]),
        database_ids=np.array([0, 1]),
        labels=np.array([0, 0, 1]),
        source="image_folder/photos_00000000/1.0.0",
    )
    with pytest.raises(ValueError, match="photos_00000000.*other_11111111"):
        protocols.check_matches(
            split, "holdout_per_class", "image_folder", 0, tmp_path,
            "image_folder/other_11111111/1.0.0",
        )  # fmt: skip


@pytest.mark.slow
def test_transfer_prototypes_match_source_names(transferred, workdir):
    out, _ = transferred
    source = read_bits(workdir / "eval" / "prototypes.npz")
    target = read_bits(out / "eval" / "prototypes.npz")
    # Target order: ankle boot, bag, cat, sneaker. The text encoder is uncased, and
    # both runs centre by the source's mean, so equal names give equal prototypes.
    np.testing.assert_array_equal(target[0], source[9])
    np.testing.assert_array_equal(target[1], source[8])
    np.testing.assert_array_equal(target[3], source[7])


@pytest.mark.slow
def test_transfer_codes_have_source_bits(transferred):
    out, _ = transferred
    query = code_files.read_code_file(out / "eval" / "query.npz")
    assert query.bits == 32
    assert len(query) == 4  # 10% of each of the 4 classes


def test_transfer_without_checkpoints_raises(tmp_path):
    completed = run_binary(
        "semhash_jax.evaluate", f"--config={TARGET_CONFIG}", f"--checkpoint_from={tmp_path}"
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1].startswith("Error: --checkpoint_from=")


@pytest.mark.slow
def test_search_in_moved_workdir(workdir, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(workdir, moved, ignore=shutil.ignore_patterns("transfer"))
    completed = search(moved, "--text=bag", output=tmp_path / "r.json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["checkpoint"]["relative_workdir"] == "."


def test_checkpoint_workdir_relative_first(tmp_path):
    from semhash_jax import query_encoder

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    found = query_encoder.find_checkpoint_workdir(
        tmp_path / "run", {"workdir": str(tmp_path / "old"), "relative_workdir": "."}
    )
    assert found == (tmp_path / "run").resolve()


def test_checkpoint_workdir_missing_raises(tmp_path):
    from semhash_jax import query_encoder

    with pytest.raises(FileNotFoundError, match="move its checkpoints folder"):
        query_encoder.find_checkpoint_workdir(
            tmp_path, {"workdir": str(tmp_path / "gone"), "relative_workdir": "../gone"}
        )
