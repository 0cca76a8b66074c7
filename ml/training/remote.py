"""Step 2 of training on a GPU machine that has no TensorFlow, no Django and no internet
(`bash ml/gpu_train.sh`, docs/training.md): the same trainer (ml.training.loop) under Keras's JAX
backend, on the bundle that `manage.py prepare_accelerated` wrote here.

    python -m ml.training.remote --bundle DIR [DIR ...] --output OUT [--finetune-epochs N ...]

Writes OUT/run.json (the settings, the record of both phases, the machine) and OUT/weights.npz;
`manage.py import_model OUT --dataset DATASET` finishes the model here as train_model does.
The test images never travel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from ml.artifact import IMAGE_SIZE
from ml.preprocessing import preprocess_uint8
from ml.training.batches import augmentation_pool
from ml.training.config import TrainConfig

MANIFEST = "manifest.json"
RUN = "run.json"
WEIGHTS = "weights.npz"
# Settings a run may change on the command line (the split's, seed and limit, come from the bundle).
OVERRIDABLE = (
    "padding",
    "image_size",
    "epochs",
    "learning_rate",
    "finetune_epochs",
    "finetune_learning_rate",
    "patience",
    "finetune_seed",
    "batch_size",
)


class BundleError(ValueError):
    """A bundle or a run folder that cannot be used, said in words a person can act on."""


def load_bundle(bundles: list[Path], log=print, size: int = IMAGE_SIZE):
    """(manifest, x_train, y_train, x_val, y_val) from one or more bundle folders (the parts may have
    travelled separately: the manifest is read from the first folder that has one)."""
    manifest = None
    found: dict[str, Path] = {}
    for folder in bundles:
        if manifest is None and (folder / MANIFEST).is_file():
            manifest = json.loads((folder / MANIFEST).read_text())
        for sub in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
            for f in sub.iterdir():
                if f.is_file() and f.name != MANIFEST:
                    found[f.name] = f
    if manifest is None:
        raise BundleError(f"no {MANIFEST} in {', '.join(map(str, bundles))}")
    missing = [n for n, _ in manifest["train"] + manifest["validation"] if n not in found]
    if missing:
        raise BundleError(
            f"{len(missing)} of the bundle's images are missing (first: {missing[0]}): did every part travel?"
        )
    started = time.time()
    x_train = np.stack([preprocess_uint8(found[n], size) for n, _ in manifest["train"]])
    x_val = np.stack([preprocess_uint8(found[n], size) for n, _ in manifest["validation"]])
    log(f"decoded {len(x_train) + len(x_val)} images through ml.preprocessing in {time.time() - started:.0f} s")
    y_train = np.array([label for _, label in manifest["train"]])
    y_val = np.array([label for _, label in manifest["validation"]])
    return manifest, x_train, y_train, x_val, y_val


def config_for(manifest: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise BundleError(f"cannot change {', '.join(unknown)} on the GPU machine (only {', '.join(OVERRIDABLE)})")
    return TrainConfig(
        datasets=manifest["datasets"],
        format=manifest.get("format"),
        seed=manifest["seed"],
        limit=manifest.get("limit"),
        **overrides,
    )


def run(
    bundles, output, overrides: dict[str, Any], weights: str | None = None, workers: int | None = None, log=print
) -> dict[str, Any]:
    started = time.time()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    size = overrides.get("image_size", IMAGE_SIZE)
    manifest, x_train, y_train, x_val, y_val = load_bundle([Path(b) for b in bundles], log=log, size=size)
    config = config_for(manifest, overrides)
    if weights:
        config.weights = weights
    # The pool forks before Keras starts its backend's threads (a fork after them can deadlock),
    # which is why the trainer is imported here and not at the top.
    pool = augmentation_pool(x_train, workers)
    try:
        import keras

        from ml.training.loop import fit_network

        sources = np.array(manifest.get("train_sources") or ["one"] * len(y_train))
        net, record = fit_network(config, x_train, y_train, x_val, y_val, sources=sources, pool=pool, log=log)
    finally:
        if pool is not None:
            pool.terminate()
    np.savez(output / WEIGHTS, *net.model.get_weights())
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Keras {keras.__version__} on {keras.backend.backend()}"
    try:
        import jax

        machine += f", {jax.devices()[0].device_kind}"
    except Exception:  # a description only: never fail a run for it
        pass
    summary = {
        "manifest": manifest,
        "config": asdict(config),
        "record": record,
        "machine": machine,
        "seconds": round(time.time() - started, 1),
    }
    (output / RUN).write_text(json.dumps(summary))
    log(f"wrote {output}: validation AUC {record['phases']}; {summary['seconds']:.0f} s on {machine}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.training.remote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", nargs="+", required=True, help="the folder(s) prepare_accelerated wrote")
    parser.add_argument("--output", required=True)
    parser.add_argument("--weights", help="the Lite0 ImageNet checkpoint (default: the installed package's)")
    parser.add_argument("--workers", type=int, help="augmentation processes (default: the CPUs but one, at most 16)")
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    for name in OVERRIDABLE:
        kind = int if "int" in types[name] else float if "float" in types[name] else str
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in OVERRIDABLE if getattr(args, k) is not None}
    try:
        run(
            args.bundle,
            args.output,
            overrides,
            weights=args.weights,
            workers=args.workers,
            log=lambda m: print(m, flush=True),
        )
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
