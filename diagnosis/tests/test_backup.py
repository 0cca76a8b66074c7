"""manage.py backup and restore: a round trip into a fresh install brings back every
prediction, lesion, review, audit event, photo, thumbnail and heat map, byte for byte.
Runs on the database the suite runs on (SQLite's online backup API, or pg_dump)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from diagnosis import backup, media, services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Lesion, Prediction, Upload
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db(transaction=True)  # pg_dump reads what is committed


def snapshot() -> dict:
    return {
        "predictions": list(Prediction.objects.order_by("pk").values()),
        "uploads": list(Upload.objects.order_by("pk").values()),
        "lesions": list(Lesion.objects.order_by("pk").values()),
        "audit": list(AuditEvent.objects.order_by("pk").values("pk", "action", "user_id", "object_repr", "details")),
        "files": {name: default_storage.open(name).read() for name in media.stored_names()},
    }


@pytest.fixture
def clinic(standin_model, reviewer, clinician):
    for difference, lesion_name in ((60, "left arm"), (-60, "left arm"), (0, "")):
        image = check_image(upload_file(redness_png(difference), "m.png", "image/png"))
        services.submit_upload(uploaded_by=clinician, image=image, patient_ref="PT-1", lesion_name=lesion_name)
    services.record_review(Prediction.objects.first(), reviewer=reviewer, decision="confirmed")


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def fresh_install(settings, tmp_path):
    """What a new deployment holds after `migrate`: empty tables and an empty media folder."""
    call_command("flush", "--noinput")
    settings.MEDIA_ROOT = tmp_path / "fresh-media"


def test_round_trip_into_a_fresh_install(clinic, settings, tmp_path):
    before = snapshot()
    assert len(before["files"]) == 9 and len(before["predictions"]) == 3
    out = run("backup", str(tmp_path / "backup"))
    assert "3 prediction(s), 1 lesion(s); 9 file(s)" in out
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert set(manifest["media"]) == set(before["files"])

    fresh_install(settings, tmp_path)
    assert not Prediction.objects.exists() and media.stored_names() == []
    out = run("restore", str(tmp_path / "backup"))
    assert "3 prediction(s), 1 lesion(s), 9 file(s), every checksum verified" in out
    assert snapshot() == before
    assert media.check().clean


def test_a_damaged_backup_is_refused_before_anything_is_touched(clinic, settings, tmp_path):
    run("backup", str(tmp_path / "backup"))
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    damaged = tmp_path / "backup" / "media" / sorted(manifest["media"])[0]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    fresh_install(settings, tmp_path)
    with pytest.raises(CommandError, match="does not match its checksum"):
        run("restore", str(tmp_path / "backup"))
    assert media.stored_names() == [] and not Upload.objects.exists()


def test_restore_refuses_an_install_that_holds_data(clinic, tmp_path):
    run("backup", str(tmp_path / "backup"))
    before = snapshot()
    with pytest.raises(CommandError, match="restore goes into an empty install, and this one holds 3 Upload"):
        run("restore", str(tmp_path / "backup"))
    assert snapshot() == before


def test_backup_needs_a_new_folder(clinic, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "something").write_text("x")
    with pytest.raises(CommandError, match="is not empty"):
        run("backup", str(tmp_path / "used"))


def test_pg_tool_version_rule():
    assert backup._pg_major(" 17.4 (Debian 17.4-1)") == 17
    assert backup._pg_major(" 9.6.24") == 9
