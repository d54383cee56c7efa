"""Encode new queries, texts or image files, with the model behind an evaluation.

An evaluation folder (`<workdir>/eval`) contains the database codes, the class
prototypes, the text side of the run (`class_embeddings.npz`) and results.json,
which names the checkpoint and the config that produced them. `QueryEncoder`
restores that checkpoint and encodes queries the way the evaluation did. A text
goes through the run's semantic space, centring mean and semantic hash network.
An image is converted to the model's channels and size, normalised, and goes
through the visual hash network.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from absl import logging
import numpy as np
from PIL import Image, UnidentifiedImageError

from semhash_jax import checkpointing, config_defaults, evaluation, input_errors
from semhash_jax import input_pipeline, preprocessing, sharding
from semhash_jax import train_state as train_state_lib
from semhash_jax.retrieval import code_files, prototype_analysis
from semhash_jax.retrieval import codes as codes_lib
from semhash_jax.text import semantic_space, word_vectors


@dataclasses.dataclass
class EvalFiles:
    """Files of one evaluation, read back."""

    eval_dir: pathlib.Path
    results: dict
    database: code_files.CodeSet
    prototypes: code_files.CodeSet
    class_names: tuple[str, ...]
    seen: np.ndarray
    vocabulary: tuple[str, ...]
    text_mean: np.ndarray | None
    embedding_dim: int


def read_eval_files(workdir) -> EvalFiles:
    """Read results.json, the database and prototype codes and the text side of `workdir`."""
    eval_dir = pathlib.Path(workdir) / evaluation.EVAL_DIR
    results_path = eval_dir / "results.json"
    embeddings_path = eval_dir / evaluation.CLASS_EMBEDDINGS_FILE
    for path in (results_path, eval_dir / "database.npz", embeddings_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found. Run `python -m semhash_jax.evaluate --config=... "
                f"--workdir={workdir}` first; it writes the codes that search reads."
            )
    results = json.loads(results_path.read_text())
    if "checkpoint" not in results or "config" not in results:
        raise ValueError(
            f"{results_path} was written by an older version and does not name its "
            "checkpoint. Run `python -m semhash_jax.evaluate` on the workdir again."
        )
    text = prototype_analysis.read_class_embeddings(embeddings_path)
    return EvalFiles(
        eval_dir=eval_dir,
        results=results,
        database=code_files.read_code_file(eval_dir / "database.npz"),
        prototypes=code_files.read_code_file(eval_dir / "prototypes.npz"),
        class_names=tuple(str(name) for name in text.class_names),
        seen=text.seen,
        vocabulary=text.vocabulary,
        text_mean=text.text_mean,
        embedding_dim=int(text.embeddings.shape[1]),
    )


def read_image_file(path, channels: int) -> np.ndarray:
    """Return the image at `path` as uint8 [H, W, channels] (grey or RGB)."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file. Pass an image file.")
    if not path.is_file():
        raise FileNotFoundError(f"Image file {path} not found. Pass the path of an image file.")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(
            f"Cannot read image file {path}: {error}. Pass a PNG, JPEG or another "
            "format that Pillow reads."
        ) from error
    return array.reshape(array.shape[0], array.shape[1], channels)


def find_checkpoint_workdir(workdir: pathlib.Path, checkpoint: dict) -> pathlib.Path:
    """Return the workdir of the checkpoint that results.json names.

    The path relative to the evaluated workdir is tried first, so that a workdir
    moved together with its checkpoints (or with its source run) still works.
    """
    candidates = []
    if "relative_workdir" in checkpoint:
        candidates.append(workdir / checkpoint["relative_workdir"])
    candidates.append(pathlib.Path(checkpoint["workdir"]))
    for candidate in candidates:
        if (candidate / checkpointing.CHECKPOINT_DIR).is_dir():
            return candidate.resolve()
    raise input_errors.mark(
        FileNotFoundError(
            f"The checkpoints that {workdir}/eval/results.json was computed with are not in "
            f"{' or '.join(str(c / checkpointing.CHECKPOINT_DIR) for c in candidates)}. If the "
            "run was moved, move its checkpoints folder with it, or evaluate again."
        )
    )


class QueryEncoder:
    """The model of an evaluation, restored to encode text and image queries."""

    def __init__(self, workdir):
        with input_errors.tagged():
            self.files = read_eval_files(workdir)
        checkpoint = self.files.results["checkpoint"]
        self.config = config_defaults.config_from_json(self.files.results["config"])
        self.checkpoint_workdir = find_checkpoint_workdir(self.files.eval_dir.parent, checkpoint)
        self.step = int(checkpoint["step"])
        mesh = sharding.make_mesh()
        with input_errors.tagged():
            reader = checkpointing.Checkpointer(self.checkpoint_workdir, fingerprint=None)
            checkpointing.find_step(reader, self.step)
        embedding_dim = self.files.embedding_dim
        schedule = train_state_lib.make_schedule(self.config)
        state = train_state_lib.create_train_state(
            self.config,
            mesh,
            embedding_dim=embedding_dim,
            schedule=schedule,
            num_classes=int(self.files.seen.sum()),
        )
        logging.info("Restoring the model of step %d from %s.", self.step, self.checkpoint_workdir)
        restored = reader.restore(self.step, state.state)
        reader.close()
        self._encoder = evaluation.Encoder(state.graphdef, restored, mesh)
        self._transform = preprocessing.model_input_transform(self.config)
        self._normalize = input_pipeline.Normalize(tuple(self.config.mean), tuple(self.config.std))

    def _embed(self, texts: list[str]) -> np.ndarray:
        # Queries are not cached: each new text would add a cache file.
        return semantic_space.embed_texts(
            texts, self.config.text, vocabulary=self.files.vocabulary, cache_dir=None
        )

    def text_codes(self, texts: list[str]) -> np.ndarray:
        """Return bool codes [len(texts), K]: each text's prototype, as for a class name."""
        method = self.config.get("method", "semantic_hash")
        if method != "semantic_hash":
            raise input_errors.mark(
                ValueError(
                    f"Search by text needs a SemanticHash model, but {self.checkpoint_workdir} "
                    f"was trained with config.method={method!r}, whose class codes come from a "
                    "table, not from text. Search by an image instead."
                )
            )
        try:
            embeddings = self._embed(texts)
        except word_vectors.OutOfVocabularyError as error:
            raise input_errors.mark(
                ValueError(
                    f"No word of the search text {texts} is in the word vector file "
                    f"{self.config.text.word_vectors}. Search with other words or by an image."
                )
            ) from error
        if self.files.text_mean is not None:
            embeddings = semantic_space.center(embeddings, self.files.text_mean)
        return codes_lib.binarize(self._encoder.classes(embeddings)) > 0

    def image_codes(self, paths) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return bool codes [len(paths), K] of image files, and the images as read."""
        with input_errors.tagged():
            images = [read_image_file(path, self.config.num_channels) for path in paths]
        batch = []
        for image in images:
            element = self._transform.map({"image": image, "label": 0, "id": -1})
            batch.append(self._normalize.map(element)["image"])
        codes = self._encoder.image_array(np.stack(batch))
        return codes_lib.binarize(codes) > 0, images
