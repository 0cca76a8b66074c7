"""Management commands: retry_predictions, ensure_clinician, and DRF's drf_create_token."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.models import Prediction
from diagnosis.tests.helpers import RED, image_bytes, upload_file
from ml.serving import classifier

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def submit(user):
    return services.submit_upload(uploaded_by=user, image=check_image(upload_file(image_bytes(color=RED))))


def test_retry_predictions_assesses_what_the_missing_model_left(no_model, clinician, settings, standin_model_dir):
    first, second = submit(clinician), submit(clinician)
    assert {first.status, second.status} == {"no_model"}

    assert "No model available: 2" in run("retry_predictions")  # still no model: nothing lost, nothing changed
    assert set(Prediction.objects.values_list("status", flat=True)) == {"no_model"}

    settings.SKINCARE_MODEL_DIR = standin_model_dir
    classifier.reset()
    out = run("retry_predictions", str(first.pk))
    assert "Retrying 1 prediction(s)" in out and "Done: 1" in out
    out = run("retry_predictions")
    assert "Retrying 1 prediction(s)" in out and "All assessed." in out
    assert set(Prediction.objects.values_list("status", flat=True)) == {"done"}
    assert "Nothing to retry" in run("retry_predictions")


def test_ensure_clinician_creates_once_with_a_random_password(django_user_model):
    out = run("ensure_clinician")
    password = re.search(r"with password: (\S+)", out).group(1)
    user = django_user_model.objects.get(username="clinician")
    assert user.check_password(password) and not user.is_staff
    assert len(password) >= 16
    again = run("ensure_clinician")
    assert "exists" in again and password not in again
    user.refresh_from_db()
    assert user.check_password(password)  # not reset

    other = run("ensure_clinician", "--username", "clinician2")
    assert re.search(r"with password: (\S+)", other).group(1) != password


def test_ensure_clinician_reviewer_can_use_the_admin(client):
    run("ensure_clinician", "--username", "reviewer", "--reviewer")
    reviewer = get_user_model().objects.get(username="reviewer")
    assert reviewer.is_staff and not reviewer.is_superuser
    assert reviewer.has_perm("diagnosis.change_prediction") and not reviewer.has_perm("diagnosis.delete_prediction")


def test_drf_create_token(clinician):
    out = run("drf_create_token", "clinician")
    assert Token.objects.get(user=clinician).key in out


def test_ensure_clinician_gives_an_existing_reviewer_the_new_permissions(django_user_model):
    run("ensure_clinician", "--username", "reviewer", "--reviewer")
    reviewer = django_user_model.objects.get(username="reviewer")
    reviewer.user_permissions.remove(*reviewer.user_permissions.filter(codename="view_auditevent"))
    out = run("ensure_clinician", "--username", "reviewer", "--reviewer")
    assert "password is unchanged" in out
    reviewer = django_user_model.objects.get(username="reviewer")  # fresh permission cache
    assert reviewer.has_perm("diagnosis.view_auditevent") and reviewer.has_perm("diagnosis.view_lesion")
    assert not reviewer.has_perm("diagnosis.change_auditevent") and not reviewer.has_perm("diagnosis.delete_auditevent")
