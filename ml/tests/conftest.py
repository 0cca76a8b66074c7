"""Fixtures that find the shared, real datasets (../shared/datasets next to the repo).

Tests that need them skip with the path they looked at, so a fresh clone without the
data still has a green, honest test run.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_datasets_path() -> Path:
    configured = os.environ.get("SKINCARE_DATASETS")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    path = shared_datasets_path()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (set SKINCARE_DATASETS to their folder)")
    return path


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
