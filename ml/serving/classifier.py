"""The lazily loaded classifier that serving calls.

`diagnosis` calls :func:`predict` and nothing else of Keras. The model is loaded
on the first prediction, once per process, under a lock so that concurrent
requests never load it twice. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from ml import preprocessing
from ml.artifact import CLASS_NAMES, METADATA_FILENAME, MODEL_FILENAME, ModelUnavailable, image_size_of  # noqa: F401 (ModelUnavailable: part of this module's interface)
from ml.artifact import read_metadata as read_folder_metadata
from ml.serving import heatmap, tta
from ml.serving.gate import Gate
from ml.serving.heatmap import normalise_cam  # noqa: F401 (part of this module's interface)
from ml.serving.runtimes import KerasRuntime, LiteRTRuntime, inference_threads  # noqa: F401 (inference_threads: this module's interface)
from ml.serving.scores import logit, near_boundary


class PredictionFailed(Exception):
    """The model is there but could not score this image."""


OUTCOMES = ("needs_doctor", "uncertain", "low_risk", "not_assessed")


@dataclass(frozen=True)
class Result:
    probability_malignant: float | None  # calibrated (prior-corrected, temperature-scaled); None when not assessed
    label: str | None  # "benign" or "malignant"; None when not assessed
    threshold: float
    model_version: str
    elapsed_ms: float
    outcome: str = "low_risk"  # one of OUTCOMES
    uncertain_threshold: float | None = None
    reason: str = ""  # why the image was not assessed
    heatmap: Any = None  # (H, W) array in 0..1, or None where the model has no feature layer (Grad-CAM)
    heatmap_method: str = "gradcam"  # what drew `heatmap`: settings.SKINCARE_HEATMAP (ml/serving/heatmap.py)
    gate_measures: dict = field(default_factory=dict)
    # Close to an outcome boundary: within the margin (metadata "boundary_margin", fitted on validation)
    # in which the same photo turned or flipped can get another outcome.
    near_boundary: bool = False
    # How many views of the photo the probability averages: 1, the image as it is; 8 where the model
    # checked a close call in every flip and quarter turn (metadata "close_call_check", ml/serving/tta.py).
    views_averaged: int = 1

    @property
    def assessed(self) -> bool:
        return self.outcome != "not_assessed"


def outcome_for(probability: float, threshold: float, uncertain_threshold: float | None) -> str:
    """Three outcomes from the calibrated probability and the bands saved with the model."""
    if probability >= threshold:
        return "needs_doctor"
    if uncertain_threshold is not None and probability >= uncertain_threshold:
        return "uncertain"
    return "low_risk"


def is_near_boundary(
    probability: float, threshold: float, uncertain_threshold: float | None, metadata: dict[str, Any]
) -> bool:
    """Whether a calibrated probability lies within the model's boundary margin of an outcome boundary
    (ml.reporting.metrics.fit_boundary_margin); never for a model saved without one, or with a margin of 0
    (a model that averages all eight views answers the same however the photo is turned)."""

    margin = float((metadata.get("boundary_margin") or {}).get("logit") or 0.0)
    return bool(near_boundary(probability, threshold, uncertain_threshold, margin))


def model_dir() -> Path:
    return Path(settings.SKINCARE_MODEL_DIR)


def read_metadata(directory: Path | None = None) -> dict[str, Any]:
    """The model's metadata (threshold, temperature, version...) without TensorFlow."""
    return read_folder_metadata(Path(directory) if directory else model_dir())


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
    """A model artifact in memory: metadata, image gate and the runtime that runs it:
    the LiteRT export where the artifact has one (and the runtime is installed),
    the Keras model otherwise (or when SKINCARE_RUNTIME = "keras")."""

    def __init__(self, directory: Path, runtime: str | None = None):
        self.directory = directory
        self.metadata = read_metadata(directory)
        self.malignant_index = int(self.metadata.get("class_names", list(CLASS_NAMES)).index("malignant"))
        self.image_size = image_size_of(self.metadata)  # what ml.preprocessing squashes a photo to for this model
        try:
            self.views = tta.views_of(self.metadata)
            self.use_calibration(self.metadata)
        except ValueError as exc:
            raise ModelUnavailable(f"No model available: {directory / METADATA_FILENAME}: {exc}") from exc
        self.lock = threading.Lock()

        self.gate = Gate.load(directory, self.metadata)
        wanted = runtime or getattr(settings, "SKINCARE_RUNTIME", "auto") or "auto"
        self.runtime = None
        if wanted in ("auto", "litert") and self.metadata.get("litert"):
            try:
                self.runtime = LiteRTRuntime(directory, self.metadata, self.malignant_index, self.views)
            except (ImportError, OSError, ValueError, KeyError) as exc:
                if wanted == "litert":
                    raise ModelUnavailable(
                        f"No model available: the LiteRT export could not be loaded ({exc})"
                    ) from exc
        if self.runtime is None:
            self.runtime = KerasRuntime(directory, self.metadata, self.malignant_index, self.views)
        self.cam_layer = self.runtime.cam_layer

    def use_calibration(self, metadata: dict[str, Any], check_close_calls: bool | None = None) -> None:
        """Serve with this metadata's calibration (the same weights: ml.training.calibration refits it in place).

        close_call_fit is the model's close-call check (ml/serving/tta.py), or None; close_call is the check as
        applied: where check_close_calls says, by default where settings.SKINCARE_CLOSE_CALL_CHECK is on.
        A ValueError where the check in the metadata is malformed."""
        if check_close_calls is None:
            check_close_calls = bool(getattr(settings, "SKINCARE_CLOSE_CALL_CHECK", False))
        self.metadata = metadata
        self.close_call_fit = tta.close_call_check(metadata)
        self.close_call = self.close_call_fit if check_close_calls else None

    def analyse(self, batch, views=None):
        """(raw malignant probabilities, gate features or None, Grad-CAM maps or None): each image
        scored in the model's own views, or in `views` (ml/serving/tta.py's names) where given."""
        with self.lock:  # one inference at a time per process: neither runtime is re-entrant
            return self.runtime.analyse(batch, views)

    def settle(self, x, raw: float, cam=None) -> tuple[float, bool, int, Any]:
        """From the first look at one preprocessed image x (its raw score and Grad-CAM map, from
        analyse): (calibrated probability, near a boundary, views averaged, map), as served.

        Where the first look is close to a boundary and the model has a close-call check, it looks
        again in all eight views and answers with their average, calibrated for it. The map stays the
        first look's, the photo as it is: averaged over the eight views, the malignant class's maps
        cancel where the views disagree (on the shipped model, twice as many PH2 maps came out empty
        and the heat inside PH2's melanomas fell from 0.68 to 0.59), so the average shows less of
        where the model looked."""
        probability = self.calibrate(raw)
        near = is_near_boundary(
            probability, float(self.metadata["threshold"]), self.metadata.get("uncertain_threshold"), self.metadata
        )
        if not (near and self.close_call):
            return probability, near, 1, cam
        raw_all = self.analyse(np.asarray(x)[None], self.close_call["views"])[0]
        return self.calibrate(float(raw_all[0]), self.close_call), True, len(self.close_call["views"]), cam

    def heat_map(self, x, raw: float, cam=None, method: str | None = None):
        """The map served with a result: the first look's Grad-CAM `cam`, or, where `method` (by default
        settings.SKINCARE_HEATMAP) says "occlusion", how far the score `raw` (the first look's raw
        probability) falls with each patch of the preprocessed image x covered (ml/serving/heatmap.py)."""
        method = method or heatmap_method()
        if method not in heatmap.HEATMAP_METHODS:
            raise ValueError(f"unknown heat map {method!r}: choose one of {', '.join(heatmap.HEATMAP_METHODS)}")
        if method == "gradcam":
            return cam
        covered = heatmap.occluded_images(x)
        scores = np.concatenate([self.analyse(covered[i : i + 16])[0] for i in range(0, len(covered), 16)])
        return heatmap.occlusion_map(float(logit(raw)), logit(scores))

    def feature_activity(self, batch) -> np.ndarray:
        """(N, h, w): the Grad-CAM layer's activations summed over its channels, image as it is (no views).

        Where the network's last features are at all, whichever class they speak for: the
        reference that evaluate_gradcam sets beside the malignant class's map."""
        if self.cam_layer is None:
            raise ValueError("this model has no feature layer for Grad-CAM")
        with self.lock:
            return self.runtime.feature_activity(batch)

    def calibrate(self, raw: float, fit: dict | None = None) -> float:
        """The model's calibration of a raw score, or `fit`'s (temperature, logit_offset) where given."""
        fit = fit or self.metadata
        return calibrated_probability(raw, fit.get("temperature", 1.0), fit.get("logit_offset", 0.0))


_loaded: LoadedModel | None = None
_load_lock = threading.Lock()


def heatmap_method() -> str:
    """The heat map a new result gets: settings.SKINCARE_HEATMAP (ml/serving/heatmap.py), "gradcam" unless set."""
    return getattr(settings, "SKINCARE_HEATMAP", "gradcam")


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


def _loaded_for(directory: Path | None, runtime: str | None = None) -> LoadedModel:
    if runtime or (directory is not None and Path(directory) != model_dir()):
        return LoadedModel(Path(directory or model_dir()), runtime)
    return get_model()


def predict_many(sources, directory: Path | None = None, batch_size: int = 32, runtime: str | None = None):
    """Calibrated probabilities of malignancy for many images (evaluation, benchmarks).

    Uses the same preprocessing and calibration as :func:`predict`, in batches; no gate."""
    probabilities, metadata = predict_orientations(sources, directory, batch_size, runtime, tta.IDENTITY)
    return probabilities[:, 0], metadata


def predict_orientations(
    sources,
    directory: Path | None = None,
    batch_size: int = 32,
    runtime: str | None = None,
    orientations: tuple[str, ...] = tta.ALL_VIEWS,
):
    """(N, len(orientations)) calibrated probabilities: each image turned or flipped as each of
    ml.serving.tta's view names says before the model sees it, as if the photo had been taken that way
    (a model with test-time views of its own still averages them on top). Column "id" is
    :func:`predict_many`'s."""
    probabilities, _near, metadata, _checked = served_scores(sources, directory, batch_size, runtime, orientations)
    return probabilities, metadata


def served_scores(
    sources,
    directory: Path | None = None,
    batch_size: int = 32,
    runtime: str | None = None,
    orientations: tuple[str, ...] = tta.ALL_VIEWS,
):
    """:func:`predict_orientations`, with whether each result was close to a boundary at first look
    (the "close to a boundary" note; where the model checks close calls, the ones it checked):
    (probabilities (N, V), close (N, V), metadata, whether close calls were checked)."""
    loaded = _loaded_for(directory, runtime)
    probabilities, near = served_orientations(loaded, sources, batch_size, orientations)
    return probabilities, near, loaded.metadata, loaded.close_call is not None


def served_orientations(
    loaded: LoadedModel, sources, batch_size: int = 32, orientations: tuple[str, ...] = tta.ALL_VIEWS
) -> tuple[np.ndarray, np.ndarray]:
    """((N, V) calibrated probabilities as served, (N, V) whether each was close to a boundary at
    first look) of `loaded` on each image turned as each view name says: :meth:`LoadedModel.settle`
    on arrays. Where the model checks close calls, the images that need it are scored again in all
    eight views; the eight views of a turned image are the same eight, so one average serves every
    orientation of the image."""
    if not isinstance(sources, np.ndarray):
        sources = list(sources)
    raw = raw_orientations(loaded, sources, batch_size, orientations)
    probabilities = np.array([[loaded.calibrate(value) for value in row] for row in raw], dtype=float).reshape(
        raw.shape
    )

    meta = loaded.metadata
    margin = float((meta.get("boundary_margin") or {}).get("logit") or 0.0)
    near = near_boundary(probabilities, float(meta["threshold"]), meta.get("uncertain_threshold"), margin)
    rows = np.flatnonzero(near.any(axis=1))
    if loaded.close_call and rows.size:
        again = sources[rows] if isinstance(sources, np.ndarray) else [sources[i] for i in rows]
        raw_all = raw_orientations(loaded, again, batch_size, tta.IDENTITY, views=loaded.close_call["views"])[:, 0]
        averaged = np.array([loaded.calibrate(value, loaded.close_call) for value in raw_all])
        probabilities[rows] = np.where(near[rows], averaged[:, None], probabilities[rows])
    return probabilities, near


def raw_orientations(
    loaded: LoadedModel, sources, batch_size: int = 32, orientations: tuple[str, ...] = tta.ALL_VIEWS, views=None
) -> np.ndarray:
    """(N, len(orientations)) raw malignant probabilities, before calibration, of `loaded` on each image
    turned or flipped as each view name says. sources: image sources ml.preprocessing reads, or
    preprocessed (N, size, size, 3) arrays. Column "id" is what serving computes for the image at first
    look. views: the test-time views each orientation is scored in (default: the model's own)."""
    size = loaded.image_size
    if not isinstance(sources, np.ndarray):
        sources = list(sources)
    rows: list = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        batch = (
            np.asarray(chunk, dtype=np.float32)
            if isinstance(sources, np.ndarray)
            else np.stack([preprocessing.preprocess(s, size) for s in chunk])
        )
        columns = [
            [float(v) for v in loaded.analyse(np.ascontiguousarray(tta.transform(batch, view)), views)[0]]
            for view in orientations
        ]
        rows.extend(zip(*columns))
    return np.array(rows, dtype=float).reshape(len(sources), len(orientations))


def predict(image: preprocessing.ImageSource, *, use_gate: bool = True) -> Result:
    """Score one image: calibrated probability, outcome, verdict and heat map (Grad-CAM or occlusion).

    An image the gate refuses gets outcome "not_assessed" with the reason, and no
    probability: a number for a photo of a cat would only mislead."""
    started = time.perf_counter()
    loaded = get_model()
    meta = loaded.metadata
    size = loaded.image_size
    threshold = float(meta["threshold"])
    uncertain = meta.get("uncertain_threshold")
    version = str(meta.get("model_version", "unknown"))
    try:
        x = preprocessing.preprocess(image, size)
        raw, features, cam = loaded.analyse(x[None, ...])
    except Exception as exc:
        raise PredictionFailed(f"{type(exc).__name__}: {exc}") from exc

    def elapsed():
        return (time.perf_counter() - started) * 1000.0

    measures = {}
    if use_gate and loaded.gate is not None:
        decision = loaded.gate.decide(x, None if features is None else features[0])
        measures = decision.measures
        if not decision.accepted:
            return Result(
                None,
                None,
                threshold,
                version,
                elapsed(),
                outcome="not_assessed",
                uncertain_threshold=uncertain,
                reason=decision.reason,
                gate_measures=measures,
            )
    try:
        probability, near, views_averaged, cam_served = loaded.settle(x, float(raw[0]), None if cam is None else cam[0])
        method = heatmap_method()
        cam_served = loaded.heat_map(x, float(raw[0]), cam_served, method)
    except Exception as exc:
        raise PredictionFailed(f"{type(exc).__name__}: {exc}") from exc
    return Result(
        near_boundary=near,
        views_averaged=views_averaged,
        probability_malignant=probability,
        label="malignant" if probability >= threshold else "benign",
        threshold=threshold,
        model_version=version,
        elapsed_ms=elapsed(),
        outcome=outcome_for(probability, threshold, uncertain),
        uncertain_threshold=uncertain,
        heatmap=None if cam_served is None else normalise_cam(cam_served),
        heatmap_method=method,
        gate_measures=measures,
    )
