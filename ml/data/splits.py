"""Seeded, stratified, grouped train/val/test splits.

Grouped: every image of one lesion (one ``Sample.group``) lands in the same split,
or the test score would reward remembering a lesion rather than recognising one.
Stratified: each split gets its fraction of the benign and of the malignant groups,
so a small malignant class is not left out of a small test split by chance.
Deterministic: the same samples and seed give the same split, whatever their order.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ml.artifact import METADATA_FILENAME, SPLITS_FILENAME
from ml.data.datasets import Sample


def _groups_by_label(samples: Sequence[Sample]) -> tuple[dict[str, list[int]], dict[int, list[str]]]:
    """({group: its samples' indices}, {label: its groups}); a group's label is malignant if any of its
    images is."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        members[sample.group].append(index)
    strata: dict[int, list[str]] = defaultdict(list)
    for group, indices in members.items():
        strata[max(samples[i].label for i in indices)].append(group)
    return members, strata


def split_samples(
    samples: Sequence[Sample], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42
) -> tuple[list[Sample], ...]:
    """Split samples into len(fractions) lists (train, val, test by default).

    Groups are shuffled within each label (a group's label is malignant if any of its
    images is) and dealt out largest first, each to the split furthest below its
    target, so that fractions are met as closely as whole groups allow.
    Within each split the samples keep their input order.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and add up to 1, got {fractions}")

    members, strata = _groups_by_label(samples)

    rng = random.Random(seed)
    split_of_group: dict[str, int] = {}
    for label in sorted(strata):
        groups = sorted(strata[label])  # sorted first, so input order cannot change the result
        rng.shuffle(groups)
        groups.sort(key=lambda g: len(members[g]), reverse=True)  # stable: random among equals
        total = sum(len(members[g]) for g in groups)
        targets = [f * total for f in fractions]
        filled = [0] * len(fractions)
        for group in groups:
            open_splits = [i for i, f in enumerate(fractions) if f > 0]
            chosen = max(open_splits, key=lambda i: (targets[i] - filled[i], -i))
            split_of_group[group] = chosen
            filled[chosen] += len(members[group])

    result: tuple[list[Sample], ...] = tuple([] for _ in fractions)
    for sample in samples:
        result[split_of_group[sample.group]].append(sample)
    return result


def recorded_splits(model_dir) -> dict[str, set[str]]:
    """The image names a saved model held out, by split: {"validation": {...}, "test": {...}}."""
    path = Path(model_dir) / SPLITS_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this model recorded no held-out splits (train_model writes them)")
    recorded = json.loads(path.read_text())
    return {split: set(recorded[split]) for split in ("validation", "test")}


def trained_datasets(metadata: dict) -> list[str]:
    """The folder names of the datasets a model was trained on, in training order, from its metadata
    (`data.datasets`, or the single `data.dataset` of models trained before several sources)."""
    data = metadata.get("data", {})
    folders = data.get("datasets") or ([data["dataset"]] if data.get("dataset") else [])
    return [Path(folder).name for folder in folders]


def trained_on(model_dir) -> set[str]:
    """trained_datasets of a saved model folder, as a set (empty where it has no metadata.json)."""
    path = Path(model_dir) / METADATA_FILENAME
    return set(trained_datasets(json.loads(path.read_text()))) if path.is_file() else set()


def held_out_of(model_dirs, dataset, split: str, names) -> set[str] | None:
    """Of `names` (the image names of `dataset`), those every model in model_dirs held out as `split`.

    A model that was not trained on this dataset held all of it out and narrows nothing; the models that
    were trained on it must have held out the same images of it. None where no model was trained on it:
    then the dataset has no `split` of theirs (score it whole). ValueError where their splits differ."""
    folder, names = Path(dataset).name, set(names)
    recorded = [recorded_splits(m)[split] & names for m in model_dirs if folder in trained_on(m)]
    if not recorded:
        return None
    if any(held != recorded[0] for held in recorded[1:]):
        raise ValueError(f"the models did not hold out the same {split} split of {folder} (their splits.json differ)")
    return recorded[0]


def held_out(samples, held: dict[str, set[str]]) -> tuple[list, list, list]:
    """(train, validation, test) samples of a dataset, by a saved model's recorded_splits."""
    val = [s for s in samples if s.path.name in held["validation"]]
    test = [s for s in samples if s.path.name in held["test"]]
    train = [s for s in samples if s.path.name not in held["validation"] | held["test"]]
    return train, val, test
