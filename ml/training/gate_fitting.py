"""Fitting the image gate (ml.serving.gate) of a trained model on its own training images.

The reference holds each training image as it is and once through the training augmentation
(ml.model.augmentation) followed by a random sharpening or softening, so that a lesion from
another dermoscope stays familiar while a photo of something else does not.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from ml.artifact import MODEL_FILENAME, image_size_of, read_metadata, write_metadata
from ml.model.augmentation import augment
from ml.model.layers import load_keras_model
from ml.preprocessing import preprocess
from ml.serving.gate import DISTANCE_MARGIN, REFERENCE_IMAGES, Gate, feature_statistics, quality_measures

# The statistics new gates are fitted on: the per-channel mean of block 14's map (ml.serving.gate says why).
GATE_STATISTICS = "mean"
# A gate fitted without one source must still accept this share of that source's validation images (and all of
# its malignant ones): the distance margin is widened until it does, for every source left out in turn.
UNSEEN_SOURCE_ACCEPTED = 0.99


def random_sharpness(images, rng: np.random.Generator, low: float = -0.8, high: float = 4.0) -> np.ndarray:
    """Unsharp masking by a random amount per image: x + a (x - blur(x)), a in [low, high).
    Positive a sharpens (a crisper dermoscope), negative a blends towards the blur (a softer one)."""
    x = np.asarray(images, dtype=np.float32)
    blurred = gaussian_filter(x, sigma=(0, 1.0, 1.0, 0))
    amount = rng.uniform(low, high, size=(len(x), 1, 1, 1)).astype(np.float32)
    return np.clip(x + amount * (x - blurred), 0, 255)


def reference_sample(paths, sources, n: int, rng: random.Random) -> list:
    """n of the training images for the gate's reference, shared out among the sources in proportion to
    the square root of their sizes (as the training batches weigh them, ml.training.batches), so a small
    source's dermoscope is in the reference too; all of them where there are no more than n."""
    paths = list(paths)
    if len(paths) <= n:
        return paths
    by_source: dict[str, list] = {}
    for path, source in zip(paths, sources):
        by_source.setdefault(source, []).append(path)
    weights = {source: len(members) ** 0.5 for source, members in by_source.items()}
    quota = {source: min(len(m), round(n * weights[source] / sum(weights.values()))) for source, m in by_source.items()}
    # what a small source cannot fill goes to the others, largest first
    for source in sorted(by_source, key=lambda s: -len(by_source[s])):
        quota[source] = min(len(by_source[source]), quota[source] + max(0, n - sum(quota.values())))
    return [p for source in sorted(by_source) for p in rng.sample(by_source[source], quota[source])]


def unseen_source_margins(
    reference, reference_sources, reference_quality, val_plain, val_augmented, val_sources, malignant, statistics
) -> dict[str, float]:
    """For each source left out in turn: the distance margin (ml.serving.gate.Gate.fit) a gate fitted on the
    other sources alone would need to accept UNSEEN_SOURCE_ACCEPTED of the left-out source's validation images
    and every malignant one. A new clinic's dermoscope is a source the gate was not fitted on; this is the one
    measure of how far such a source sits that can be taken before meeting one. Empty with fewer than two
    sources. reference: (2R, F) rows, the R training images as they are, then augmented (fit_for_model)."""
    reference_sources = np.concatenate([reference_sources, reference_sources])
    val_sources, malignant = np.asarray(val_sources), np.asarray(malignant, dtype=bool)
    sources = sorted(set(reference_sources) & set(val_sources))
    margins = {}
    for source in sources if len(sources) > 1 else ():
        kept, others = reference_sources != source, val_sources != source
        gate = Gate.fit(
            reference[kept],
            [q for q, keep in zip(reference_quality * 2, kept) if keep],
            np.concatenate([val_plain[others], val_augmented[others]]),
            malignant_features=val_plain[others & malignant],
            statistics=statistics,
            margin=1.0,
        )
        distances = gate.distance(val_plain[val_sources == source])
        needed = float(np.quantile(distances, UNSEEN_SOURCE_ACCEPTED))
        if (malignant & (val_sources == source)).any():
            needed = max(needed, float(gate.distance(val_plain[malignant & (val_sources == source)]).max()))
        margins[source] = needed / gate.limits["max_distance"]
    return margins


def fit_for_model(
    model_dir,
    train_paths,
    val_paths,
    log=print,
    seed: int = 0,
    train_sources=None,
    val_labels=None,
    statistics: str = GATE_STATISTICS,
    val_sources=None,
) -> dict[str, float]:
    """Fit the gate of a saved model on its training images (as they are and augmented), choose the
    distance limit on its validation images, and save both beside the model. train_sources: each training
    image's source, to share the reference among them; val_labels: 1 for a malignant validation image, so
    that the limits refuse none of those (Gate.fit); statistics: of the lower part's map (ml.serving.gate);
    val_sources: each validation image's source, so that the distance margin is wide enough for a source the gate
    was not fitted on (unseen_source_margins; at least DISTANCE_MARGIN)."""
    model_dir = Path(model_dir)
    lower = load_keras_model(model_dir / MODEL_FILENAME).get_layer("lower")
    size = image_size_of(read_metadata(model_dir))
    augment_rng = np.random.default_rng(seed + 1000)
    rng = random.Random(seed)
    train_paths = list(train_paths)
    sources = list(train_sources) if train_sources is not None else [""] * len(train_paths)
    source_by_path = dict(zip(train_paths, sources))
    train_paths = reference_sample(train_paths, sources, REFERENCE_IMAGES, rng)
    sharpness_rng = np.random.default_rng(seed)

    def collect(paths, quality=None, changed_quality=None):
        """Feature statistics of each image as it is, and of each augmented with its sharpness changed too."""
        plain, augmented = [], []
        for start in range(0, len(paths), 32):
            x = np.stack([preprocess(p, size) for p in paths[start : start + 32]])
            if quality is not None:
                quality.extend(quality_measures(img) for img in x)
            changed = random_sharpness(np.stack([augment(img, augment_rng) for img in x]), sharpness_rng)
            if changed_quality is not None:
                changed_quality.extend(quality_measures(img) for img in changed)
            plain.append(feature_statistics(lower(x, training=False)))
            augmented.append(feature_statistics(lower(changed, training=False)))
        return np.concatenate(plain), np.concatenate(augmented)

    log(f"fitting the image gate on {len(train_paths)} training images (and an augmented view of each) ...")
    quality: list[dict[str, float]] = []
    augmented_quality: list[dict[str, float]] = []
    reference = np.concatenate(collect(train_paths, quality, augmented_quality))
    val_quality: list[dict[str, float]] = []
    val_plain, val_augmented = collect(list(val_paths), val_quality)
    malignant = np.asarray(val_labels, dtype=bool) if val_labels is not None else np.zeros(len(val_plain), bool)
    unseen = (
        unseen_source_margins(
            reference,
            np.array([source_by_path[p] for p in train_paths]),
            quality,
            val_plain,
            val_augmented,
            list(val_sources),
            malignant,
            statistics,
        )
        if val_sources is not None
        else {}
    )
    margin = max([DISTANCE_MARGIN, *unseen.values()])
    if unseen:
        log(
            "distance margin for a source the gate was not fitted on: "
            + ", ".join(f"{s} {m:.3f}" for s, m in unseen.items())
            + f"; the gate's: {margin:.3f}"
        )
    gate = Gate.fit(
        reference,
        quality,
        np.concatenate([val_plain, val_augmented]),
        malignant_features=val_plain[malignant],  # as they are: the augmented views are no patient's
        malignant_quality=[q for q, bad in zip(val_quality, malignant) if bad],
        statistics=statistics,
        augmented_quality=augmented_quality,
        margin=margin,
    )
    limits = gate.save(model_dir)
    meta = read_metadata(model_dir)
    meta["gate"] = limits
    meta["gate_fit"] = {
        "layer": lower.layers[-1].name,  # where the network's lower part ends: the map the statistics are of
        "channels": int(lower.output.shape[-1]),
        "statistics": statistics,
        "reference_images": len(train_paths),
        "reference_by_source": dict(sorted(Counter(source_by_path[p] for p in train_paths).items())),
        "validation_images": len(val_plain),
        "validation_malignant_never_refused": int(malignant.sum()),
        "distance_margin": margin,
        "unseen_source_margins": unseen,
    }
    write_metadata(model_dir, meta)
    log("gate limits: " + ", ".join(f"{k} {v:.3g}" for k, v in limits.items()))
    return limits


def resplit_model(model_dir, split_block: int, log=print) -> None:
    """Save a model's network split at another block boundary (NetworkSpec.split_block), so that its gate reads
    that block's map: the same layers and weights, grouped anew into lower / upper / head, checked to give the
    same scores. The caller refits the gate and exports LiteRT again (fit_gate --split-block)."""
    import dataclasses

    import keras

    from ml.model.network import Network
    from ml.training.config import TrainConfig
    from ml.training.export import compress_keras_file
    from ml.training.loop import network_spec

    model_dir = Path(model_dir)
    meta = read_metadata(model_dir)
    known = {f.name for f in dataclasses.fields(TrainConfig)}  # the recipe as recorded, less settings since removed
    recorded = {k: v for k, v in meta.get("training", {}).items() if k in known}
    config = TrainConfig(**{"datasets": [], **recorded, "image_size": image_size_of(meta), "split_block": split_block})
    old = load_keras_model(model_dir / MODEL_FILENAME)
    spec = network_spec(config)
    new = Network(spec)

    def leaves(model):
        return {layer.name: layer for part in ("lower", "upper", "head") for layer in model.get_layer(part).layers}

    old_layers, new_layers = leaves(old), leaves(new.model)
    if set(old_layers) != set(new_layers):
        raise ValueError(f"{model_dir}: its layers are not those of the network {spec} builds")
    for name, layer in old_layers.items():
        new_layers[name].set_weights(layer.get_weights())
    probe = np.random.default_rng(0).uniform(0, 255, (2, spec.image_size, spec.image_size, 3)).astype(np.float32)
    gap = float(np.abs(np.asarray(new.model(probe)) - np.asarray(old(probe))).max())
    if gap > 1e-5:
        raise ValueError(f"the re-split network scores differently (by {gap:.2g}): not saved")
    keras.Model(new.model.inputs, new.model.outputs, name=old.name).save(model_dir / MODEL_FILENAME)
    compress_keras_file(model_dir / MODEL_FILENAME)
    meta = read_metadata(model_dir)
    meta.setdefault("training", {})["split_block"] = split_block
    write_metadata(model_dir, meta)
    log(f"{model_dir / MODEL_FILENAME}: split at block {split_block} (lower part ends in {new.lower.layers[-1].name})")
