"""Fine-tuning on an accelerator that has no TensorFlow, and bringing the result home.

train_model's full-scope recipe takes about 4 minutes an epoch on a 2-core CPU, so the runs
that might be better (more epochs, other learning rates) do not fit a working day there. A
GPU machine without TensorFlow runs the same network (ml.network, Keras alone) under Keras's
JAX backend (or PyTorch's) at seconds an epoch. Three steps:

1. ``python manage.py prepare_accelerated DATASET --output DIR`` (here): the split that
   train_model would make (same seed, same code), written as manifest.json, and the training
   and validation image files copied beside it, in parts small enough to carry. The test
   images stay here: the accelerator never sees them.
2. ``python -m ml.accelerated train --bundle DIR --weights LITE0.pth --output OUT`` (there;
   ``--lite2-weights LITE2.pth`` for recipes whose backbone is efficientnet-lite2):
   decode the images with ml.preprocessing (the serving path), train each recipe, validate
   the weights averaged over about the last epoch after every epoch, keep each run's best,
   and write runs.json (every run's settings, history and validation AUC) and the best
   runs' weights.
3. ``python manage.py import_model OUT --dataset DATASET --output DIR`` (here): rebuild the
   network, load a run's weights, check that the run's split is the one train_model makes,
   then fit the gate, export to LiteRT, calibrate on the validation split as served and
   score the test split, exactly as train_model ends.

Step 2's runs are chosen between on validation only; the test split is scored once, in step 3.

Augmentation runs on the accelerator machine's CPUs, not in the compiled training step: with
ml.network's Keras augmentation layers inside the step, Keras on JAX took about 1.2 s a step on
an H200 (66 s to compile), against 17 ms a step without them (measured 2026-11-27: one epoch
in 8 minutes). :func:`augment` draws the same kinds of change with the same ranges (flips, a
rotation, zoom and shift as one affine map with reflected edges, brightness, contrast,
saturation, hue, vignetting) in NumPy and SciPy, one image at a time, in a pool of processes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

MANIFEST = "manifest.json"
RUNS = "runs.json"


class AcceleratedError(ValueError):
    """A bundle or a run folder that cannot be used, said in words a person can act on."""


@dataclass
class Recipe:
    """One fine-tuning run: a short head-only phase on the frozen backbone (the original
    recipe's, on balanced augmented batches), then every block at a lower rate with cosine
    decay, validated on the weights averaged over about the last epoch."""
    name: str
    seed: int = 42
    head_epochs: int = 3
    head_learning_rate: float = 1e-3
    epochs: int = 40
    learning_rate: float = 1e-4
    batch_size: int = 32
    patience: int = 8
    dense_units: int = 256
    dropout: float = 0.3
    padding: str = "tf"  # Lite0's stride-2 padding: ml.backbone.PADDINGS (train_model --padding)
    colour_constancy: str = "none"  # the model's first layer: ml.backbone.COLOUR_CONSTANCY (train_model --colour-constancy)
    diagnosis_weight: float = 0.0  # train_model --diagnosis-weight: the training-only diagnosis head's loss weight
    backbone: str = "efficientnet-lite0"  # train_model --backbone: one of ml.backbone.LITE_BACKBONES
    mixup: float = 0.0  # train_model --mixup: phase 2's batches blended, weights from Beta(mixup, mixup); 0 = off
    extra: dict[str, Any] = field(default_factory=dict)


# Measured 2026-11-27 on an NVIDIA H200 with 16 CPUs (15 augmentation processes): about 6.7 s an epoch of
# fine-tuning, after 60 to 110 s for the three head epochs and compiling, so each of these runs takes under 3
# minutes and both fit the default 7-minute budget. There, on validation: symmetric padding, 15 epochs of
# cosine decay from 1e-4, seed 7: 0.935; the same with seed 11: 0.933; 30 epochs stopped by patience: 0.932
# (1e-4, batch 32), 0.929 (2e-4, batch 64). None is shipped: the best on validation scores PH2 at 0.874 as
# served, below the 0.90 the shipped model must keep (the four runs: 0.855 to 0.904, raw Keras scores; two
# CPU runs of train_model's recipe with symmetric padding: 0.925 and 0.847, so this is seed spread, README).
DEFAULT_RECIPES = [
    Recipe("sym-e15-s7", seed=7, epochs=15, learning_rate=1e-4, patience=6, padding="symmetric"),
    Recipe("sym-e15-s11", seed=11, epochs=15, learning_rate=1e-4, patience=6, padding="symmetric"),
]


# ---------------------------------------------------------------- step 1 (here)
def prepare_bundle(dataset, output, seed: int = 42, parts: int = 2, data_format: str | None = None,
                   limit: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """manifest.json and the training and validation images, copied into `parts` folders
    (limit: train_model's --limit, a stratified subset, for quick runs and tests)."""
    from .datasets import read_dataset
    from .training import TrainConfig, split_for_training

    config = TrainConfig(dataset=str(dataset), format=data_format, seed=seed, limit=limit)
    report = read_dataset(dataset, data_format)
    train, val, test, note = split_for_training(report, config)
    names = [s.path.name for s in train + val]
    if len(set(names)) != len(names):
        raise AcceleratedError(f"{dataset}: two images share a file name; the bundle keys images by name")
    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    manifest = {
        "dataset": str(dataset), "format": report.format, "seed": seed, "limit": limit, "split": note,
        "train": [[s.path.name, int(s.label)] for s in train],
        "validation": [[s.path.name, int(s.label)] for s in val],
        "train_diagnoses": [s.detail for s in train],  # for recipes with a diagnosis head
        "test": sorted(s.path.name for s in test),
        "parts": [f"part{i + 1}" for i in range(parts)],
    }
    (output / MANIFEST).write_text(json.dumps(manifest))
    for i, sample in enumerate(train + val):
        part = output / manifest["parts"][i % parts]
        part.mkdir(exist_ok=True)
        shutil.copyfile(sample.path, part / sample.path.name)
    sizes = {p: sum(f.stat().st_size for f in (output / p).iterdir()) for p in manifest["parts"]}
    log(f"{output}: {len(train)} training and {len(val)} validation images ({note}); "
        + ", ".join(f"{p} {b / 1e6:.1f} MB" for p, b in sizes.items()) + "; the test images stay here")
    return manifest


# ---------------------------------------------------------------- step 2 (the accelerator)
def load_bundle(bundles: list[Path], log=print):
    """(manifest, x_train, y_train, x_val, y_val) from one or more bundle folders (the parts may have
    travelled separately: the manifest is read from the first folder that has one)."""
    from multiprocessing import Pool

    from .preprocessing import preprocess_uint8

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
        raise AcceleratedError(f"no {MANIFEST} in {', '.join(map(str, bundles))}")
    missing = [n for n, _ in manifest["train"] + manifest["validation"] if n not in found]
    if missing:
        raise AcceleratedError(f"{len(missing)} of the bundle's images are missing (first: {missing[0]}): "
                               "did every part travel?")
    started = time.time()
    with Pool(min(16, os.cpu_count() or 1)) as pool:
        x_train = np.stack(pool.map(preprocess_uint8, [str(found[n]) for n, _ in manifest["train"]], chunksize=64))
        x_val = np.stack(pool.map(preprocess_uint8, [str(found[n]) for n, _ in manifest["validation"]], chunksize=64))
    log(f"decoded {len(x_train) + len(x_val)} images through ml.preprocessing in {time.time() - started:.0f} s")
    y_train = np.array([label for _, label in manifest["train"]])
    y_val = np.array([label for _, label in manifest["validation"]])
    return manifest, x_train, y_train, x_val, y_val


def network_config(recipe: Recipe, weights: str | None):
    """What ml.network.Network reads from a TrainConfig."""
    return SimpleNamespace(backbone=recipe.backbone, weights=weights, finetune_from_block=8,
                           dense_units=recipe.dense_units, dropout=recipe.dropout, padding=recipe.padding,
                           colour_constancy=recipe.colour_constancy, extra=recipe.extra)


def _affine_matrix(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) mapping output pixel coordinates to input ones: a rotation by up to half a
    turn, a zoom of 0.65..1.1 on each axis (below 1 magnifies), a shift of up to 8 % each way;
    ml.network's RandomRotation(0.5), RandomZoom((-0.35, 0.1)) and RandomTranslation(0.08) in one map."""
    angle = rng.uniform(-np.pi, np.pi)
    zoom = rng.uniform(0.65, 1.1, size=2)
    shift = rng.uniform(-0.08, 0.08, size=2) * size
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) @ np.diag(zoom)
    centre = np.array([(size - 1) / 2.0] * 2)
    return matrix, centre - matrix @ centre - shift


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One augmented view of an (H, W, 3) image in 0..255, as float32 in 0..255."""
    from scipy import ndimage

    x = image.astype(np.float32)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.5:
        x = x[::-1]
    matrix, offset = _affine_matrix(rng, x.shape[0])
    x = np.stack([ndimage.affine_transform(x[..., ch], matrix, offset, order=1, mode="mirror")
                  for ch in range(3)], axis=-1)
    x = x + rng.uniform(-0.25, 0.25) * 255.0  # brightness
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - mean) * rng.uniform(0.7, 1.3) + mean, 0.0, 255.0)  # contrast
    s = rng.uniform(0.3, 0.7)  # saturation (HSV's S) times s / (1 - s), 0.43..2.3, at most 1; hue and value kept
    value = x.max(axis=-1, keepdims=True)
    saturation = (value - x.min(axis=-1, keepdims=True)) / np.maximum(value, 1e-6)
    x = value - (value - x) * np.minimum(s / (1.0 - s), 1.0 / np.maximum(saturation, 1e-6))
    theta = rng.uniform(-0.04, 0.04) * 2.0 * np.pi  # hue: a rotation about the grey axis
    k = np.ones(3, dtype=np.float32) / np.sqrt(3.0)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=np.float32)
    rotation = np.eye(3) * np.cos(theta) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    x = np.clip(x @ rotation.T.astype(np.float32), 0.0, 255.0)
    if rng.random() < 0.5:  # vignette, as ml.network's RandomVignette
        h, w = x.shape[:2]
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        radius = np.sqrt(yy ** 2 + xx ** 2) / np.sqrt(2.0)
        x = x * (1.0 - rng.uniform(0.0, 0.6) * np.clip((radius - 0.55) / 0.45, 0.0, 1.0) ** 2)[..., None]
    return x.astype(np.float32)


_POOL_IMAGES: np.ndarray | None = None


def _set_pool_images(images):
    global _POOL_IMAGES
    _POOL_IMAGES = images


def _augmented_batch(indices, seed: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.clip(np.rint(augment(_POOL_IMAGES[i], rng)), 0, 255).astype(np.uint8) for i in indices])


def balanced_indices(y: np.ndarray, batch_size: int, seed: int):
    """Endless index batches, half benign and half malignant, each class reshuffled when used up
    (train_model's balancing, without tf.data)."""
    rng = np.random.default_rng(seed)
    pools = [np.flatnonzero(y == c) for c in (0, 1)]
    orders, positions = [rng.permutation(p) for p in pools], [0, 0]
    while True:
        picks = []
        for c, n in ((0, batch_size // 2), (1, batch_size - batch_size // 2)):
            take: list[int] = []
            while len(take) < n:
                if positions[c] == len(orders[c]):
                    orders[c], positions[c] = rng.permutation(pools[c]), 0
                k = min(n - len(take), len(orders[c]) - positions[c])
                take.extend(orders[c][positions[c]:positions[c] + k])
                positions[c] += k
            picks.extend(take)
        yield rng.permutation(np.array(picks))


def augmentation_pool(x: np.ndarray, workers: int | None = None):
    """Processes that hold the training images (forked, so shared rather than copied), or None to
    augment in this process (workers=0, or where processes are not forked). Start it before Keras
    is imported: forking a process that already runs JAX's or TensorFlow's threads can deadlock."""
    import multiprocessing

    workers = max(1, min(16, (os.cpu_count() or 2) - 1)) if workers is None else workers
    if not workers or multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        return None
    return multiprocessing.get_context("fork").Pool(workers, initializer=_set_pool_images, initargs=(x,))


class AugmentedBatches:
    """Balanced, augmented training batches, computed a few batches ahead by an augmentation_pool
    (or, without one, here). Iterating yields (images float32 0..255, one-hot labels)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, pool=None,
                 diagnoses: np.ndarray | None = None):
        """diagnoses: each image's diagnosis index, for a diagnosis head; the labels are then
        {"head": one-hot labels, "diagnosis": one-hot diagnoses}."""
        self.y, self.eye, self.pool = y, np.eye(2, dtype=np.float32), pool
        self.diagnoses = diagnoses
        self.eye_diagnoses = None if diagnoses is None else np.eye(int(diagnoses.max()) + 1, dtype=np.float32)
        self.indices, self.seed = balanced_indices(y, batch_size, seed), seed
        self.ahead = 2 * pool._processes if pool is not None else 1
        if pool is None:
            _set_pool_images(x)
        self.pending: list[tuple[np.ndarray, Any, int]] = []
        self.count = 0
        self.mixup = 0.0  # _train sets the recipe's for phase 2 alone, as train_model blends phase 2's batches

    def _blended(self, images: np.ndarray, labels, count: int):
        """Mixup as ml.training.mixup_batch does it: image i and its labels blended with image n-1-i's,
        weight ~ Beta(mixup, mixup) per image, drawn from the batch's own stream."""
        lam = np.random.default_rng((self.seed, count, 1)).beta(self.mixup, self.mixup, len(images))

        def blend(t: np.ndarray) -> np.ndarray:
            w = lam.reshape((-1,) + (1,) * (t.ndim - 1)).astype(np.float32)
            return w * t + (1.0 - w) * t[::-1]

        return blend(images), ({k: blend(v) for k, v in labels.items()} if isinstance(labels, dict) else blend(labels))

    def _submit(self):
        idx = next(self.indices)
        seed = (self.seed, self.count)  # each batch's own stream, whichever process draws it
        job = self.pool.apply_async(_augmented_batch, (idx, seed)) if self.pool else _augmented_batch(idx, seed)
        self.pending.append((idx, job, self.count))
        self.count += 1

    def __iter__(self):
        return self

    def __next__(self):
        while len(self.pending) < self.ahead:
            self._submit()
        idx, job, count = self.pending.pop(0)
        images = job.get(timeout=300) if self.pool else job  # a stuck worker fails the run, never hangs it
        images = images.astype(np.float32)
        labels = self.eye[self.y[idx]] if self.diagnoses is None else {
            "head": self.eye[self.y[idx]], "diagnosis": self.eye_diagnoses[self.diagnoses[idx]]}
        return self._blended(images, labels, count) if self.mixup else (images, labels)

    def generator(self):
        """The batches as a generator, the form Keras's fit takes them in on every backend."""
        while True:
            yield next(self)


def train_recipe(recipe: Recipe, x_train, y_train, x_val, y_val, weights: str | None, deadline: float,
                 pool=None, log=print, train_diagnoses: list[str] | None = None) -> dict[str, Any]:
    """One run; returns its record and (under "weights") the best averaged weights of the full model.
    A recipe with a diagnosis_weight also learns train_diagnoses (the manifest's) with a training-only
    head, as train_model --diagnosis-weight does; the weights returned are the served model's alone."""
    import keras

    from .network import Network, diagnosis_indices

    started = time.time()
    keras.utils.set_random_seed(recipe.seed)
    net = Network(network_config(recipe, weights))
    full = net.full_model()
    steps = max(1, len(y_train) // recipe.batch_size)
    diagnoses = None
    if recipe.diagnosis_weight > 0:
        found = diagnosis_indices(train_diagnoses)
        if found is None:
            raise AcceleratedError(f"{recipe.name}: a diagnosis_weight needs the bundle's train_diagnoses "
                                   "(HAM10000's dx; bundles written before 2026-11-28 lack them: make gpu-bundle again)")
        classes, diagnoses = found
        net.add_diagnosis_head(len(classes))
    batches = AugmentedBatches(x_train, y_train, recipe.batch_size, recipe.seed, pool=pool, diagnoses=diagnoses)
    return _train(recipe, net, full, batches, steps, x_val, y_val, deadline, started, log)


def _train(recipe, net, full, batches, steps, x_val, y_val, deadline, started, log):
    """train_recipe's two phases; `full` (image -> probabilities) is trained on augmented batches, or,
    where the network has a diagnosis head, the model with both outputs that shares its layers."""
    import keras

    from . import evaluation
    from .network import head_logs

    multitask = net.diagnosis is not None
    trained = net.training_model() if multitask else full

    def compile_for(optimizer):
        net.compile_for_training(trained, optimizer, ["accuracy"], recipe.diagnosis_weight)

    x_val = x_val.astype(np.float32)  # once, not at every epoch's validation

    def val_scores():
        return full.predict(x_val, batch_size=256, verbose=0)[:, 1]

    history: dict[str, list[float]] = {}

    def record(logs: dict[str, float]):
        for k, v in logs.items():
            history.setdefault(k, []).append(float(v))

    # Phase 1: the head alone, backbone frozen.
    net.set_all_trainable(False)
    compile_for(keras.optimizers.Adam(recipe.head_learning_rate))
    for epoch in range(recipe.head_epochs):
        logs = trained.fit(batches.generator(), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0).history
        p = val_scores()
        record({**head_logs({k: v[-1] for k, v in logs.items()}, multitask), "val_auc": evaluation.roc_auc(y_val, p),
                "val_loss": evaluation.log_loss(y_val, p), "val_accuracy": float(np.mean((p >= 0.5) == y_val))})
        log(f"[{recipe.name}] head epoch {epoch + 1}: validation AUC {history['val_auc'][-1]:.4f}")
    head_auc = history["val_auc"][-1] if history else None

    # Phase 2: every block (BatchNormalization stays in inference mode), weights averaged in the optimizer.
    net.set_all_trainable(True)
    batches.mixup = recipe.mixup
    decay = 1.0 - 1.0 / steps
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps * recipe.epochs, alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule, use_ema=True, ema_momentum=decay)
    compile_for(optimizer)
    best = {"auc": -np.inf, "epoch": None, "weights": None}
    state = {"wait": 0, "stopped": None}

    class Averaged(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            variables = trained.trainable_variables  # the optimizer's, in its order
            current = [np.array(v.numpy()) for v in variables]
            # Keras keeps use_ema's averages here, updated inside the compiled step (private, but Keras is
            # pinned to the same version on both machines, and the tests run this under TensorFlow).
            averaged = [np.array(a.numpy()) for a in optimizer._model_variables_moving_average]
            for v, avg in zip(variables, averaged):  # copies: an assigned buffer must not be shared
                v.assign(avg)
            p = val_scores()
            auc = evaluation.roc_auc(y_val, p)
            record({**head_logs(logs, multitask), "val_auc": auc,
                    "val_loss": evaluation.log_loss(y_val, p), "val_accuracy": float(np.mean((p >= 0.5) == y_val))})
            if auc > best["auc"]:
                best.update(auc=auc, epoch=epoch + 1, weights=[np.array(w) for w in full.get_weights()])
                state["wait"] = 0
            else:
                state["wait"] += 1
            for v, w in zip(variables, current):
                v.assign(w)
            log(f"[{recipe.name}] epoch {epoch + 1}: validation AUC of the averaged weights {auc:.4f} "
                f"(best {best['auc']:.4f}, epoch {best['epoch']}; {time.time() - started:.0f} s)")
            if state["wait"] >= recipe.patience:
                self.model.stop_training, state["stopped"] = True, "patience"
            elif time.time() > deadline:
                self.model.stop_training, state["stopped"] = True, "time"

    trained.fit(batches.generator(), steps_per_epoch=steps, epochs=recipe.epochs, shuffle=False, verbose=0,
                callbacks=[Averaged()])
    return {"recipe": asdict(recipe), "validation_auc": float(best["auc"]), "best_epoch": best["epoch"],
            "validation_auc_head": head_auc, "epochs_run": len(history.get("val_auc", [])) - recipe.head_epochs,
            "stopped": state["stopped"] or "epochs", "seconds": round(time.time() - started, 1),
            "history": history, "weights": best["weights"],
            "variables": [[v.path, list(v.shape)] for v in full.weights]}


def machine_description() -> str:
    import keras

    backend = keras.backend.backend()
    device = platform.machine()
    try:
        if backend == "jax":
            import jax

            device = f"{jax.devices()[0].device_kind} (jax {jax.__version__})"
        elif backend == "torch":
            import torch

            device = f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})" if torch.cuda.is_available() \
                else f"CPU (torch {torch.__version__})"
    except Exception as exc:  # a description only: never fail a run for it
        device = f"{device} ({exc.__class__.__name__})"
    return f"{device}, keras {keras.__version__} on {backend}, {os.cpu_count()} CPUs"


def checkpoints_for(recipes: list[Recipe], weights: str | dict[str, str | None] | None) -> dict[str, str | None]:
    """Each recipe backbone's ImageNet checkpoint: `weights` is Lite0's path, or a mapping from backbone
    to path; a backbone without one reads its installed package's. Checked before any image is decoded,
    so a checkpoint that did not travel costs seconds of a lent machine, not minutes."""
    from .backbone import WeightsError, lite0_weights_path

    given = weights if isinstance(weights, dict) else {"efficientnet-lite0": weights}
    found = {}
    for backbone in dict.fromkeys(r.backbone for r in recipes):
        path = given.get(backbone)
        option = "--weights" if backbone == "efficientnet-lite0" else f"--{backbone.removeprefix('efficientnet-')}-weights"
        users = ", ".join(r.name for r in recipes if r.backbone == backbone)
        if path is not None and not Path(path).is_file():
            raise AcceleratedError(f"{users}: {backbone}'s checkpoint {path} ({option}) is not a file")
        if path is None:
            try:
                lite0_weights_path(backbone.removeprefix("efficientnet-"))
            except WeightsError as exc:
                raise AcceleratedError(f"{users}: {backbone} needs its ImageNet checkpoint: give {option} PATH "
                                       f"(a .pth that travelled) or install the package ({exc})") from None
        found[backbone] = None if path is None else str(path)
    return found


def run_recipes(bundles, output, weights: str | dict[str, str | None] | None, recipes: list[Recipe],
                budget_seconds: float, keep: int = 2, workers: int | None = None, log=print) -> dict[str, Any]:
    """Train the recipes in turn within budget_seconds; write runs.json and the `keep` best runs' weights.
    weights: Lite0's checkpoint, or a mapping from backbone to checkpoint (None: the installed package's)."""
    started = time.time()
    weights = checkpoints_for(recipes, weights)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    manifest, x_train, y_train, x_val, y_val = load_bundle([Path(b) for b in bundles], log=log)
    pool = augmentation_pool(x_train, workers)  # before machine_description imports Keras
    try:
        return _run_recipes(manifest, x_train, y_train, x_val, y_val, output, weights, recipes, budget_seconds,
                            keep, pool, started, log)
    finally:
        if pool is not None:
            pool.terminate()


def _run_recipes(manifest, x_train, y_train, x_val, y_val, output, weights, recipes, budget_seconds, keep, pool,
                 started, log):
    log(f"train {len(y_train)} ({int(y_train.sum())} malignant), validation {len(y_val)} ({int(y_val.sum())}); "
        f"{machine_description()}")
    deadline = started + budget_seconds
    runs = []
    for recipe in recipes:
        if runs and time.time() > deadline - 0.25 * budget_seconds:
            log(f"[{recipe.name}] skipped: too little of the time budget left")
            continue
        runs.append(train_recipe(recipe, x_train, y_train, x_val, y_val, weights[recipe.backbone], deadline,
                                 pool=pool, log=log,
                                 train_diagnoses=manifest.get("train_diagnoses")))
        summary = {"bundle": {k: manifest.get(k) for k in ("dataset", "format", "seed", "limit", "split")},
                   "manifest": manifest, "machine": machine_description(),
                   "runs": [{k: v for k, v in r.items() if k != "weights"} for r in runs],
                   "seconds": round(time.time() - started, 1)}
        (output / RUNS).write_text(json.dumps(summary))
    ranked = sorted((r for r in runs if r["weights"] is not None), key=lambda r: -r["validation_auc"])
    for r in ranked[:keep]:
        np.savez(output / f"weights-{r['recipe']['name']}.npz", *r["weights"])
    log("validation AUC by run: " + ", ".join(f"{r['recipe']['name']} {r['validation_auc']:.4f} "
                                              f"(epoch {r['best_epoch']})" for r in runs))
    return summary


# ---------------------------------------------------------------- step 3 (here)
def import_run(run_dir, dataset, output, run: str | None = None, data_format: str | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """A served model folder from an accelerator run, finished as train_model finishes its own."""
    from .calibration import calibrate_and_report
    from .datasets import read_dataset
    from .network import Network
    from .calibration import training_prior
    from .training import TrainConfig, new_model_metadata, save_artifact, split_for_training

    run_dir, output = Path(run_dir), Path(output)
    if not (run_dir / RUNS).is_file():
        raise AcceleratedError(f"{run_dir}: no {RUNS} (import_model reads the folder that `python -m "
                               "ml.accelerated train` wrote)")
    summary = json.loads((run_dir / RUNS).read_text())
    available = {p.stem[len("weights-"):]: p for p in run_dir.glob("weights-*.npz")}
    runs = {r["recipe"]["name"]: r for r in summary["runs"] if r["recipe"]["name"] in available}
    if not runs:
        raise AcceleratedError(f"{run_dir}: no run's weights (weights-NAME.npz) to import")
    if run is None:
        run = max(runs, key=lambda n: runs[n]["validation_auc"])  # chosen on validation only
    if run not in runs:
        raise AcceleratedError(f"{run_dir}: no run named {run!r} with weights (there are: {', '.join(sorted(runs))})")
    record = runs[run]
    manifest = summary["manifest"]

    config = TrainConfig(dataset=str(dataset), format=data_format, seed=manifest["seed"], limit=manifest.get("limit"))
    report = read_dataset(dataset, data_format)
    train, val, test, note = split_for_training(report, config)
    if ([[s.path.name, int(s.label)] for s in train] != manifest["train"]
            or [[s.path.name, int(s.label)] for s in val] != manifest["validation"]
            or sorted(s.path.name for s in test) != manifest["test"]):
        raise AcceleratedError(f"{dataset} does not split into the run's training, validation and test images: "
                               "was the run trained on this dataset?")

    recipe = Recipe(**record["recipe"])
    net = Network(network_config(recipe, None))
    model = net.full_model()
    with np.load(run_dir / f"weights-{run}.npz") as stored:
        weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    expected = [tuple(w.shape) for w in model.get_weights()]
    if [tuple(w.shape) for w in weights] != expected:
        raise AcceleratedError(f"weights-{run}.npz does not fit the network ({len(weights)} arrays, "
                               f"{len(expected)} expected)")
    model.set_weights(weights)
    log(f"imported run {run} of {run_dir}: validation AUC there {record['validation_auc']:.4f} "
        f"(epoch {record['best_epoch']}), {summary['machine']}")

    y_train = np.array([s.label for s in train])
    metadata = {
        **new_model_metadata(recipe.backbone),
        "data": {
            "dataset": str(dataset), "format": report.format, "split": note, "seed": manifest["seed"],
            "train": {"n": len(train), "n_malignant": int(y_train.sum())},
            "validation": {"n": len(val), "n_malignant": int(sum(s.label for s in val))},
            "test": {"n": len(test), "n_malignant": int(sum(s.label for s in test))},
            "training_views": {"n": len(train), "n_malignant": int(y_train.sum()), "balanced_batches": True},
            **({"diagnosis_classes": sorted(set(manifest["train_diagnoses"]))} if recipe.diagnosis_weight else {}),
        },
        "training": {"backbone": recipe.backbone, "finetune_scope": "all", "average_weights": True,
                     "seed": recipe.seed, "epochs": recipe.head_epochs, "learning_rate": recipe.head_learning_rate,
                     "finetune_epochs": recipe.epochs, "finetune_learning_rate": recipe.learning_rate,
                     "batch_size": recipe.batch_size, "patience": recipe.patience, "dense_units": recipe.dense_units,
                     "dropout": recipe.dropout, "padding": recipe.padding,
                     "colour_constancy": recipe.colour_constancy,
                     "diagnosis_weight": recipe.diagnosis_weight, "mixup": recipe.mixup,
                     "accelerated": {"run": run, "machine": summary["machine"], "best_epoch": record["best_epoch"],
                                     "epochs_run": record["epochs_run"], "stopped": record["stopped"],
                                     "validation_auc_there": record["validation_auc"],
                                     "other_runs": {r["recipe"]["name"]: r["validation_auc"] for r in summary["runs"]}}},
    }
    save_artifact(output, model, metadata, train, val, test, export=True, log=log)
    results = {"phases": {"finetune_scope": "all", "validation_auc_frozen": record.get("validation_auc_head"),
                          "validation_auc_finetuned": record["validation_auc"], "kept": "finetuned"},
               "timing_seconds": {"total": record["seconds"], "machine": summary["machine"]}}
    return calibrate_and_report(
        output, np.array([s.label for s in val]), [s.path for s in val], training_prior(metadata),
        fitted_by=f"manage.py import_model {run_dir} --dataset {dataset}", y_test=np.array([s.label for s in test]),
        test_images=[s.path for s in test], results=results, history=record["history"],
        phases=[recipe.head_epochs] if recipe.head_epochs else None, log=log)


# ---------------------------------------------------------------- command line (the accelerator has no Django)
def recipes_from_json(text: str) -> list[Recipe]:
    """--recipes: a JSON list of objects of Recipe's fields, each checked before minutes of device time go by."""
    from .backbone import COLOUR_CONSTANCY, LITE_BACKBONES, PADDINGS

    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AcceleratedError(f"--recipes is not JSON ({exc})") from None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise AcceleratedError("--recipes must be a JSON list of objects, one per run")
    known = set(Recipe.__dataclass_fields__)
    recipes = []
    for item in items:
        unknown = sorted(set(item) - known)
        if unknown or "name" not in item:
            raise AcceleratedError(f"--recipes: {item.get('name', 'a run without a name')}: "
                                   + (f"unknown field(s) {', '.join(unknown)}" if unknown else "no 'name'")
                                   + f" (fields: {', '.join(Recipe.__dataclass_fields__)})")
        recipe = Recipe(**item)
        if recipe.padding not in PADDINGS:
            raise AcceleratedError(f"--recipes: {recipe.name}: padding {recipe.padding!r} is not one of "
                                   f"{', '.join(PADDINGS)}")
        if recipe.colour_constancy not in COLOUR_CONSTANCY:
            raise AcceleratedError(f"--recipes: {recipe.name}: colour_constancy {recipe.colour_constancy!r} is not "
                                   f"one of {', '.join(COLOUR_CONSTANCY)}")
        if not isinstance(recipe.mixup, (int, float)) or recipe.mixup < 0:
            raise AcceleratedError(f"--recipes: {recipe.name}: mixup {recipe.mixup!r} is not a number, 0 (off) or more")
        if recipe.backbone not in LITE_BACKBONES:
            raise AcceleratedError(f"--recipes: {recipe.name}: backbone {recipe.backbone!r} is not one of "
                                   f"{', '.join(LITE_BACKBONES)}")
        recipes.append(recipe)
    if len({r.name for r in recipes}) != len(recipes):
        raise AcceleratedError("--recipes: two runs share a name (each run's weights are saved by name)")
    return recipes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.accelerated", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the recipes on this machine's accelerator (step 2)")
    t.add_argument("--bundle", nargs="+", required=True, help="the folder(s) prepare_accelerated wrote")
    t.add_argument("--weights", help="the Lite0 ImageNet checkpoint (default: the installed package's)")
    t.add_argument("--lite2-weights", help="the Lite2 ImageNet checkpoint, for recipes with backbone "
                                           "efficientnet-lite2 (default: the installed package's)")
    t.add_argument("--output", required=True)
    t.add_argument("--budget-minutes", type=float, default=7.0, help="no new run or epoch starts after this")
    t.add_argument("--recipes", help="a JSON list of Recipe fields (default: DEFAULT_RECIPES)")
    t.add_argument("--workers", type=int, help="augmentation processes (default: the CPUs but one, at most 16)")
    args = parser.parse_args(argv)
    try:
        recipes = recipes_from_json(args.recipes) if args.recipes else DEFAULT_RECIPES
        checkpoints = {"efficientnet-lite0": args.weights, "efficientnet-lite2": args.lite2_weights}
        run_recipes(args.bundle, args.output, checkpoints, recipes, args.budget_minutes * 60,
                    workers=args.workers, log=lambda m: print(m, flush=True))
    except AcceleratedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
