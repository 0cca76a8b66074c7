"""`manage.py train_model`: from a dataset folder to a complete model folder.

1. Read the dataset (ml.data), split it by lesion, seeded and stratified; HAM10000's test split is
   the ISIC 2018 test set.
2. Decode every image through ml.preprocessing.preprocess (the serving path), cached on disk.
3. Train (ml.training.loop: the head on the frozen backbone, then every block).
4. Save the model, its metadata and its splits, fit the image gate on the training images, export
   the LiteRT runtime that serves it (ml.training.export).
5. On the validation split only, from the saved folder's scores as served: the prior correction,
   the temperature, the threshold for sensitivity >= 0.90 and the "uncertain" band
   (ml.training.calibration); then the test split is scored once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ml.artifact import CLASS_NAMES, IMAGE_SIZE, METRICS_FILENAME, MODEL_FILENAME, SPLITS_FILENAME, write_metadata
from ml.data.datasets import read_dataset
from ml.data.splits import split_samples
from ml.preprocessing import preprocess_uint8
from ml.reporting import metrics
from ml.training.batches import augmentation_pool
from ml.training.calibration import calibrate_and_report
from ml.training.checkpoints import Checkpoints
from ml.training.config import TrainConfig
from ml.training.export import compress_keras_file, export_litert
from ml.training.gate_fitting import fit_for_model
from ml.training.loop import fit_network

Log = Callable[[str], None]

# Part of the image cache's key: caches written by an older preprocessing are not reused.
IMAGE_CACHE_FORMAT = "full-decode"


# What every model's metadata says of its input.
def preprocessing_description(image_size: int) -> str:
    return (
        "ml.preprocessing.preprocess: decode every pixel with Pillow, EXIF orientation, RGB, "
        f"squash to {image_size}x{image_size} (bilinear), a dermoscope's dark corners painted "
        "with skin colour, float 0..255; the model scales its own input"
    )


# How the thresholds and calibration are chosen (ml.training.calibration fits them): said in every model's metadata.
CALIBRATION_RULES = {
    "threshold_rule": f"sensitivity >= {metrics.SENSITIVITY_TARGET} on the validation split, as high as that allows "
    "(halfway to the next lower validation score)",
    "uncertain_rule": f"flags (needs a doctor + uncertain) >= {metrics.FLAG_TARGET} of malignant on the validation split",
    "calibration": "p = sigmoid((logit(p_raw) + logit_offset) / temperature): Platt scaling, offset and temperature "
    "both fitted on the validation split (from the offset that undoes the balanced training prior, prior_offset), "
    "on the scores of the model as served",
}


def cache_root(config: TrainConfig) -> Path:
    root = Path(
        config.cache_dir or os.environ.get("SKINCARE_CACHE_DIR") or Path(tempfile.gettempdir()) / "skincare-cache"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


def load_images(paths: list[Path], cache: Path | None = None, log: Log = print, size: int = IMAGE_SIZE) -> np.ndarray:
    """All images through the serving preprocessing, rounded to uint8 (N, size, size, 3), cached on disk."""
    key = hashlib.sha1(("\n".join(str(p) for p in paths) + f"|{size}|{IMAGE_CACHE_FORMAT}").encode()).hexdigest()[:16]
    cached = cache / f"images-{key}.npy" if cache else None
    if cached and cached.exists():
        return np.load(cached)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    started = time.time()
    for i, path in enumerate(paths):
        out[i] = preprocess_uint8(path, size)
        if (i + 1) % 1000 == 0:
            log(f"  decoded {i + 1}/{len(paths)} images ({time.time() - started:.0f} s)")
    if cached:
        np.save(cached, out)
    return out


def subsample(samples, n: int, seed: int = 42):
    """A seeded subset of n samples with the same malignant share (at least 2 per class)."""
    rng = random.Random(seed)
    by_label = {0: [s for s in samples if s.label == 0], 1: [s for s in samples if s.label == 1]}
    n_mal = min(len(by_label[1]), max(2, round(n * len(by_label[1]) / max(len(samples), 1))))
    picked = rng.sample(by_label[1], n_mal) + rng.sample(by_label[0], min(len(by_label[0]), max(n - n_mal, 2)))
    keep = {id(s) for s in picked}
    return [s for s in samples if id(s) in keep]


def split_source(samples, config: TrainConfig, seed: int):
    """One source's train / validation / test samples and a note. HAM10000 with the ISIC 2018 test images:
    the challenge's own test set is the test split, and HAM10000 is split by lesion into train/validation.
    Any other source: split by its groups (lesion or patient), seeded and stratified, with a held-out test
    part that nothing chooses on."""
    official_test = [s for s in samples if s.source == "isic2018_test"]
    if official_test and len(official_test) < len(samples):
        rest = [s for s in samples if s.source != "isic2018_test"]
        val_share = config.val_fraction / (1 - config.test_fraction)
        train, val, _ = split_samples(rest, (1 - val_share, val_share, 0.0), seed=seed)
        return train, val, official_test, "test = the ISIC 2018 Task 3 test set, the rest split by lesion"
    train, val, test = split_samples(
        samples, (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction), seed=seed
    )
    return train, val, test, "split by group (lesion or patient), stratified"


def split_for_training(reports, config: TrainConfig):
    """(train, validation, test, note): each dataset split by its own groups (split_source), then pooled.
    With --limit, a stratified subset of that many images of each dataset."""
    parts, notes = ([], [], []), []
    for report in reports:
        samples = list(report.samples)
        if config.limit:
            samples = subsample(samples, config.limit, seed=config.seed)
        split = split_source(samples, config, config.seed)
        for pooled, part in zip(parts, split[:3]):
            pooled.extend(part)
        notes.append(f"{report.root.name}: {split[3]}")
    return parts[0], parts[1], parts[2], "; ".join(notes)


def source_of(sample) -> str:
    """The source a figure is reported under: HAM10000's own images and its ISIC 2018 test set are one."""
    return "ham10000" if sample.source == "isic2018_test" else sample.source


def new_model_metadata(backbone: str, image_size: int = IMAGE_SIZE) -> dict[str, Any]:
    """What every new model folder's metadata.json starts with (train_model, import_model)."""
    now = dt.datetime.now(dt.UTC)
    name = backbone.removeprefix("efficientnet-")
    return {
        "model_version": now.strftime(f"{name}-%Y%m%d-%H%M"),
        "created_at": now.isoformat(timespec="seconds"),
        "backbone": backbone,
        "class_names": list(CLASS_NAMES),
        "image_size": image_size,
        "preprocessing": preprocessing_description(image_size),
        **CALIBRATION_RULES,
    }


def machine_description() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Keras {keras.__version__} on {keras.backend.backend()}"


def save_artifact(output: Path, model, metadata: dict[str, Any], train_s, val_s, test_s, log: Log = print) -> None:
    """Write a model folder before its calibration: model.keras, metadata.json, splits.json (which images
    were held out, so evaluate_model --split can score exactly them), the image gate fitted on the
    training images, and the LiteRT export that serves it."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    # The same layers in a model that was never compiled: phase 2's optimizer state (Adam's moments and
    # moving averages, three times the weights) has no place in the served file.
    keras.Model(model.inputs, model.outputs, name=model.name).save(output / MODEL_FILENAME)
    compress_keras_file(output / MODEL_FILENAME)
    write_metadata(output, metadata)
    splits = {
        "validation": sorted(str(s.path.name) for s in val_s),
        "test": sorted(str(s.path.name) for s in test_s),
        # each held-out image's source, for figures per source
        "sources": {
            name: {s.path.name: source_of(s) for s in part} for name, part in (("validation", val_s), ("test", test_s))
        },
    }
    (output / SPLITS_FILENAME).write_text(json.dumps(splits))
    fit_for_model(
        output,
        [s.path for s in train_s],
        [s.path for s in val_s],
        log=log,
        train_sources=[source_of(s) for s in train_s],
        val_labels=[s.label for s in val_s],
        val_sources=[source_of(s) for s in val_s],
    )
    export_litert(output, log=log)


def finish_artifact(
    output: Path,
    model,
    record: dict[str, Any],
    config: TrainConfig,
    reports,
    splits,
    *,
    fitted_by: str,
    trained_on: str,
    log: Log = print,
) -> dict[str, Any]:
    """Everything after the weights, the same for train_model and import_model: save, gate, export,
    calibrate on validation as served, score the test split once, write metrics.json."""
    train_s, val_s, test_s, split_note = splits
    y = {
        name: np.array([s.label for s in part])
        for name, part in (("train", train_s), ("validation", val_s), ("test", test_s))
    }
    by_source = {}
    for name, part in (("train", train_s), ("validation", val_s), ("test", test_s)):
        for sample in part:
            counts = by_source.setdefault(source_of(sample), {}).setdefault(name, {"n": 0, "n_malignant": 0})
            counts["n"] += 1
            counts["n_malignant"] += int(sample.label)
    metadata = {
        **new_model_metadata(config.backbone, config.image_size),
        "data": {
            "datasets": [str(d) for d in config.datasets],
            "formats": [r.format for r in reports],
            "split": split_note,
            "seed": config.seed,
            **{name: {"n": len(v), "n_malignant": int(v.sum())} for name, v in y.items()},
            "by_source": by_source,
            "training_views": {**record["training_views"], "prior": record["train_prior"]},
        },
        "training": {k: v for k, v in asdict(config).items() if k not in ("output", "cache_dir", "workers", "resume")},
        "trained_on": trained_on,
    }
    save_artifact(output, model, metadata, train_s, val_s, test_s, log=log)
    results = calibrate_and_report(
        output,
        y["validation"],
        [s.path for s in val_s],
        record["train_prior"],
        fitted_by=fitted_by,
        y_test=y["test"],
        test_images=[s.path for s in test_s],
        val_sources=[source_of(s) for s in val_s],
        test_sources=[source_of(s) for s in test_s],
        results={"phases": record["phases"]},
        history=record["history"],
        phases=[config.epochs] if config.finetune_epochs else None,
        log=log,
    )
    results["timing_seconds"] = {**record["seconds"], "machine": trained_on}
    (Path(output) / METRICS_FILENAME).write_text(json.dumps(results, indent=2))
    return results


def train(config: TrainConfig, log: Log = print) -> dict[str, Any]:
    started = time.time()
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    reports = [
        read_dataset(d, config.format, atypical_is_malignant=config.atypical_is_malignant) for d in config.datasets
    ]
    for report in reports:
        log(report.summary())
    splits = split_for_training(reports, config)
    train_s, val_s, test_s, split_note = splits
    y_train = np.array([s.label for s in train_s])
    y_val = np.array([s.label for s in val_s])
    log(
        f"split ({split_note}): train {len(train_s)} ({int(y_train.sum())} malignant), "
        f"validation {len(val_s)} ({int(y_val.sum())}), test {len(test_s)} ({sum(s.label for s in test_s)})"
    )
    if y_train.sum() == 0 or y_train.sum() == len(y_train) or y_val.sum() == 0 or y_val.sum() == len(y_val):
        raise ValueError("the training and validation splits each need benign and malignant images")
    cache = cache_root(config)
    log("decoding images through ml.preprocessing.preprocess ...")
    x_train = load_images([s.path for s in train_s], cache=cache, log=log, size=config.image_size)
    x_val = load_images([s.path for s in val_s], cache=cache, log=log, size=config.image_size)
    pool = augmentation_pool(x_train, config.workers) if config.workers else None
    try:
        sources = np.array([source_of(s) for s in train_s])
        checkpoints = Checkpoints(config.resume, config) if config.resume else None
        net, record = fit_network(
            config, x_train, y_train, x_val, y_val, sources=sources, pool=pool, checkpoints=checkpoints, log=log
        )
    finally:
        if pool is not None:
            pool.terminate()
    # with reading and decoding the images, and the training in earlier sessions of a resumed run
    record["seconds"]["total"] = round(time.time() - started + (record["seconds"].get("earlier_sessions") or 0.0), 1)
    results = finish_artifact(
        output,
        net.model,
        record,
        config,
        reports,
        splits,
        fitted_by="manage.py train_model",
        trained_on=machine_description(),
        log=log,
    )
    log(f"wrote {output} in {(time.time() - started) / 60:.1f} min")
    return results
