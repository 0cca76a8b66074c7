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
