from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token


@pytest.fixture
def clinician(db):
    return get_user_model().objects.create_user("clinician", password="not-used-in-tests-1")


@pytest.fixture
def other_clinician(db):
    return get_user_model().objects.create_user("colleague", password="not-used-in-tests-2")


@pytest.fixture
def logged_in(client, clinician):
    client.force_login(clinician)
    return client


@pytest.fixture
def token(clinician) -> str:
    return Token.objects.create(user=clinician).key


@pytest.fixture
def token_headers(token) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


@pytest.fixture(scope="session")
def banded_model_dir(tmp_path_factory):
    """The stand-in with an uncertain band: needs a doctor at 0.6 or above, uncertain from 0.4."""
    from ml.testing import write_standin_model

    return write_standin_model(tmp_path_factory.mktemp("banded-model"), threshold=0.6, uncertain_threshold=0.4)


@pytest.fixture(scope="session")
def close_call_model_dir(tmp_path_factory):
    """The banded stand-in with a boundary margin of 0.5 logits: a probability within it of 0.4 or 0.6
    is "close to a boundary"."""
    from ml.testing import write_standin_model

    return write_standin_model(
        tmp_path_factory.mktemp("close-call-model"), threshold=0.6, uncertain_threshold=0.4, boundary_margin=0.5
    )


@pytest.fixture(scope="session")
def checking_model_dir(tmp_path_factory):
    """The close-call stand-in that also checks its close calls again in all eight views (ml/serving/tta.py)."""
    from ml.testing import write_standin_model

    return write_standin_model(
        tmp_path_factory.mktemp("checking-model"),
        threshold=0.6,
        uncertain_threshold=0.4,
        boundary_margin=0.5,
        close_call_check=True,
    )


@pytest.fixture(scope="session")
def gated_model_dir(tmp_path_factory):
    """The stand-in with image-quality limits: a uniform image is not assessed."""
    from ml.testing import write_standin_model

    return write_standin_model(tmp_path_factory.mktemp("gated-model"), threshold=0.5, gate=True)


def _model_fixture(settings, directory):
    from ml.serving import classifier

    settings.SKINCARE_MODEL_DIR = directory
    classifier.reset()
    yield directory
    classifier.reset()


@pytest.fixture
def banded_model(settings, banded_model_dir):
    yield from _model_fixture(settings, banded_model_dir)


@pytest.fixture
def close_call_model(settings, close_call_model_dir):
    yield from _model_fixture(settings, close_call_model_dir)


@pytest.fixture
def checking_model(settings, checking_model_dir):
    settings.SKINCARE_CLOSE_CALL_CHECK = True  # off by default
    yield from _model_fixture(settings, checking_model_dir)


@pytest.fixture
def gated_model(settings, gated_model_dir):
    yield from _model_fixture(settings, gated_model_dir)


@pytest.fixture
def reviewer(django_user_model):
    """A reviewer as `make run` creates one (ensure_clinician --reviewer)."""
    import io

    from django.core.management import call_command

    call_command("ensure_clinician", "--username", "reviewer", "--reviewer", stdout=io.StringIO())
    return django_user_model.objects.get(username="reviewer")


@pytest.fixture
def reviewer_client(client, reviewer):
    client.force_login(reviewer)
    return client
