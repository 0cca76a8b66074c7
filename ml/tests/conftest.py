"""Fixtures that find the shared, real datasets (../shared/datasets next to the repo).

Tests that need them skip with the path they looked at, so a fresh clone without the
data still has a green, honest test run.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _dataset(datasets_root: Path, name: str) -> Path:
    path = datasets_root / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name!r} not found at {path}")
    return path


@pytest.fixture(scope="session")
def ham10000_root(datasets_root) -> Path:
    return _dataset(datasets_root, "ham10000")


@pytest.fixture(scope="session")
def ph2_root(datasets_root) -> Path:
    return _dataset(datasets_root, "ph2")


@pytest.fixture(scope="session")
def becode_root(datasets_root) -> Path:
    return _dataset(datasets_root, "becode_sample")


@pytest.fixture(scope="session")
def isic2017_root(datasets_root) -> Path:
    return _dataset(datasets_root, "isic2017")


def train_small_model(datasets: list[Path], out: Path, cache: Path, *extra: str) -> Path:
    """train_model on stratified 120-image subsets of each dataset: a few minutes on 2 CPUs."""
    from django.core.management import call_command

    call_command(
        "train_model",
        *map(str, datasets),
        "--limit",
        "120",
        "--epochs",
        "3",
        "--finetune-epochs",
        "1",
        "--benign-views",
        "1",
        "--max-views",
        "3",
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
    )
    return out


@pytest.fixture(scope="session")
def small_training_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def small_model(ham10000_root, isic2017_root, tmp_path_factory, small_training_cache):
    """(HAM10000 folder, a small model trained on it and on isic2017, two sources), shared by the training tests.
    At --image-size 225, so that every path from a photo to the model's input (the training cache, the gate, the
    export, calibration, evaluation, serving) is shown to follow the side the model records, not the default."""
    out = train_small_model(
        [ham10000_root, isic2017_root], tmp_path_factory.mktemp("model"), small_training_cache, "--image-size", "225"
    )
    return (ham10000_root, isic2017_root), out
