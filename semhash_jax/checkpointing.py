"""Orbax checkpoints of the train state, the data iterator and the config.

Each checkpoint step contains three items:
  state:  the model and optimizer state (a pure dict of arrays),
  data:   the grain training iterator's position, so a resumed run continues
          with the batches the uninterrupted run would have seen,
  config: the full config, and the fields that fix parameter shapes.
Orbax writes each step into a temporary folder and renames it when complete,
so a run killed during a save keeps every earlier checkpoint usable.
"""

import json
import pathlib

from absl import logging
from flax import nnx
import grain
import jax
import orbax.checkpoint as ocp

from semhash_jax import input_errors

CHECKPOINT_DIR = "checkpoints"

# Config fields that decide parameter shapes and meaning. A checkpoint written
# with other values cannot be restored into this config.
SHAPE_FIELDS = (
    "method",
    "dataset",
    "bits",
    "num_channels",
    "model.backbone",
    "model.stem",
    "model.semantic_hidden",
    "text.model",
    "text.space",
    "unseen_classes",
)

# Values of the fields above in checkpoints written before the field existed.
_FIELD_DEFAULTS = {"method": "semantic_hash", "text.space": "bert", "unseen_classes": []}


def _get_field(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return list(value) if isinstance(value, tuple) else value


def config_fingerprint(config, embedding_dim: int, num_classes: int) -> dict:
    """Return the values that a checkpoint must share with the config."""
    fingerprint = {name: _get_field(config, name) for name in SHAPE_FIELDS}
    fingerprint["embedding_dim"] = int(embedding_dim)
    fingerprint["num_classes"] = int(num_classes)
    return fingerprint


class Checkpointer:
    """Save and restore train state, data position and config in a workdir."""

    def __init__(self, workdir, *, fingerprint: dict | None, config=None, max_to_keep: int = 3):
        """`fingerprint` None restores without the compatibility check (the caller
        builds the state from the checkpoint's own config)."""
        self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
        self._fingerprint = fingerprint
        self._config_json = json.loads(config.to_json()) if config is not None else None
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: nnx.State, data_iterator=None):
        """Start an asynchronous save of `step`; `wait` blocks until it is on disk."""
        items = {
            "state": ocp.args.StandardSave(nnx.to_pure_dict(state)),
            "config": ocp.args.JsonSave(
                {
                    "fingerprint": self._fingerprint,
                    "config": self._config_json,
                }
            ),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        logging.info("Saving checkpoint of step %d to %s.", step, self.directory)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()

    def saved_config(self, step: int) -> dict:
        """Return the config (as a JSON dict) that checkpoint `step` was written with."""
        restored = self._manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )
        return restored["config"]["config"]

    def check_compatible(self, step: int):
        """Raise when checkpoint `step` was written under another config."""
        restored = self._manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )
        saved = restored["config"]["fingerprint"]
        differences = {
            key: (saved.get(key, _FIELD_DEFAULTS.get(key)), value)
            for key, value in self._fingerprint.items()
            if saved.get(key, _FIELD_DEFAULTS.get(key)) != value
        }
        if differences:
            details = "; ".join(
                f"{key}: checkpoint {old!r}, config {new!r}"
                for key, (old, new) in sorted(differences.items())
            )
            raise ValueError(
                f"The checkpoint of step {step} in {self.directory} was written "
                f"under another config ({details}). Use the config it was written "
                "with, or a new --workdir for this config."
            )

    def restore(self, step: int, state: nnx.State, data_iterator=None) -> nnx.State:
        """Restore `step` into arrays shaped and sharded like `state`.

        `data_iterator`, when given, is moved to the saved position in place.
        """
        if self._fingerprint is not None:
            with input_errors.tagged():
                self.check_compatible(step)
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        logging.info("Restoring checkpoint of step %d from %s.", step, self.directory)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        nnx.replace_by_pure_dict(state, restored["state"])
        return state


def find_step(checkpointer: Checkpointer, step: int | None) -> int:
    """Return `step`, or the latest one, after checking that it exists."""
    with input_errors.tagged():
        return _find_step(checkpointer, step)


def _find_step(checkpointer: Checkpointer, step: int | None) -> int:
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(
            f"No checkpoint in {checkpointer.directory}. Train first with "
            "`python -m semhash_jax.main --config=... --workdir=...`."
        )
    if step is None:
        return max(steps)
    if step not in steps:
        raise FileNotFoundError(
            f"No checkpoint of step {step} in {checkpointer.directory}; saved "
            f"steps: {sorted(steps)}. Pass one of them to --step."
        )
    return step
