"""One model from several: the average of the weights of runs fine-tuned from the same start.

Runs of train_model that differ only in --finetune-seed share the split, the cached views
and phase 1's head, so they begin fine-tuning from the same weights. Networks fine-tuned
from one pretrained start tend to stay in one basin of the loss (Neyshabur et al. 2020,
"What is being transferred in transfer learning?"), where the average of their weights is
a working network too, and often a better one than each ("model soups", Wortsman et al.
2022): an ensemble's gain at one model's size and speed. Whether it is better here is for
the validation split to say; the average is calibrated and reported like any trained model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .calibration import calibrate_and_report, training_prior
from .classifier import METADATA_FILENAME, MODEL_FILENAME
from .splits import SPLITS_FILENAME

# Settings in which runs may differ and still be averaged: fine-tuning's seed, length, mixup and batches'
# malignant share (phase 2 alone: phase 1's head, the start of fine-tuning, is the same), and how the
# dataset's folder was spelt (the data itself is compared: the same counts and held-out images).
MAY_DIFFER = {"finetune_seed", "finetune_epochs", "patience", "dataset", "mixup", "malignant_share"}
# What a source's metadata passes on to the average (the rest is fitted again).
INHERITED = ("backbone", "class_names", "image_size", "preprocessing", "data", "training", "cam_layer")


class SoupError(ValueError):
    """Models that cannot be averaged, said in words a person can act on."""


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    for name in (MODEL_FILENAME, METADATA_FILENAME, SPLITS_FILENAME):
        if not (folder / name).is_file():
            raise SoupError(f"{folder}: no {name} (average_models needs folders written by train_model)")
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return json.loads((folder / METADATA_FILENAME).read_text()), metrics, (folder / SPLITS_FILENAME).read_text()


def _recipe(meta: dict[str, Any]) -> dict[str, Any]:
    """The training settings that must agree (a setting the metadata lacks compares as its default)."""
    from .training import training_settings

    return {k: v for k, v in training_settings(meta).items() if k not in MAY_DIFFER}


def check_compatible(folders: list[Path]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(metadata, metrics) of each folder, once they are known to share what averaging needs:
    the same held-out images, data seed, backbone and recipe up to MAY_DIFFER."""
    if len(folders) < 2:
        raise SoupError("average_models needs at least two model folders")
    if len({f.resolve() for f in folders}) < len(folders):
        raise SoupError("the same model folder is named twice")
    read = [_read(f) for f in folders]
    first_meta, _, first_splits = read[0]
    recipe = _recipe(first_meta)
    for folder, (meta, _, splits) in zip(folders[1:], read[1:]):
        if json.loads(splits) != json.loads(first_splits):
            raise SoupError(f"{folder} held out other images than {folders[0]} (splits.json differ): "
                            "only runs on the same split can be averaged")
        data, first_data = ({k: v for k, v in m.get("data", {}).items() if k != "dataset"} for m in (meta, first_meta))
        if data != first_data:
            raise SoupError(f"{folder} was trained on other data than {folders[0]} (metadata.json's data differ)")
        for key in ("backbone", "class_names", "image_size"):
            if meta.get(key) != first_meta.get(key):
                raise SoupError(f"{folder}: {key} {meta.get(key)!r} differs from {folders[0]}'s {first_meta.get(key)!r}")
        other = _recipe(meta)
        differing = sorted(k for k in set(recipe) | set(other) if recipe.get(k) != other.get(k))
        if differing:
            raise SoupError(f"{folder} was trained with other settings than {folders[0]} ({', '.join(differing)}): "
                            f"runs must differ only in {', '.join(sorted(MAY_DIFFER))} to start fine-tuning "
                            "from the same weights")
    return [(meta, metrics) for meta, metrics, _ in read]


def averaged_weights(weight_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of each variable over the models (BatchNormalization's statistics too)."""
    shapes = [[w.shape for w in weights] for weights in weight_lists]
    if any(s != shapes[0] for s in shapes[1:]):
        raise SoupError("the models' variables differ in number or shape: they are not the same network")
    return [np.mean([np.asarray(weights[i], dtype=np.float64) for weights in weight_lists], axis=0)
            .astype(weight_lists[0][i].dtype) for i in range(len(weight_lists[0]))]


def average_models(dataset, folders, output, data_format: str | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Average the models in `folders` into `output`: weights, then the image gate, the LiteRT export,
    the calibration and thresholds (on the validation split, as served) and the figures, as train_model
    does for a model it trained."""
    from .datasets import read_dataset
    from .evaluation import plot_history
    from .layers import load_keras_model
    from .splits import held_out, recorded_splits
    from .training import new_model_metadata, save_artifact

    folders = [Path(f) for f in folders]
    output = Path(output)
    if output.resolve() in {f.resolve() for f in folders}:
        raise SoupError(f"{output} is one of the models being averaged: write the average to another folder")
    sources = check_compatible(folders)
    held = recorded_splits(folders[0])
    report = read_dataset(dataset, data_format, atypical_is_malignant=sources[0][0].get("training", {}).get(
        "atypical_is_malignant", False))
    train, val, test = held_out(report.samples, held)
    if len(val) != len(held["validation"]) or len(test) != len(held["test"]):
        raise SoupError(f"{dataset} does not hold all of the models' validation and test images: "
                        "is it the dataset they were trained on?")

    log(f"averaging the weights of {len(folders)} models: {', '.join(str(f) for f in folders)}")
    models = [load_keras_model(f / MODEL_FILENAME) for f in folders]
    model = models[0]
    model.set_weights(averaged_weights([m.get_weights() for m in models]))

    first = sources[0][0]
    backbone = first.get("backbone", "efficientnet-lite0")
    described = [{"folder": str(f), "model_version": meta.get("model_version"),
                  "finetune_seed": meta.get("training", {}).get("finetune_seed") or meta.get("training", {}).get("seed"),
                  "finetune_epochs": meta.get("training", {}).get("finetune_epochs"),
                  "validation_auc": (meta.get("calibration_fit") or {}).get("validation_auc")
                  or (metrics.get("phases") or {}).get("validation_auc_finetuned")}
                 for f, (meta, metrics) in zip(folders, sources)]
    metadata = {
        **new_model_metadata(backbone),
        **{k: first[k] for k in INHERITED if k in first},
        "averaged_from": described,
    }
    save_artifact(output, model, metadata, train, val, test, export=backbone.startswith("efficientnet-lite"), log=log)
    histories = {f"run {i + 1}": metrics["history"] for i, (_, metrics) in enumerate(sources) if metrics.get("history")}
    if histories:
        epochs = first.get("training", {}).get("epochs")
        plot_history(histories, output, phases=[epochs] if epochs else None)
    timings = [metrics.get("timing_seconds", {}).get("total") for _, metrics in sources]
    results = {"averaged_from": described,
               "timing_seconds": {"total_of_runs": round(sum(t for t in timings if t), 1), "runs": timings,
                                  "machine": sources[0][1].get("timing_seconds", {}).get("machine")}}
    if histories:
        results["histories"] = histories
    return calibrate_and_report(
        output, np.array([s.label for s in val]), [s.path for s in val], training_prior(first),
        fitted_by=f"manage.py average_models {dataset} " + " ".join(str(f) for f in folders),
        y_test=np.array([s.label for s in test]), test_images=[s.path for s in test], results=results, log=log)
