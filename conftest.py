"""Fixtures shared by the whole suite.

Every test gets its own MEDIA_ROOT under pytest's tmp dir, so uploads never land
in the project's media/ folder. The stand-in model (ml.testing) is written once
per session; tests that use it point SKINCARE_MODEL_DIR at it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent


def datasets_dir() -> Path:
    """$SKINCARE_DATASETS, else ../shared/datasets beside the repository (as in CI)."""
    from ml.data.datasets import shared_datasets_root

    return shared_datasets_root()


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    """The shared datasets folder, or a skip that says where it was looked for."""
    found = datasets_dir()
    if not found.is_dir():
        pytest.skip(f"shared datasets not found at {found} (set SKINCARE_DATASETS to their folder)")
    return found


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """The API's throttles count in Django's cache: every test starts with none used."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def no_model(settings, tmp_path):
    """No model artifact at all: the state of a fresh clone before the model ships."""
    from ml.serving import classifier

    settings.SKINCARE_MODEL_DIR = tmp_path / "no-model-here"
    classifier.reset()
    yield settings.SKINCARE_MODEL_DIR
    classifier.reset()


@pytest.fixture(scope="session")
def standin_model_dir(tmp_path_factory) -> Path:
    from ml.testing import write_standin_model

    return write_standin_model(tmp_path_factory.mktemp("standin-model"), threshold=0.5)


@pytest.fixture
def standin_model(settings, standin_model_dir):
    """The tiny real Keras stand-in: P(malignant) rises with redness (R - B)."""
    from ml.serving import classifier

    settings.SKINCARE_MODEL_DIR = standin_model_dir
    classifier.reset()
    yield standin_model_dir
    classifier.reset()


@pytest.fixture(scope="session", autouse=True)
def plain_http_test_server(tmp_path_factory):
    """The test client and the live server talk plain HTTP on loopback, with no
    collectstatic run. With DEBUG off the settings are HTTPS-only and expect
    collectstatic's manifest (production); e2e/test_deploy.py checks exactly that,
    in subprocesses with the production environment. Session-wide, so that the
    live server's middleware (built once) sees these settings too."""
    from django.test import override_settings

    with override_settings(
        SECURE_SSL_REDIRECT=False,
        SESSION_COOKIE_SECURE=False,
        CSRF_COOKIE_SECURE=False,
        SECURE_HSTS_SECONDS=0,
        STATIC_ROOT=tmp_path_factory.mktemp("static"),
        # Tests log in often: the fast hasher, never used outside the tests.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    ):
        yield
