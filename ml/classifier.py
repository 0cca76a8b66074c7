"""The lazily loaded classifier that serving calls.

`diagnosis` calls :func:`predict` and nothing else of Keras. The model is loaded
on the first prediction, once per process, under a lock so that concurrent
requests never load it twice. Importing this module does not import TensorFlow.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from . import preprocessing

MODEL_FILENAME = "model.keras"
METADATA_FILENAME = "metadata.json"


class ModelUnavailable(Exception):
    """There is no usable model artifact; the message says where we looked."""


class PredictionFailed(Exception):
    """The model is there but could not score this image."""


@dataclass(frozen=True)
class Result:
    probability_malignant: float  # calibrated (temperature-scaled)
    label: str  # "benign" or "malignant"
    threshold: float
    model_version: str
    elapsed_ms: float


def model_dir() -> Path:
    return Path(getattr(settings, "SKINCARE_MODEL_DIR"))


def read_metadata(directory: Path | None = None) -> dict[str, Any]:
    """The model's metadata (threshold, temperature, version...) without TensorFlow."""
    directory = Path(directory) if directory else model_dir()
    path = directory / METADATA_FILENAME
    if not path.is_file() or not (directory / MODEL_FILENAME).is_file():
        raise ModelUnavailable(f"No model available: expected {MODEL_FILENAME} and {METADATA_FILENAME} in {directory}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ModelUnavailable(f"No model available: {path} is not valid JSON ({exc})") from exc


def model_info() -> dict[str, Any] | None:
    try:
        return read_metadata()
    except ModelUnavailable:
        return None


def calibrated_probability(p_malignant: float, temperature: float, logit_offset: float = 0.0) -> float:
    """Calibrate a 2-class softmax output: shift the logit gap by the prior correction,
    then divide it by the temperature (both fitted on the validation split)."""
    eps = 1e-7
    p = min(max(float(p_malignant), eps), 1 - eps)
    logit = (math.log(p / (1 - p)) + float(logit_offset)) / float(temperature or 1.0)
    return 1.0 / (1.0 + math.exp(-logit))


class LoadedModel:
    def __init__(self, directory: Path):
        self.directory = directory
        self.metadata = read_metadata(directory)
        import keras  # deferred: the first prediction pays for TensorFlow, nothing else does

        try:
            self.model = keras.models.load_model(directory / MODEL_FILENAME, compile=False)
        except Exception as exc:  # a corrupt or incompatible file is an unavailable model
            raise ModelUnavailable(f"No model available: {directory / MODEL_FILENAME} could not be loaded ({exc})") from exc
        self.malignant_index = int(self.metadata.get("class_names", ["benign", "malignant"]).index("malignant"))
        self.lock = threading.Lock()

    def raw_probability(self, batch) -> "list[float]":
        with self.lock:  # Keras models are not guaranteed re-entrant across threads
            out = self.model(batch, training=False)
        return [float(v) for v in out.numpy()[:, self.malignant_index]]


_loaded: LoadedModel | None = None
_load_lock = threading.Lock()


def get_model() -> LoadedModel:
    global _loaded
    directory = model_dir()
    if _loaded is not None and _loaded.directory == directory:
        return _loaded
    with _load_lock:
        if _loaded is None or _loaded.directory != directory:
            _loaded = LoadedModel(directory)
    return _loaded


def is_loaded() -> bool:
    return _loaded is not None


def reset() -> None:
    """Forget the loaded model (tests, or after replacing the artifact)."""
    global _loaded
    with _load_lock:
        _loaded = None


def predict_many(sources, directory: Path | None = None, batch_size: int = 32, progress=None):
    """Calibrated probabilities of malignancy for many images (evaluation, benchmarks).

    Uses the same preprocessing and calibration as :func:`predict`, in batches."""
    import numpy as np

    if directory is not None and Path(directory) != model_dir():
        loaded = LoadedModel(Path(directory))
    else:
        loaded = get_model()
    meta = loaded.metadata
    size = int(meta.get("image_size", preprocessing.IMAGE_SIZE))
    out = []
    sources = list(sources)
    for start in range(0, len(sources), batch_size):
        batch = np.stack([preprocessing.preprocess(s, size) for s in sources[start:start + batch_size]])
        out.extend(loaded.raw_probability(batch))
        if progress:
            progress(min(start + batch_size, len(sources)))
    temperature, offset = meta.get("temperature", 1.0), meta.get("logit_offset", 0.0)
    return np.array([calibrated_probability(p, temperature, offset) for p in out]), meta


def predict(image: preprocessing.ImageSource) -> Result:
    """Score one image: calibrated probability of malignancy and the verdict."""
    started = time.perf_counter()
    loaded = get_model()
    meta = loaded.metadata
    size = int(meta.get("image_size", preprocessing.IMAGE_SIZE))
    try:
        x = preprocessing.preprocess(image, size)[None, ...]
        raw = loaded.raw_probability(x)[0]
    except Exception as exc:
        raise PredictionFailed(f"{type(exc).__name__}: {exc}") from exc
    probability = calibrated_probability(raw, meta.get("temperature", 1.0), meta.get("logit_offset", 0.0))
    threshold = float(meta["threshold"])
    return Result(
        probability_malignant=probability,
        label="malignant" if probability >= threshold else "benign",
        threshold=threshold,
        model_version=str(meta.get("model_version", "unknown")),
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )
