"""Training on a GPU machine, steps 1 and 3 (here); step 2 is ml.training.remote (there).

1. ``manage.py prepare_accelerated DATASET --output DIR``: the split that train_model makes (same
   seed, same code) as manifest.json, and the training and validation image files copied beside
   it in parts small enough to carry. The test images stay here: the GPU machine never sees them.
2. ``bash ml/gpu_train.sh ...`` there: ml.training.loop, the same trainer, under Keras on JAX.
3. ``manage.py import_model OUT --dataset DATASET --output DIR``: rebuild the network, load the
   run's weights, check that the run's split is the one train_model makes, then finish the model
   exactly as train_model does (ml.training.trainer.finish_artifact).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ml.data.datasets import read_dataset
from ml.model.network import Network
from ml.training.config import TrainConfig
from ml.training.loop import network_spec
from ml.training.remote import MANIFEST, RUN, WEIGHTS, BundleError
from ml.training.trainer import finish_artifact, source_of, split_for_training

Log = Callable[[str], None]


def prepare_bundle(
    datasets,
    output,
    seed: int = 42,
    parts: int = 2,
    data_format: str | None = None,
    limit: int | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """manifest.json and the training and validation images, copied into `parts` folders
    (limit: train_model's --limit, a stratified subset, for quick runs and tests)."""
    datasets = [str(d) for d in datasets]
    config = TrainConfig(datasets=datasets, format=data_format, seed=seed, limit=limit)
    reports = [read_dataset(d, data_format) for d in datasets]
    train, val, test, note = split_for_training(reports, config)
    names = [s.path.name for s in train + val]
    if len(set(names)) != len(names):
        raise BundleError(f"{', '.join(datasets)}: two images share a file name; the bundle keys images by name")
    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    manifest = {
        "datasets": datasets,
        "format": data_format,
        "seed": seed,
        "limit": limit,
        "split": note,
        "train": [[s.path.name, int(s.label)] for s in train],
        "train_sources": [source_of(s) for s in train],
        "validation": [[s.path.name, int(s.label)] for s in val],
        "test": sorted(s.path.name for s in test),
        "parts": [f"part{i + 1}" for i in range(parts)],
    }
    (output / MANIFEST).write_text(json.dumps(manifest))
    for i, sample in enumerate(train + val):
        part = output / manifest["parts"][i % parts]
        part.mkdir(exist_ok=True)
        shutil.copyfile(sample.path, part / sample.path.name)
    sizes = {p: sum(f.stat().st_size for f in (output / p).iterdir()) for p in manifest["parts"]}
    log(
        f"{output}: {len(train)} training and {len(val)} validation images ({note}); "
        + ", ".join(f"{p} {b / 1e6:.1f} MB" for p, b in sizes.items())
        + "; the test images stay here"
    )
    return manifest


def import_run(run_dir, datasets, output, data_format: str | None = None, log: Log = print) -> dict[str, Any]:
    """A served model folder from a GPU run, finished as train_model finishes its own."""
    run_dir, output = Path(run_dir), Path(output)
    if not (run_dir / RUN).is_file() or not (run_dir / WEIGHTS).is_file():
        raise BundleError(
            f"{run_dir}: no {RUN} and {WEIGHTS} (import_model reads the folder that ml/gpu_train.sh wrote)"
        )
    summary = json.loads((run_dir / RUN).read_text())
    manifest = summary["manifest"]
    # The split's settings are the bundle's: the run is checked against the split they make here.
    datasets = [str(d) for d in datasets]
    config = TrainConfig(
        **{
            **summary["config"],
            "datasets": datasets,
            "format": data_format,
            "output": str(output),
            "seed": manifest["seed"],
            "limit": manifest.get("limit"),
        }
    )
    reports = [read_dataset(d, data_format) for d in datasets]
    splits = split_for_training(reports, config)
    train, val, test, _ = splits
    if (
        [[s.path.name, int(s.label)] for s in train] != manifest["train"]
        or [[s.path.name, int(s.label)] for s in val] != manifest["validation"]
        or sorted(s.path.name for s in test) != manifest["test"]
    ):
        raise BundleError(
            f"{', '.join(datasets)} do not split into the run's training, validation and test images: "
            "was the run trained on these datasets?"
        )
    net = Network(network_spec(config))
    with np.load(run_dir / WEIGHTS) as stored:
        weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    expected = [tuple(w.shape) for w in net.model.get_weights()]
    if [tuple(w.shape) for w in weights] != expected:
        raise BundleError(f"{WEIGHTS} does not fit the network ({len(weights)} arrays, {len(expected)} expected)")
    net.model.set_weights(weights)
    log(f"imported {run_dir}: {summary['record']['phases']}, {summary['machine']}, {summary['seconds']:.0f} s")
    trained_on = f"{summary['machine']} (ml/gpu_train.sh)"
    record = {**summary["record"], "seconds": {**summary["record"]["seconds"], "total": summary["seconds"]}}
    return finish_artifact(
        output,
        net.model,
        record,
        config,
        reports,
        splits,
        fitted_by=f"manage.py import_model {run_dir} --dataset {' '.join(datasets)}",
        trained_on=trained_on,
        log=log,
    )
