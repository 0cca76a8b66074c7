"""A model folder: the one place for its file names, the class order, the input size, and reading
and writing its metadata.

Training writes a folder, serving reads it, reporting describes it; all three name its files
from here. Nothing here imports TensorFlow, Keras or Django.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The class order of the network's two outputs: index = label.
CLASS_NAMES = ("benign", "malignant")
# The network's input: IMAGE_SIZE x IMAGE_SIZE RGB (ml.preprocessing squashes every photo to it) unless
# the model's metadata records another side (image_size, written by train_model): read it with image_size_of.
IMAGE_SIZE = 224

MODEL_FILENAME = "model.keras"  # the Keras model (the reference, and the serving fallback)
METADATA_FILENAME = "metadata.json"  # version, calibration, thresholds, how it was trained
LITERT_FILENAME = "model.tflite"  # the LiteRT export that serves without TensorFlow
HEAD_FILENAME = "head.npz"  # the head's weights for the heat map (ml.training.export)
GATE_FILENAME = "gate.npz"  # the image gate's reference (ml.serving.gate)
SPLITS_FILENAME = "splits.json"  # the image names held out for validation and test
METRICS_FILENAME = "metrics.json"  # validation and test figures, written once by training
MODEL_CARD_FILENAME = "MODEL_CARD.md"
EVALUATION_FOLDER = "evaluation"  # make evaluate's JSON files


class ModelUnavailable(Exception):
    """There is no usable model artifact; the message says where we looked."""


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """A model folder's metadata, refused with a message where the folder holds no model."""
    directory = Path(directory)
    path = directory / METADATA_FILENAME
    if not path.is_file() or not (directory / MODEL_FILENAME).is_file():
        raise ModelUnavailable(f"No model available: expected {MODEL_FILENAME} and {METADATA_FILENAME} in {directory}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ModelUnavailable(f"No model available: {path} is not valid JSON ({exc})") from exc


def write_metadata(directory: str | Path, metadata: dict[str, Any]) -> Path:
    path = Path(directory) / METADATA_FILENAME
    path.write_text(json.dumps(metadata, indent=2))
    return path


def read_splits(directory: str | Path) -> dict[str, set[str]]:
    """The image names a model held out ({"validation": ..., "test": ...}); empty where not recorded."""
    path = Path(directory) / SPLITS_FILENAME
    if not path.is_file():
        return {}
    return {split: set(names) for split, names in json.loads(path.read_text()).items()}


def image_size_of(metadata: dict[str, Any]) -> int:
    """The side of a model's square input, as its metadata records it (IMAGE_SIZE for models that predate it)."""
    return int(metadata.get("image_size", IMAGE_SIZE))
