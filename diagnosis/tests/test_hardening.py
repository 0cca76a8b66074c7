"""Regression tests for issue 34's probes 1-7: each failed before its fix.

1. out-of-range ids (500 OverflowError) -> 400 JSON naming the field, or 404;
   every API error, unexpected ones included, is JSON;
3. a read-only or full media storage -> 503 with a message a person can act on, nothing stored;
4. no temporary copy of an upload (EXIF and GPS included) in the temp folder;
5. failed logins locked out (audited), API calls throttled per user and anonymous;
6. Unicode bidi controls refused in lesion names and other free text;
7. no server path in a "not assessed" reason.
"""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
from django.core.files.storage import FileSystemStorage
from django.test import RequestFactory
from django.urls import reverse

from diagnosis import errors, reasons, selectors, services
from diagnosis.models import AuditEvent, Lesion, Prediction, Upload
from diagnosis.tests.helpers import image_bytes, jpeg_with_exif, noise_bytes, upload_file

pytestmark = pytest.mark.django_db

API = "/api/predictions/"
TOO_LARGE = "9223372036854775808"  # 2**63: one more than SQLite (and PostgreSQL's bigint) can hold


def post_image(client, content=None, headers=None, **fields):
    return client.post(API, {"image": upload_file(content or image_bytes()), **fields}, **(headers or {}))


class TestOutOfRangeIds:
    @pytest.mark.parametrize("value", [TOO_LARGE, "99999999999999999999999", "-1", "0"])
    def test_api_lesion_filter_is_a_400_naming_the_field(self, client, token_headers, value):
        response = client.get(API, {"lesion": value}, **token_headers)
        assert response.status_code == 400 and response["Content-Type"] == "application/json"
        assert "lesion id" in response.json()["lesion"][0]

    def test_the_largest_id_is_accepted_and_names_nothing(self, client, token_headers):
        response = client.get(API, {"lesion": str(2**63 - 1)}, **token_headers)
        assert response.status_code == 200 and response.json()["count"] == 0

    def test_history_page_with_a_huge_lesion_shows_everything(self, logged_in, standin_model):
        post_image(logged_in)
        response = logged_in.get(reverse("diagnosis:history"), {"lesion": TOO_LARGE})
        assert response.status_code == 200 and len(response.context["page"].object_list) == 1

    def test_upload_page_with_a_huge_lesion(self, logged_in):
        assert logged_in.get(reverse("diagnosis:upload"), {"lesion": TOO_LARGE}).status_code == 200

    @pytest.mark.parametrize("path", [f"{API}{TOO_LARGE}/", f"{API}abc/", f"{API}-3/"])
    def test_api_detail_with_an_impossible_id_is_a_json_404(self, client, token_headers, path):
        response = client.get(path, **token_headers)
        assert response.status_code == 404 and "detail" in response.json()

    @pytest.mark.parametrize("name", ["diagnosis:result", "diagnosis:lesion"])
    def test_pages_with_a_huge_id_are_a_404(self, logged_in, name):
        path = reverse(name, args=[1]).replace("/1/", f"/{TOO_LARGE}/")
        assert logged_in.get(path).status_code == 404

    def test_upload_with_a_huge_lesion_is_a_400_naming_the_field(self, client, token_headers, standin_model):
        response = post_image(client, headers=token_headers, lesion=TOO_LARGE)
        assert response.status_code == 400 and "There is no such lesion" in response.json()["lesion"][0]
        assert not Upload.objects.exists()


class TestEveryApiErrorIsJson:
    def test_an_unexpected_error_is_a_json_500(self, client, token_headers, monkeypatch):
        def broken(*args, **kwargs):
            raise RuntimeError("something unforeseen in /srv/secret/place")

        monkeypatch.setattr(selectors, "history", broken)
        response = client.get(API, **token_headers)
        assert response.status_code == 500 and response["Content-Type"] == "application/json"
        assert "unexpected error" in response.json()["detail"] and "/srv" not in response.content.decode()

    def test_an_unknown_api_url_is_a_json_404(self, client, token_headers):
        response = client.get("/api/no-such-thing/", **token_headers)
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}

    def test_django_error_views_answer_json_under_api_and_html_elsewhere(self):
        factory = RequestFactory()
        response = errors.server_error(factory.get("/api/predictions/"))
        assert response.status_code == 500 and response["Content-Type"] == "application/json"
        page = errors.server_error(factory.get("/history/"))
        assert page.status_code == 500 and page["Content-Type"].startswith("text/html")


class RefusingStorage(FileSystemStorage):
    """A media storage whose writes fail as a read-only or full disk does."""

    error = errno.EROFS

    def _save(self, name, content):
        raise OSError(self.error, os.strerror(self.error), os.path.join(self.location, name))


class FullStorage(RefusingStorage):
    error = errno.ENOSPC


@pytest.fixture(params=[RefusingStorage, FullStorage], ids=["read-only", "full"])
def refusing_storage(request, settings, media_root):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": f"{__name__}.{request.param.__name__}", "OPTIONS": {"location": str(media_root)}},
    }


class TestStorageFailure:
    def test_api_answers_503_json_and_stores_nothing(
        self, client, token_headers, standin_model, refusing_storage, media_root
    ):
        response = post_image(client, headers=token_headers, patient_ref="PT-1", lesion_name="left arm")
        assert response.status_code == 503 and response["Content-Type"] == "application/json"
        detail = response.json()["detail"]
        assert detail.startswith("The photo could not be saved: the image storage is not writable or is full.")
        assert str(media_root) not in detail
        assert not Upload.objects.exists() and not Lesion.objects.exists() and not AuditEvent.objects.exists()
        assert not any(path.is_file() for path in media_root.rglob("*")) if media_root.exists() else True

    def test_page_answers_503_with_the_message(self, logged_in, standin_model, refusing_storage):
        response = logged_in.post(reverse("diagnosis:upload"), {"image": upload_file(image_bytes())})
        assert response.status_code == 503
        assert "the image storage is not writable or is full" in response.content.decode()
        assert not Upload.objects.exists()


class TestNoTemporaryCopies:
    def test_an_upload_above_the_memory_limit_never_touches_the_temp_folder(
        self, client, token_headers, standin_model, settings, tmp_path, monkeypatch
    ):
        settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "tmp")
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR)
        monkeypatch.setattr(tempfile, "tempdir", settings.FILE_UPLOAD_TEMP_DIR)
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000  # the photo is far larger: Django would spool it to disk
        seen = []
        from diagnosis import forms

        original = forms.check_image

        def watching(uploaded):
            seen.append((type(uploaded).__name__, os.listdir(settings.FILE_UPLOAD_TEMP_DIR)))
            return original(uploaded)

        monkeypatch.setattr(forms, "check_image", watching)
        photo = jpeg_with_exif(size=(256, 256))
        response = post_image(client, photo, headers=token_headers)
        assert response.status_code == 201
        assert seen == [("InMemoryUploadedFile", [])]

    def test_memory_held_is_bounded_by_the_size_limit(
        self, client, token_headers, standin_model, settings, monkeypatch
    ):
        settings.SKINCARE_MAX_UPLOAD_SIZE = 50_000
        held = []
        from diagnosis import forms

        original = forms.check_image

        def watching(uploaded):
            held.append((uploaded.size, len(uploaded.file.getbuffer())))
            return original(uploaded)

        monkeypatch.setattr(forms, "check_image", watching)
        big = noise_bytes("PNG", (256, 256))
        response = post_image(client, big, headers=token_headers)
        assert response.status_code == 400
        assert response.json()["image"][0].startswith(f"The file is {len(big) / 1024:.1f} KB; the limit is 48.8 KB.")
        assert held == [(len(big), 50_001)]


class TestThrottling:
    def test_failed_logins_lock_the_account_out_and_are_audited(self, client, reviewer, settings):
        settings.AXES_FAILURE_LIMIT = 3
        reviewer.set_password("the-right-password-42")
        reviewer.save()
        login = reverse("login")
        for _ in range(3):
            client.post(login, {"username": "reviewer", "password": "wrong"})
        response = client.post(login, {"username": "reviewer", "password": "the-right-password-42"})
        assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
        assert "_auth_user_id" not in client.session
        event = AuditEvent.objects.filter(action=AuditEvent.Action.LOCKOUT).first()
        assert event is not None and event.target == reviewer and event.details["username"] == "reviewer"
        assert "wrong" not in str(event.details) and "the-right-password" not in str(event.details)

    def test_below_the_limit_the_right_password_logs_in(self, client, reviewer, settings):
        settings.AXES_FAILURE_LIMIT = 3
        reviewer.set_password("the-right-password-42")
        reviewer.save()
        client.post(reverse("login"), {"username": "reviewer", "password": "wrong"})
        client.post(reverse("login"), {"username": "reviewer", "password": "the-right-password-42"})
        assert client.session["_auth_user_id"] == str(reviewer.pk)

    def test_api_calls_are_throttled_per_user(self, client, token_headers, settings):
        settings.SKINCARE_API_THROTTLE_USER = "5/minute"
        answers = [client.get(API, **token_headers).status_code for _ in range(7)]
        assert answers == [200] * 5 + [429] * 2
        response = client.get(API, **token_headers)
        assert "detail" in response.json() and int(response["Retry-After"]) > 0

    def test_anonymous_calls_are_throttled_per_address(self, client, settings):
        settings.SKINCARE_API_THROTTLE_ANON = "3/minute"
        answers = [client.get(API).status_code for _ in range(5)]
        assert answers == [401] * 3 + [429] * 2

    def test_an_empty_rate_is_no_limit(self, client, token_headers, settings):
        settings.SKINCARE_API_THROTTLE_USER = ""
        assert {client.get(API, **token_headers).status_code for _ in range(40)} == {200}


BIDI = "\u202eevil\u202c"


class TestBidiControls:
    @pytest.mark.parametrize("field", ["lesion_name", "note"])
    def test_api_refuses_them_naming_the_field(self, client, token_headers, standin_model, field):
        response = post_image(client, headers=token_headers, patient_ref="PT-1", **{field: BIDI})
        assert response.status_code == 400 and "bidirectional controls" in response.json()[field][0]
        assert not Upload.objects.exists() and not Lesion.objects.exists()

    def test_the_services_refuse_them_too(self, clinician):
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError, match="bidirectional"):
            services.find_or_create_lesion(patient_ref="PT-1", name=BIDI, created_by=clinician)
        with pytest.raises(ValidationError, match="bidirectional"):
            services.check_review(Prediction.Decision.OTHER, "see \u2067note")

    def test_the_admin_refuses_a_renamed_lesion(self, clinician):
        from django.core.exceptions import ValidationError

        lesion = Lesion.objects.create(patient_ref="PT-1", name="left arm", created_by=clinician)
        lesion.name = BIDI
        with pytest.raises(ValidationError):
            lesion.full_clean()

    def test_ordinary_unicode_is_kept(self, client, token_headers, standin_model):
        response = post_image(
            client, headers=token_headers, patient_ref="PT-1", lesion_name="épaule gauche", note="Größer"
        )
        assert response.status_code == 201 and Lesion.objects.get().name == "épaule gauche"


class TestNoServerPathInReasons:
    def test_no_model_reason_names_no_folder(self, client, token_headers, no_model):
        body = post_image(client, headers=token_headers).json()
        prediction = Prediction.objects.get()
        assert body["reason"].startswith("No model available")
        for text in (body["reason"], body["message"], prediction.reason, prediction.message):
            assert str(no_model) not in text and "/" not in text, text

    @pytest.mark.parametrize(
        "raw, shown",
        [
            (
                "No model available: expected model.keras and metadata.json in /srv/app/ml/model",
                "No model available: expected model.keras and metadata.json in the server's folder",
            ),
            (
                "No model available: /srv/app/ml/model/model.keras could not be loaded (bad zip)",
                "No model available: model.keras could not be loaded (bad zip)",
            ),
            (
                "FileNotFoundError: [Errno 2] No such file or directory: '/var/media/uploads/ab.png'",
                "FileNotFoundError: [Errno 2] No such file or directory: 'ab.png'",
            ),
            ("ValueError: expected 224/224 pixels", "ValueError: expected 224/224 pixels"),
        ],
    )
    def test_public_reason(self, raw, shown):
        assert reasons.public_reason(raw) == shown


def test_the_new_settings_follow_the_environment():
    import json
    import subprocess
    import sys

    from conftest import REPO_ROOT

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skincare_site.settings",
        "SKINCARE_API_THROTTLE_USER": "7/minute",
        "SKINCARE_API_THROTTLE_ANON": "",
        "SKINCARE_LOGIN_FAILURE_LIMIT": "9",
        "SKINCARE_LOGIN_COOLOFF_HOURS": "0.5",
        "SKINCARE_MEDIA_ORPHAN_MIN_AGE": "60",
        "SKINCARE_AXES_ENABLED": "0",
    }
    code = (
        "import json; from django.conf import settings as s; print(json.dumps([s.SKINCARE_API_THROTTLE_USER,"
        " s.SKINCARE_API_THROTTLE_ANON, s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME, s.SKINCARE_MEDIA_ORPHAN_MIN_AGE,"
        " s.AXES_ENABLED]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["7/minute", "", 9, 0.5, 60, False], out.stderr


def test_a_reason_stored_before_the_fix_is_shown_without_its_path(client, token_headers, no_model):
    post_image(client, headers=token_headers)
    Prediction.objects.update(status="failed", reason="OSError: cannot read /srv/skincare/media/uploads/x.png")
    prediction = Prediction.objects.get()
    body = client.get(f"{API}{prediction.pk}/", **token_headers).json()
    assert body["reason"] == "OSError: cannot read x.png"
    assert "/srv" not in prediction.message and "/srv" not in body["message"]
