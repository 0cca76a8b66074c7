"""The production configuration, checked as it is deployed: subprocesses with the
production environment (DEBUG off, secret key, allowed hosts, DATABASE_URL), and
gunicorn itself serving pages, static files (WhiteNoise) and the API on loopback.

Nothing here reads the caller's DATABASE_URL: every server gets its own SQLite file.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.server import BEHIND_PROXY_ENV, Gunicorn, create_token, manage, production_env

from .conftest import REPO_ROOT, SHIPPED_MODEL, shipped_model_present

SETTINGS_PROBE = (
    "import json, django; from django.conf import settings; django.setup(); print(json.dumps({"
    "'DEBUG': settings.DEBUG, 'SECURE_SSL_REDIRECT': settings.SECURE_SSL_REDIRECT,"
    " 'SESSION_COOKIE_SECURE': settings.SESSION_COOKIE_SECURE, 'CSRF_COOKIE_SECURE': settings.CSRF_COOKIE_SECURE,"
    " 'SECURE_HSTS_SECONDS': settings.SECURE_HSTS_SECONDS, 'SECURE_PROXY_SSL_HEADER': settings.SECURE_PROXY_SSL_HEADER,"
    " 'ENGINE': settings.DATABASES['default']['ENGINE']}))"
)


@pytest.fixture
def model_dir(standin_model_dir) -> Path:
    return SHIPPED_MODEL if shipped_model_present() else standin_model_dir


@pytest.fixture
def prod_env(tmp_path, model_dir):
    def make(database_url: str | None = None, **extra: str) -> dict[str, str]:
        return production_env(tmp_path, database_url or f"sqlite:///{tmp_path / 'db.sqlite3'}", model_dir, **extra)

    return make


def check_deploy(env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def settings_in(env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "database_url",
    [None, "postgres://skincare:not-a-real-password@127.0.0.1:5432/skincare"],
    ids=["sqlite", "postgres"],
)
def test_check_deploy_passes_with_the_production_environment(prod_env, database_url):
    completed = check_deploy(prod_env(database_url))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "System check identified no issues" in completed.stdout
    assert "WARNING" not in completed.stderr


def test_debug_off_is_https_only_by_default(prod_env):
    found = settings_in(prod_env())
    assert found == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 60 * 60 * 24 * 30,
        "SECURE_PROXY_SSL_HEADER": None,  # never trusted unless a proxy is declared
        "ENGINE": "django.db.backends.sqlite3",
    }
    debug = settings_in(prod_env(DJANGO_DEBUG="1"))
    assert not (debug["SECURE_SSL_REDIRECT"] or debug["SESSION_COOKIE_SECURE"] or debug["SECURE_HSTS_SECONDS"])


def test_postgres_url_selects_postgresql(prod_env):
    found = settings_in(prod_env("postgres://skincare:pw@127.0.0.1:5432/skincare"))
    assert found["ENGINE"] == "django.db.backends.postgresql"


def test_behind_a_tls_proxy_the_redirect_can_be_left_to_it(prod_env):
    env = prod_env(DJANGO_SECURE_PROXY_SSL_HEADER="1", DJANGO_SECURE_SSL_REDIRECT="0")
    found = settings_in(env)
    assert found["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert found["SECURE_SSL_REDIRECT"] is False and found["SESSION_COOKIE_SECURE"] is True
    completed = check_deploy(env)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_redirect_off_without_a_proxy_is_refused_by_check_deploy(prod_env):
    completed = check_deploy(prod_env(DJANGO_SECURE_SSL_REDIRECT="0"))
    assert completed.returncode != 0
    assert "security.W008" in completed.stderr


def request(server, method, path, headers=None, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def test_gunicorn_serves_the_production_configuration(tmp_path, prod_env, datasets_root):
    """What a TLS proxy in front of gunicorn sees: http redirected, https pages with HSTS and
    secure cookies, hashed static files from WhiteNoise, and an upload through the API whose
    image comes back only with the token."""
    from bench.load import multipart

    env = prod_env(**BEHIND_PROXY_ENV)
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")
    token = create_token(env, "deploy-check")
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
    https = {"X-Forwarded-Proto": "https"}

    with Gunicorn(env, tmp_path / "gunicorn.log", workers=1) as server:
        server.wait_ready()
        response, _ = request(server, "GET", "/accounts/login/")
        assert response.status == 301
        assert response.getheader("Location") == f"https://127.0.0.1:{server.port}/accounts/login/"

        response, body = request(server, "GET", "/accounts/login/", https)
        assert response.status == 200 and b"Log in" in body
        assert response.getheader("Strict-Transport-Security") == "max-age=2592000; includeSubDomains"
        cookies = response.getheader("Set-Cookie") or ""
        assert "csrftoken=" in cookies and "Secure" in cookies

        response, body = request(
            server, "GET", f"/static/{manifest['admin/css/base.css']}", {**https, "Accept-Encoding": "gzip"}
        )
        assert response.status == 200 and response.getheader("Content-Encoding") == "gzip"
        assert "immutable" in response.getheader("Cache-Control")

        photo = sorted((datasets_root / "ph2" / "images").glob("IMD*.jpg"))[0]
        body, content_type = multipart({"patient_ref": "DEPLOY-1"}, photo.name, photo.read_bytes())
        response, answer = request(
            server,
            "POST",
            "/api/predictions/",
            {**https, "Authorization": f"Token {token}", "Content-Type": content_type},
            body,
        )
        assert response.status == 201, answer
        created = json.loads(answer)
        assert created["status"] == "done" and created["image_url"].startswith("https://127.0.0.1")

        image_path = "/" + created["image_url"].split("/", 3)[3]
        response, image = request(server, "GET", image_path, {**https, "Authorization": f"Token {token}"})
        assert response.status == 200 and image.startswith(b"\x89PNG")
        response, _ = request(server, "GET", image_path, https)
        assert response.status == 401


def test_load_script_short_run(tmp_path, datasets_root, model_dir):
    """bench/load.py end to end for a few seconds: no errors, nothing lost or doubled."""
    from bench import load

    out = tmp_path / "load.json"
    code = load.main(
        [
            "--duration",
            "4",
            "--clients",
            "2",
            "--workers",
            "1",
            "--photos",
            "20",
            "--model-dir",
            str(model_dir),
            "--datasets",
            str(datasets_root),
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0, report
    assert report["errors"] == 0 and report["successes"] > 0 and report["nothing_lost_or_doubled"]
