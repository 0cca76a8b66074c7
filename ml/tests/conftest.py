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
