"""Fixtures for the end-to-end and deployment tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"
SHIPPED_MODEL = REPO_ROOT / "ml" / "artifacts" / "model"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_or_skip(reason: str):
    """Outside CI a missing tool is a skip with the reason; in CI it is a failure."""
    if in_ci():
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


def shipped_model_present() -> bool:
    return (SHIPPED_MODEL / "metadata.json").is_file() and (SHIPPED_MODEL / "model.keras").is_file()


@pytest.fixture
def serving_model(settings, standin_model_dir) -> Path:
    """The shipped model where it is installed, else the stand-in (same interface)."""
    from ml.serving import classifier

    settings.SKINCARE_MODEL_DIR = SHIPPED_MODEL if shipped_model_present() else standin_model_dir
    classifier.reset()
    yield settings.SKINCARE_MODEL_DIR
    classifier.reset()


@pytest.fixture
def artifacts_dir(request) -> Path:
    """test-artifacts/<test name>/ (git-ignored), emptied at the start of the test."""
    target = ARTIFACTS / request.node.name.replace("/", "_")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    return target
