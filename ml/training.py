"""Training: EfficientNet-Lite0 transfer learning, made fast enough for a 2-core CPU.

The recipe is the original project's, kept recognisable, with what a clinic needs
added on top:

1. Images go through :func:`ml.preprocessing.preprocess` (the serving path) once.
2. Class balance as in the original: augmentation (flips, rotations, crop-zoom,
   colour and exposure shifts, vignetting; Keras layers in a `tf.data` pipeline)
   generates more views of the minority class than of the majority, so each epoch
   sees about as many malignant as benign views.
3. The lower backbone blocks stay frozen, so their output for every view is
   computed once and cached; everything after that point trains from the cache.
4. Phase 1 (the original): frozen backbone, head of GlobalAveragePooling2D, Dense,
   Dropout, BatchNormalization and a 2-unit softmax; Adam 1e-3, binary cross-entropy,
   20 epochs. Phase 2: the upper blocks (or, with --finetune-scope all, every block,
   from images augmented afresh) are fine-tuned at a lower rate, keeping the epoch with
   the best validation AUC (or, with --average-weights, of weights averaged over about
   the last epoch, which wander less than any one epoch's end).
5. On the validation split (never the test split, never PH2): a prior correction
   for the balanced training, temperature scaling, the threshold for sensitivity
   >= 0.90 and the lower edge of the "uncertain" band, fitted on the scores of the saved
   model as it serves (the LiteRT export; ml/calibration.py). All of it is saved with the
   model, in metadata.json, and serving reads it from there.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import evaluation, preprocessing
from .calibration import METRICS_FILENAME, calibrate_and_report
from .classifier import METADATA_FILENAME, MODEL_FILENAME
from .splits import SPLITS_FILENAME

CLASS_NAMES = ["benign", "malignant"]


@dataclass
class TrainConfig:
    dataset: str
    format: str | None = None
    output: str = "ml/artifacts/model"
    backbone: str = "efficientnet-lite0"
    padding: str = "tf"  # Lite0's stride-2 padding: ml.backbone.PADDINGS
    # The model's first layer: "shades_of_grey" divides out each image's illuminant (ml.layers.ShadesOfGrey)
    colour_constancy: str = "none"
    weights: str | None = None  # a local weights file; None = the offline default for the backbone
    epochs: int = 20
    learning_rate: float = 1e-3
    finetune_epochs: int = 6
    finetune_learning_rate: float = 1e-5
    finetune_from_block: int = 8  # Lite0 blocks 8..15 and the head convolution are fine-tuned
    # "upper": phase 2 trains the blocks after finetune_from_block from the cached maps (fast, fixed views);
    # "all": phase 2 trains every block from images, augmented afresh each epoch, in balanced batches.
    finetune_scope: str = "upper"
    # scope "all": validate and keep an exponential moving average of the weights (about the last epoch's
    # steps). With learning rate 5e-5 (runs/full-3, 12 epochs) it gave validation AUC 0.910 vs 0.909 without;
    # with 1e-4, 0.917 after 12 epochs (runs/full-4) and 0.921 after 18 (runs/full-5: the shipped model,
    # trained by `make train`). The command's defaults stay the short recipe that tests and quick runs use.
    average_weights: bool = False
    dense_units: int = 256
    dropout: float = 0.3
    batch_size: int = 32
    benign_views: int = 2  # augmented views per benign image; malignant images get as many as balance needs
    max_views: int = 12
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42  # the split, the cached views and phase 1
    # Phase 2 (scope "all") only: its augmentation, batch order and dropout. None = seed. Two runs that
    # differ only here share the split and phase 1's head, so they start fine-tuning from the same
    # weights: the condition for averaging their weights (ml.soup).
    finetune_seed: int | None = None
    limit: int | None = None  # a stratified subset of this many images, for quick runs and tests
    # A learning curve's point: train on this share of the training split (whole lesions, both labels alike,
    # nested across fractions; ml.splits.nested_subset) while validation and test stay the full run's.
    train_fraction: float = 1.0
    patience: int = 3
    cache_dir: str | None = None
    atypical_is_malignant: bool = False
    # Scope "all" with average_weights: a second, training-only softmax over the training split's finer
    # diagnoses (HAM10000's seven dx codes) beside the head, its cross-entropy weighted by this in the loss.
    # 0 = none. Fitted on the frozen features in phase 1, trained with the backbone in phase 2, dropped
    # from the served model.
    diagnosis_weight: float = 0.0
    # Scope "all": mixup (Zhang et al. 2018) in phase 2. Each image of a batch is blended with another of the
    # same batch, and so are their labels, with a weight drawn from Beta(mixup, mixup). 0 = off.
    mixup: float = 0.0
    # Scope "all": the share of malignant images in each of phase 2's batches (sampled per class). 0.5 = the
    # original's balancing; less sees each benign image more often and each malignant image less often.
    # Calibration undoes whichever share was trained (metadata's data.training_views.phase2_malignant_share).
    malignant_share: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)


def training_defaults() -> dict[str, Any]:
    """TrainConfig's default of each setting that has one."""
    from dataclasses import MISSING, fields

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def training_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """A model's training settings from its metadata, each one it lacks read as TrainConfig's default: that
    setting was added to train_model after the model was trained, which then trained with its default."""
    return {**training_defaults(), **meta.get("training", {})}


def cache_root(config: TrainConfig) -> Path:
    root = Path(config.cache_dir or os.environ.get("SKINCARE_CACHE_DIR") or Path(tempfile.gettempdir()) / "skincare-cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


# Part of the image and feature-map cache keys: caches written before images were rounded are not reused.
IMAGE_CACHE_FORMAT = "rounded"


def load_images(paths: list[Path], size: int = preprocessing.IMAGE_SIZE, cache: Path | None = None,
                log: Callable[[str], None] = print) -> np.ndarray:
    """All images through the serving preprocessing, rounded to uint8 (N, size, size, 3)
    (:func:`ml.preprocessing.preprocess_uint8`), cached on disk."""
    key = hashlib.sha1(("\n".join(str(p) for p in paths) + f"|{size}|{IMAGE_CACHE_FORMAT}").encode()).hexdigest()[:16]
    cached = cache / f"images-{key}.npy" if cache else None
    if cached and cached.exists():
        return np.load(cached)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    started = time.time()
    for i, path in enumerate(paths):
        out[i] = preprocessing.preprocess_uint8(path, size)
        if (i + 1) % 1000 == 0:
            log(f"  decoded {i + 1}/{len(paths)} images ({time.time() - started:.0f} s)")
    if cached:
        np.save(cached, out)
    return out


from .network import Network, build_augmenter, diagnosis_indices, head_logs  # noqa: E402,F401 (defined there, used here and by callers)


# ---------------------------------------------------------------- caching
_COMPILED: dict[int, Any] = {}


def _interactive() -> bool:
    """Progress bars on a terminal; one line per epoch in a log file."""
    import sys

    return sys.stdout.isatty()


def _compiled(model):
    """One traced inference function per model (tracing again per call is slow)."""
    import tensorflow as tf

    if id(model) not in _COMPILED:
        _COMPILED[id(model)] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return _COMPILED[id(model)]


def compute_maps(lower, images: np.ndarray, augmenter=None, batch_size: int = 32, label: str = "") -> np.ndarray:
    """Lower-backbone feature maps (float16) of images, optionally through the augmenter."""
    import keras
    import tensorflow as tf

    n = len(images)
    out = np.empty((n,) + tuple(lower.output.shape[1:]), dtype=np.float16)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
    if augmenter is not None:
        ds = ds.map(lambda x: augmenter(tf.cast(x, tf.float32), training=True), num_parallel_calls=1)
    else:
        ds = ds.map(lambda x: tf.cast(x, tf.float32))
    ds = ds.prefetch(2)
    run = _compiled(lower)
    bar = keras.utils.Progbar(n, unit_name="image") if label and _interactive() else None
    i = 0
    for batch in ds:
        maps = run(batch).numpy()
        out[i:i + len(maps)] = maps.astype(np.float16)
        i += len(maps)
        if bar:
            bar.update(i)
    return out


def pooled_features(upper, maps: np.ndarray, batch_size: int = 128) -> np.ndarray:
    import tensorflow as tf

    run = _compiled(upper)
    return np.concatenate([run(tf.cast(maps[i:i + batch_size], tf.float32)).numpy() for i in range(0, len(maps), batch_size)])


def view_counts(y: np.ndarray, benign_views: int, max_views: int) -> tuple[int, int]:
    """Views per benign and per malignant image so the two classes come out about even."""
    n_mal, n_ben = int(y.sum()), int(len(y) - y.sum())
    if n_mal == 0 or n_ben == 0:
        return benign_views, benign_views
    malignant_views = int(round(benign_views * n_ben / n_mal))
    return benign_views, int(min(max(malignant_views, 1), max_views))


def view_indices(y: np.ndarray, benign_views: int, malignant_views: int) -> list[np.ndarray]:
    """Which training images each cached view holds, in cache order: view 1 every image (unaugmented),
    then every image up to benign_views, then the malignant images alone."""
    return [np.arange(len(y)) if v < benign_views else np.flatnonzero(y == 1) for v in range(malignant_views)]


def check_phase2_batches(config: TrainConfig) -> None:
    """Refuse the settings of phase 2's batches (scope all) that cannot be trained, with a message."""
    if config.mixup < 0:
        raise ValueError(f"--mixup is the Beta distribution's alpha, 0 (off) or more, not {config.mixup:g}")
    if config.mixup and config.finetune_scope != "all":
        raise ValueError("--mixup blends the images of phase 2's batches: it trains with --finetune-scope all")
    if not 0 < config.malignant_share < 1:
        raise ValueError(f"--malignant-share is a share of each batch, between 0 and 1, not {config.malignant_share:g}")
    if config.malignant_share != TrainConfig.malignant_share and config.finetune_scope != "all":
        raise ValueError("--malignant-share sets phase 2's batches: it trains with --finetune-scope all")


def mixup_batch(images, labels, seed, alpha: float):
    """Mixup: each image of the batch blended with its partner (the batch read backwards) as
    lam * image + (1 - lam) * partner, lam ~ Beta(alpha, alpha) per image, and every label tensor
    (a structure of them, as the multitask head has) blended the same way. Stateless: the same seed
    (shape [2]) gives the same blend."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    gammas = tf.random.stateless_gamma([2, n], seed=seed, alpha=alpha, dtype=tf.float32)
    # Both draws can underflow to 0 for a small alpha: then the image is its partner (lam 0), not NaN.
    lam = tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1])
    partner = tf.reverse(tf.range(n), [0])

    def blend(t):
        t = tf.cast(t, tf.float32)
        weight = tf.reshape(lam, tf.concat([[n], tf.ones([tf.rank(t) - 1], tf.int32)], 0))
        return weight * t + (1.0 - weight) * tf.gather(t, partner)

    return blend(images), tf.nest.map_structure(blend, labels)


def diagnosis_targets(samples, config: TrainConfig) -> tuple[list[str], np.ndarray]:
    """The finer diagnoses the diagnosis head learns (the samples' `detail`: HAM10000's dx) and each
    sample's index among them."""
    if config.finetune_scope != "all" or not config.average_weights:
        raise ValueError("--diagnosis-weight trains with --finetune-scope all --average-weights")
    details = [s.detail for s in samples]
    found = diagnosis_indices(details)
    if found is None:
        raise ValueError("--diagnosis-weight needs a dataset that names each image's diagnosis (HAM10000's dx); "
                         f"this training split has: {', '.join(repr(c) for c in sorted(set(details)))}")
    return found


# ---------------------------------------------------------------- the recipe
def subsample(samples, n: int, seed: int = 42):
    """A seeded subset of n samples with the same malignant share (at least 2 per class)."""
    import random

    rng = random.Random(seed)
    by_label = {0: [s for s in samples if s.label == 0], 1: [s for s in samples if s.label == 1]}
    n_mal = min(len(by_label[1]), max(2, round(n * len(by_label[1]) / max(len(samples), 1))))
    picked = rng.sample(by_label[1], n_mal) + rng.sample(by_label[0], min(len(by_label[0]), max(n - n_mal, 2)))
    keep = {id(s) for s in picked}
    return [s for s in samples if id(s) in keep]


def split_for_training(report, config: TrainConfig, log=print):
    """train / validation / test samples. For HAM10000 with the ISIC 2018 test images, the
    challenge's own test set is the test split and HAM10000 is split grouped by lesion."""
    from .splits import nested_subset, split_samples

    samples = list(report.samples)
    if config.limit:
        samples = subsample(samples, config.limit, seed=config.seed)
    official_test = [s for s in samples if s.source == "isic2018_test"]
    if official_test and len(official_test) < len(samples):
        rest = [s for s in samples if s.source != "isic2018_test"]
        val_share = config.val_fraction / (1 - config.test_fraction)
        train, val, _ = split_samples(rest, (1 - val_share, val_share, 0.0), seed=config.seed)
        test, note = official_test, "test = the ISIC 2018 Task 3 test set; HAM10000 split by lesion_id into train/validation"
    else:
        train, val, test = split_samples(
            samples, (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction),
            seed=config.seed)
        note = "stratified, grouped split"
    if config.train_fraction != 1:
        full = len(train)
        train = nested_subset(train, config.train_fraction, seed=config.seed)
        note += f"; training on {len(train)} of the training split's {full} images (--train-fraction {config.train_fraction:g})"
    return train, val, test, note


def train(config: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from .datasets import read_dataset

    from .splits import check_train_fraction

    started = time.time()
    check_phase2_batches(config)
    check_train_fraction(config.train_fraction)
    keras.utils.set_random_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    report = read_dataset(config.dataset, config.format, atypical_is_malignant=config.atypical_is_malignant)
    log(report.summary())
    train_s, val_s, test_s, split_note = split_for_training(report, config, log)
    y_train = np.array([s.label for s in train_s])
    y_val = np.array([s.label for s in val_s])
    y_test = np.array([s.label for s in test_s])
    log(f"split ({split_note}): train {len(train_s)} ({int(y_train.sum())} malignant), "
        f"validation {len(val_s)} ({int(y_val.sum())}), test {len(test_s)} ({int(y_test.sum())})")
    if y_train.sum() == 0 or y_val.sum() == 0 or y_val.sum() == len(y_val):
        raise ValueError("the training and validation splits each need benign and malignant images")
    diagnoses, d_train = diagnosis_targets(train_s, config) if config.diagnosis_weight > 0 else ([], None)
    if diagnoses:
        log(f"diagnosis head (weight {config.diagnosis_weight:g}) over {len(diagnoses)} diagnoses: "
            + ", ".join(f"{d} {int((d_train == i).sum())}" for i, d in enumerate(diagnoses)))

    cache = cache_root(config)
    log("decoding images through ml.preprocessing.preprocess ...")
    x_train = load_images([s.path for s in train_s], cache=cache, log=log)
    x_val = load_images([s.path for s in val_s], cache=cache, log=log)

    net = Network(config)
    augmenter = build_augmenter(config.seed)
    benign_views, malignant_views = view_counts(y_train, config.benign_views, config.max_views)
    log(f"balancing by augmentation: {benign_views} views per benign image, {malignant_views} per malignant image "
        f"(view 1 unaugmented)")
    t0 = time.time()
    maps_key = hashlib.sha1(json.dumps([[str(s.path) for s in train_s], [str(s.path) for s in val_s],
                                        [str(s.path) for s in test_s], config.backbone, config.padding, config.finetune_from_block,
                                        config.seed, benign_views, malignant_views,
                                        IMAGE_CACHE_FORMAT]
                                       # (a key without it, when it is "none", keeps earlier caches usable)
                                       + ([config.colour_constancy] if config.colour_constancy != "none" else [])).encode()).hexdigest()[:16]
    maps_file = cache / f"maps-{maps_key}.npz"
    if maps_file.exists():
        log(f"feature maps from the cache {maps_file}")
        with np.load(maps_file) as cached:
            maps_train, labels_train, maps_val = cached["train"], cached["labels"], cached["val"]
    else:
        map_parts, label_parts = [compute_maps(net.lower, x_train, None, config.batch_size, "clean views")], [y_train]
        for v, idx in enumerate(view_indices(y_train, benign_views, malignant_views)[1:], start=1):
            log(f"augmented view {v + 1}/{malignant_views} of {len(idx)} images")
            map_parts.append(compute_maps(net.lower, x_train[idx], augmenter, config.batch_size, "aug"))
            label_parts.append(y_train[idx])
        maps_train = np.concatenate(map_parts)
        labels_train = np.concatenate(label_parts)
        del map_parts
        maps_val = compute_maps(net.lower, x_val, None, config.batch_size, "validation")
        # The test split is scored once, from its files, by the saved model as served (ml.calibration).
        np.savez(maps_file, train=maps_train, labels=labels_train, val=maps_val)
    cache_seconds = time.time() - t0
    log(f"{len(maps_train)} training views ({int(labels_train.sum())} malignant) ready in {cache_seconds:.0f} s")

    # Phase 1: the original recipe on the frozen backbone's pooled features.
    t1 = time.time()
    net.set_upper_trainable(False)
    f_train = pooled_features(net.upper, maps_train)
    f_val = pooled_features(net.upper, maps_val)
    net.head.compile(keras.optimizers.Adam(config.learning_rate), "binary_crossentropy", metrics=_metrics())
    h1 = net.head.fit(f_train, _onehot(labels_train), validation_data=(f_val, _onehot(y_val)), epochs=config.epochs,
                      batch_size=config.batch_size, shuffle=True, verbose=1 if _interactive() else 2)
    phase1_seconds = time.time() - t1
    history = {k: list(map(float, v)) for k, v in h1.history.items()}
    phase1_auc = evaluation.roc_auc(y_val, predict_maps(net.upper_with_head(), maps_val))
    phase1_weights = (net.upper.get_weights(), net.head.get_weights(), net.lower.get_weights())
    log(f"phase 1 (frozen backbone): validation AUC {phase1_auc:.4f}")
    if diagnoses:
        # The diagnosis head starts from a fit on the frozen features, as the head does, so that its first
        # gradients in phase 2 do not come from random weights.
        net.add_diagnosis_head(len(diagnoses))
        d_views = np.concatenate([d_train[idx] for idx in view_indices(y_train, benign_views, malignant_views)])
        net.diagnosis.compile(keras.optimizers.Adam(config.learning_rate), "categorical_crossentropy",
                              metrics=["accuracy"])
        hd = net.diagnosis.fit(f_train, np.eye(len(diagnoses), dtype=np.float32)[d_views], epochs=config.epochs,
                               batch_size=config.batch_size, shuffle=True, verbose=0)
        log(f"diagnosis head on the frozen features: training accuracy {hd.history['accuracy'][-1]:.3f}")

    # Phase 2: fine-tune the backbone (its upper blocks from the cached maps, or every block from images).
    t2 = time.time()
    model = net.full_model()  # image -> probabilities; its weights are the parts', whatever happens to them
    head_and_upper = net.upper_with_head()

    def raw_scores(images, maps):
        """The model as it now stands on one split. Scope "all" changes the lower blocks too,
        so the cached maps no longer describe the model and the images go through it whole."""
        if config.finetune_scope == "all":
            return predict_images(model, images) if images is not None else None
        return predict_maps(head_and_upper, maps) if maps is not None else None

    phase2_auc = None
    if config.finetune_epochs > 0:
        if config.finetune_scope == "all":
            if config.finetune_seed is not None and config.finetune_seed != config.seed:
                keras.utils.set_random_seed(config.finetune_seed)
                augmenter = build_augmenter(config.finetune_seed)
            h2 = finetune_all(net, config, x_train, y_train, x_val, y_val, augmenter, log, d_train=d_train)
        else:
            h2 = finetune_upper(net, config, maps_train, labels_train, maps_val, y_val)
        raw_val = raw_scores(x_val, maps_val)
        phase2_auc = evaluation.roc_auc(y_val, raw_val)
        for k, v in h2.items():
            history.setdefault(k, []).extend(map(float, v))
        log(f"phase 2 (fine-tuned, scope {config.finetune_scope}): validation AUC {phase2_auc:.4f}")
        if phase2_auc < phase1_auc:
            log("fine-tuning did not beat the frozen backbone on validation: keeping phase 1's weights")
            for part, weights in zip((net.upper, net.head, net.lower), phase1_weights):
                part.set_weights(weights)
            raw_val = raw_scores(x_val, maps_val)
    else:
        raw_val = raw_scores(x_val, maps_val)
    finetune_seconds = time.time() - t2

    # Fine-tuning is kept only if it beat the frozen backbone on validation. The malignant share the kept
    # weights were trained on, which calibration undoes: phase 2's batches (scope all) where fine-tuning was
    # kept, else the cached views'.
    kept = "finetuned" if phase2_auc is not None and phase2_auc >= phase1_auc else "frozen"
    phase2_share = config.malignant_share if config.finetune_scope == "all" and kept == "finetuned" else None
    train_prior = phase2_share if phase2_share is not None else float(labels_train.mean())

    results: dict[str, Any] = {
        "phases": {"finetune_scope": config.finetune_scope, "validation_auc_frozen": phase1_auc,
                   "validation_auc_finetuned": phase2_auc, "kept": kept},
    }
    metadata = {
        **new_model_metadata(config.backbone),
        "data": {
            "dataset": str(config.dataset),
            "format": report.format,
            "split": split_note,
            "seed": config.seed,
            "train": {"n": len(train_s), "n_malignant": int(y_train.sum())},
            "validation": {"n": len(val_s), "n_malignant": int(y_val.sum())},
            "test": {"n": len(test_s), "n_malignant": int(y_test.sum())},
            "training_views": {"n": int(len(labels_train)), "n_malignant": int(labels_train.sum()),
                               "benign_views": benign_views, "malignant_views": malignant_views,
                               **({"phase2_malignant_share": phase2_share} if phase2_share is not None else {})},
            **({"diagnosis_classes": diagnoses} if diagnoses else {}),
        },
        "training": {k: v for k, v in asdict(config).items() if k not in ("output", "cache_dir")},
    }
    save_artifact(output, model, metadata, train_s, val_s, test_s, export=config.backbone.startswith("efficientnet-lite"),
                  log=log)
    # Calibration and thresholds on the validation split only, from the saved model's scores as served.
    # From the image files, as serving reads them: the arrays training holds were cast to uint8.
    results = calibrate_and_report(
        output, y_val, [s.path for s in val_s], train_prior, fitted_by="manage.py train_model",
        y_test=y_test, test_images=[s.path for s in test_s], results=results, history=history,
        phases=[config.epochs] if config.finetune_epochs else None, log=log)
    total_seconds = time.time() - started
    results["timing_seconds"] = {"cache_features": round(cache_seconds, 1), "phase1_head": round(phase1_seconds, 1),
                                 "phase2_finetune": round(finetune_seconds, 1), "total": round(total_seconds, 1),
                                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                            f"GPU: {bool(tf.config.list_physical_devices('GPU'))}"}
    (output / METRICS_FILENAME).write_text(json.dumps(results, indent=2))
    log(f"wrote {output} in {total_seconds / 60:.1f} min")
    return results


# What every model's metadata says of its input.
PREPROCESSING_DESCRIPTION = ("ml.preprocessing.preprocess: decode with Pillow, EXIF orientation, RGB, squash to 224x224 "
                             "(bilinear), a dermoscope's dark corners painted with skin colour, float 0..255; the "
                             "model scales its own input")

def new_model_metadata(backbone: str) -> dict[str, Any]:
    """What every new model folder's metadata.json starts with (train_model, average_models, import_model):
    its version and time, what it reads (backbone, class order, image size, preprocessing) and how its
    calibration and thresholds are chosen."""
    now = dt.datetime.now(dt.timezone.utc)
    name = backbone.removeprefix("efficientnet-") if backbone.startswith("efficientnet-lite") else backbone
    return {"model_version": now.strftime(f"{name}-%Y%m%d-%H%M"), "created_at": now.isoformat(timespec="seconds"),
            "backbone": backbone, "class_names": CLASS_NAMES, "image_size": preprocessing.IMAGE_SIZE,
            "preprocessing": PREPROCESSING_DESCRIPTION, **CALIBRATION_RULES}


# How the thresholds and calibration are chosen (ml.calibration fits them): said in every model's metadata.
CALIBRATION_RULES = {
    "threshold_rule": f"sensitivity >= {evaluation.SENSITIVITY_TARGET} on the validation split, as high as that allows "
                      "(halfway to the next lower validation score)",
    "uncertain_rule": f"flags (needs a doctor + uncertain) >= {evaluation.FLAG_TARGET} of malignant on the validation split",
    "calibration": "p = sigmoid((logit(p_raw) + logit_offset) / temperature); logit_offset undoes the balanced "
                   "training prior, temperature fitted on the validation split, both on the scores of the "
                   "model as served",
}


def save_artifact(output: Path, model, metadata: dict[str, Any], train_s, val_s, test_s, *, export: bool,
                  log: Callable[[str], None] = print) -> None:
    """Write a model folder before its calibration: model.keras, metadata.json, splits.json (which images
    were held out, so evaluate_model --split can score exactly them), the image gate fitted on the
    training images, and the LiteRT export that serves it."""
    from .export import compress_keras_file, export_litert
    from .gate import fit_for_model

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / MODEL_FILENAME)
    compress_keras_file(output / MODEL_FILENAME)
    (output / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2))
    splits = {"validation": sorted(str(s.path.name) for s in val_s), "test": sorted(str(s.path.name) for s in test_s)}
    (output / SPLITS_FILENAME).write_text(json.dumps(splits))
    fit_for_model(output, [s.path for s in train_s], [s.path for s in val_s], log=log)
    if export:
        export_litert(output, log=log)


def _onehot(y: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[y]


def _metrics() -> list:
    import keras

    # multi_label: the mean of each column's AUC, which for two softmax columns is the malignant AUC.
    # The default pools both columns into one curve and reads higher (0.940 where the malignant AUC was 0.894).
    return ["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)]


def _early_stopping(config: TrainConfig):
    """Stop fine-tuning when the validation AUC has not improved for `patience` epochs, and go
    back to the best epoch's weights."""
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience,
                                         restore_best_weights=True, verbose=1)


def finetune_upper(net: Network, config: TrainConfig, maps_train, labels_train, maps_val, y_val) -> dict:
    """Phase 2 over the blocks after the cache boundary, from the cached (fixed) views."""
    import keras
    import tensorflow as tf

    net.set_upper_trainable(True)
    finetune = net.upper_with_head()
    finetune.compile(keras.optimizers.Adam(config.finetune_learning_rate), "binary_crossentropy",
                     metrics=_metrics())
    early = _early_stopping(config)
    train_ds = (tf.data.Dataset.from_tensor_slices((maps_train, _onehot(labels_train)))
                .shuffle(len(maps_train), seed=config.seed).batch(config.batch_size)
                .map(lambda m, y: (tf.cast(m, tf.float32), y)).prefetch(2))
    return finetune.fit(train_ds, validation_data=(maps_val.astype(np.float32), _onehot(y_val)),
                        epochs=config.finetune_epochs, verbose=1 if _interactive() else 2, callbacks=[early]).history


def balanced_batches(config: TrainConfig, x_train, y_train, labels, augmenter):
    """Phase 2's endless tf.data stream: batches config.malignant_share malignant (half by default; sampled
    per class), every image augmented afresh, labels (a tensor or a structure of them) gathered alike, and with
    config.mixup the batch blended (:func:`mixup_batch`)."""
    import tensorflow as tf

    images = tf.constant(x_train)
    seed = config.seed if config.finetune_seed is None else config.finetune_seed
    per_class = [tf.data.Dataset.from_tensor_slices(np.flatnonzero(y_train == c)).shuffle(
        int((y_train == c).sum()), seed=seed + c).repeat() for c in (0, 1)]
    batches = (tf.data.Dataset.sample_from_datasets(
        per_class, [1.0 - config.malignant_share, config.malignant_share], seed=seed)
               .batch(config.batch_size)
               .map(lambda idx: (augmenter(tf.cast(tf.gather(images, idx), tf.float32), training=True),
                                 tf.nest.map_structure(lambda t: tf.gather(t, idx), labels)), num_parallel_calls=1))
    if config.mixup:
        batches = (tf.data.Dataset.zip((batches, tf.data.Dataset.random(seed=seed).batch(2)))
                   .map(lambda batch, pair: mixup_batch(*batch, pair, config.mixup), num_parallel_calls=1))
    return batches.prefetch(2)


def finetune_all(net: Network, config: TrainConfig, x_train, y_train, x_val, y_val, augmenter, log=print,
                 d_train: np.ndarray | None = None) -> dict:
    """Phase 2 over every block, from images: each batch is half benign, half malignant, every
    image augmented afresh (the original project's balancing generator, as a tf.data pipeline).
    An epoch is as many images as the training split; the epoch with the best validation AUC is kept
    (with config.average_weights: the best of the weights averaged over about the last epoch's steps).
    With the diagnosis head (d_train, each image's diagnosis index), the loss adds its cross-entropy
    weighted by config.diagnosis_weight; the history's accuracy, auc and loss stay the head's."""
    import keras
    import tensorflow as tf

    net.set_all_trainable(True)
    multitask = net.diagnosis is not None
    model = net.training_model() if multitask else net.full_model()
    steps = max(1, len(y_train) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(config.finetune_learning_rate, steps * config.finetune_epochs,
                                                      alpha=0.05)
    net.compile_for_training(model, keras.optimizers.Adam(schedule), _metrics(), config.diagnosis_weight)
    if multitask:
        n_diagnoses = int(net.diagnosis.output.shape[-1])
        labels = {"head": tf.constant(_onehot(y_train)),
                  "diagnosis": tf.constant(np.eye(n_diagnoses, dtype=np.float32)[d_train])}
    else:
        labels = tf.constant(_onehot(y_train))
    train_ds = balanced_batches(config, x_train, y_train, labels, augmenter)
    log(f"phase 2: every block trainable, {steps} batches an epoch ({config.malignant_share:g} malignant), "
        f"Adam {config.finetune_learning_rate:g} with cosine decay, up to {config.finetune_epochs} epochs"
        + (f"; mixup, Beta({config.mixup:g}, {config.mixup:g})" if config.mixup else "")
        + ("; validation on the weights averaged over about the last epoch" if config.average_weights else ""))
    if config.average_weights:
        callback, validation = averaged_weights(x_val, y_val, decay=1.0 - 1.0 / steps, patience=config.patience,
                                                log=log, scorer=net.full_model() if multitask else None), None
    else:
        callback, validation = _early_stopping(config), (x_val.astype(np.float32), _onehot(y_val))
    h = model.fit(train_ds, steps_per_epoch=steps, epochs=config.finetune_epochs, validation_data=validation,
                  verbose=1 if _interactive() else 2, callbacks=[callback])
    return head_logs(h.history, multitask)


@functools.lru_cache(maxsize=None)
def _averaged_weights_callback():
    import keras

    class AveragedWeights(keras.callbacks.Callback):
        """An exponential moving average of the weights (Polyak averaging), validated and kept instead
        of the weights as they happen to be at an epoch's end.

        Fine-tuning every block makes the weights wander: in runs/full-1 the validation AUC swung
        between 0.82 and 0.94 from one epoch to the next. After each epoch the averaged weights are
        scored on the validation split (malignant AUC, loss, accuracy into the epoch's logs);
        training stops after `patience` epochs without a better AUC, and the best averaged weights
        are the model's at the end."""

        def __init__(self, x_val, y_val, decay: float, patience: int, log=print, scorer=None):
            super().__init__()
            self.x_val, self.y_val = x_val, np.asarray(y_val)
            self.decay, self.patience, self.log = float(decay), patience, log
            self.scorer = scorer  # the serving model, where the one trained has other outputs too

        def on_train_begin(self, logs=None):
            self.average = [np.array(w, dtype=np.float64) for w in self.model.get_weights()]
            self.best_auc, self.best_weights, self.best_epoch, self.wait = -np.inf, None, None, 0

        def on_train_batch_end(self, batch, logs=None):
            for avg, w in zip(self.average, self.model.get_weights()):
                avg *= self.decay
                avg += (1.0 - self.decay) * w

        def on_epoch_end(self, epoch, logs=None):
            current = self.model.get_weights()
            averaged = [a.astype(w.dtype) for a, w in zip(self.average, current)]
            self.model.set_weights(averaged)
            p = predict_images(self.scorer or self.model, self.x_val)
            self.model.set_weights(current)
            auc = evaluation.roc_auc(self.y_val, p)
            if logs is not None:
                logs.update(val_auc=auc, val_accuracy=float(np.mean((p >= 0.5) == self.y_val)),
                            val_loss=evaluation.log_loss(self.y_val, p))
            if auc > self.best_auc:
                self.best_auc, self.best_weights, self.best_epoch, self.wait = auc, averaged, epoch + 1, 0
            else:
                self.wait += 1
                if self.wait >= self.patience:
                    self.model.stop_training = True
            self.log(f"epoch {epoch + 1}: validation AUC of the averaged weights {auc:.4f} "
                     f"(best {self.best_auc:.4f}, epoch {self.best_epoch})")

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return AveragedWeights


def averaged_weights(*args, **kwargs):
    """An AveragedWeights callback (its class is built once, on first use: keras is imported only to train)."""
    return _averaged_weights_callback()(*args, **kwargs)


def predict_images(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    import tensorflow as tf

    run = _compiled(model)
    return np.concatenate([run(tf.cast(images[i:i + batch_size], tf.float32)).numpy()[:, 1]
                           for i in range(0, len(images), batch_size)])


def predict_maps(model, maps: np.ndarray, batch_size: int = 128) -> np.ndarray:
    import tensorflow as tf

    run = _compiled(model)
    probs = [run(tf.cast(maps[i:i + batch_size], tf.float32)).numpy()[:, 1] for i in range(0, len(maps), batch_size)]
    return np.concatenate(probs)
