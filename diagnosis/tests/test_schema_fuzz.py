"""The API against its own OpenAPI schema, by an outside client: schemathesis's command
line, run against the live test server with a token, every check on, a fixed seed and a
bounded number of examples. It fails on any server error (5xx) or any answer that does
not match the schema (status, content type, headers, body)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from diagnosis.tests.helpers import image_bytes, upload_file

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 34
MAX_EXAMPLES = 25  # per operation: nine operations, a few hundred requests in all


def schemathesis_command() -> list[str]:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    if not found:
        pytest.fail("schemathesis is not installed: pip install -r requirements.txt")
    return [found]


@pytest.mark.django_db(transaction=True)
def test_schema_needs_a_signed_in_user(client, clinician):
    assert client.get("/api/schema/").status_code in (401, 403)
    client.force_login(clinician)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) >= {"/api/predictions/", "/api/predictions/{id}/", "/media/{path}"}
    create = schema["paths"]["/api/predictions/"]["post"]
    assert {"201", "400", "401", "413", "415", "429", "503"} <= set(create["responses"])


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    live_server, reviewer, standin_model, settings, tmp_path
):
    settings.SKINCARE_API_THROTTLE_USER = ""  # the fuzzer's own pace; the throttles have their own tests
    settings.SKINCARE_API_THROTTLE_ANON = ""
    # A reviewer: every operation is open to them (a clinician's token gets only 403 from the reviewers' ones).
    token = Token.objects.create(user=reviewer).key
    # A few real predictions (and their files) for the list, detail and media operations to find.
    from django.test import Client

    uploader = Client()
    for _ in range(2):
        response = uploader.post(
            "/api/predictions/",
            {"image": upload_file(image_bytes()), "patient_ref": "PT-1", "lesion_name": "left arm"},
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        assert response.status_code == 201
    command = [
        *schemathesis_command(),
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_server.url}/api/schema/",
        "--header",
        f"Authorization: Token {token}",
        "--header",
        "Accept: application/json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-8000:]
