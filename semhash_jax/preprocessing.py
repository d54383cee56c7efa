"""Host-side image preprocessing: crops and resizes to the model's input size.

Two modes, chosen by `config.preprocess`:
- "fixed": the images already have the model's size (Fashion-MNIST, CIFAR-10).
  They pass unchanged, and training augmentation (flips, small shifts) runs on
  the device inside the train step.
- "inception_crop": the standard ImageNet preprocessing. Training images get a
  random crop of 8 % to 100 % of the area with aspect ratio 3/4 to 4/3, resized
  to the model's size, and a random horizontal flip. Evaluation images are resized
  so that the shorter side is size / crop_fraction, then center-cropped.

Resizing is bilinear with antialiasing (Pillow). Random choices come from the
generator that grain derives from the seed and the element's position, so a
training run gets the same crops when it is repeated or resumed.
"""

from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np
from PIL import Image

PREPROCESS_MODES = ("fixed", "inception_crop")
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 [H, W, C] to [height, width, C], bilinear with antialiasing."""
    channels = image.shape[2]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil.resize((width, height), Image.BILINEAR))
    return resized.reshape(height, width, channels)


def random_resized_crop(
    image: np.ndarray, size: int, rng: np.random.Generator, scale=CROP_SCALE, ratio=CROP_RATIO
) -> np.ndarray:
    """Return a random crop of `image` [H, W, C], resized to [size, size, C].

    The crop covers a fraction of the area drawn from `scale` and has an aspect
    ratio (width / height) drawn log-uniformly from `ratio`. After 10 draws that do
    not fit, the largest central crop with a ratio inside `ratio` is used.
    """
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            break
    else:
        aspect = width / height
        if aspect < ratio[0]:
            crop_width, crop_height = width, round(width / ratio[0])
        elif aspect > ratio[1]:
            crop_width, crop_height = round(height * ratio[1]), height
        else:
            crop_width, crop_height = width, height
        top = (height - crop_height) // 2
        left = (width - crop_width) // 2
    crop = image[top : top + crop_height, left : left + crop_width]
    return _resize(crop, size, size)


def center_crop(image: np.ndarray, size: int, crop_fraction: float) -> np.ndarray:
    """Resize the shorter side of `image` to size / crop_fraction, then crop the center."""
    height, width = image.shape[:2]
    short_side = round(size / crop_fraction)
    if height <= width:
        new_height, new_width = short_side, max(short_side, round(width * short_side / height))
    else:
        new_height, new_width = max(short_side, round(height * short_side / width)), short_side
    resized = _resize(image, new_height, new_width)
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    return resized[top : top + size, left : left + size]


def _as_hwc(image, element_id) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"Image of pool id {element_id} has shape {image.shape} and dtype {image.dtype}; "
            "expected uint8 [height, width, channels] with every size > 0."
        )
    return image


@dataclasses.dataclass(frozen=True)
class CheckSize(grain.transforms.Map):
    """Pass images that already have the model's size; raise on any other size."""

    size: int
    channels: int

    def map(self, element: dict) -> dict:
        image = _as_hwc(element["image"], element["id"])
        if image.shape != (self.size, self.size, self.channels):
            raise ValueError(
                f"Image of pool id {element['id']} has shape {image.shape}, but "
                f"config.preprocess='fixed' expects {(self.size, self.size, self.channels)}. "
                "Set --config.preprocess=inception_crop to crop and resize, or set "
                "--config.image_size and --config.num_channels to the dataset's."
            )
        return {**element, "image": image}


@dataclasses.dataclass(frozen=True)
class TrainCrop(grain.transforms.RandomMap):
    """Random resized crop and random horizontal flip, for training."""

    size: int

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image = random_resized_crop(_as_hwc(element["image"], element["id"]), self.size, rng)
        if rng.uniform() < 0.5:
            image = image[:, ::-1]
        return {**element, "image": np.ascontiguousarray(image)}


@dataclasses.dataclass(frozen=True)
class EvalCrop(grain.transforms.Map):
    """Resize and center crop, for evaluation."""

    size: int
    crop_fraction: float

    def map(self, element: dict) -> dict:
        image = center_crop(_as_hwc(element["image"], element["id"]), self.size, self.crop_fraction)
        return {**element, "image": image}


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 [H, W, C] to `channels` channels: grey to RGB by repetition, RGB
    to grey by ITU-R BT.601 luma (Pillow's "L" mode)."""
    if image.shape[2] == channels:
        return image
    if image.shape[2] == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 3 and channels == 1:
        return np.asarray(Image.fromarray(image).convert("L"))[..., None]
    raise ValueError(
        f"Cannot convert images with {image.shape[2]} channels to {channels} channels; "
        "only grey <-> RGB is supported."
    )


@dataclasses.dataclass(frozen=True)
class ModelInputCrop(grain.transforms.Map):
    """Bring any image to a model's input: channel conversion, then resize and center
    crop to `size` (no resize for images that already have it).

    For a model evaluated on another dataset than it was trained on.
    """

    size: int
    channels: int
    crop_fraction: float

    def map(self, element: dict) -> dict:
        image = convert_channels(_as_hwc(element["image"], element["id"]), self.channels)
        if image.shape[:2] != (self.size, self.size):
            image = center_crop(image, self.size, self.crop_fraction)
        return {**element, "image": np.ascontiguousarray(image)}


def model_input_transform(config):
    """Return a `ModelInputCrop` for the model input of `config` (image size and channels).

    Models trained on fixed-size images see whole images (crop fraction 1).
    """
    crop_fraction = config.crop_fraction if config.preprocess == "inception_crop" else 1.0
    return ModelInputCrop(config.image_size, config.num_channels, crop_fraction)


def train_transform(config):
    """Return the grain transform that brings training images to the model's size."""
    if config.preprocess == "inception_crop":
        return TrainCrop(config.image_size)
    return CheckSize(config.image_size, config.num_channels)


def eval_transform(config):
    """Return the transform that brings evaluation images to the model's size."""
    if config.preprocess == "inception_crop":
        return EvalCrop(config.image_size, config.crop_fraction)
    return CheckSize(config.image_size, config.num_channels)
