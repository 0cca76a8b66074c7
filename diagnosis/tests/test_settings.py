"""Settings from the environment, and the system checks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from skincare_site.settings import env_bool, env_list, local_secret_key

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_local_secret_key_is_generated_once_and_private(tmp_path):
    path = tmp_path / ".secret_key"
    key = local_secret_key(path)
    assert len(key) >= 50 and local_secret_key(path) == key
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_secret_key_file_is_git_ignored():
    completed = subprocess.run(["git", "check-ignore", "-q", ".secret_key"], cwd=REPO_ROOT)
    if completed.returncode == 128:
        pytest.skip("not a git checkout")
    assert completed.returncode == 0


def test_env_parsing(monkeypatch):
    monkeypatch.setenv("X_BOOL", "False")
    monkeypatch.setenv("X_LIST", "a.example, b.example ,")
    assert env_bool("X_BOOL", True) is False and env_bool("X_UNSET", True) is True
    assert env_list("X_LIST", "") == ["a.example", "b.example"]


def test_settings_follow_the_environment(tmp_path):
    code = (
        "import django, json; from django.conf import settings; django.setup();"
        "print(json.dumps([settings.DEBUG, settings.ALLOWED_HOSTS, settings.DATABASES['default']['NAME'],"
        " str(settings.MEDIA_ROOT), settings.SECRET_KEY, settings.SKINCARE_MAX_UPLOAD_SIZE]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skincare_site.settings",
        "DJANGO_DEBUG": "1",
        "DJANGO_ALLOWED_HOSTS": "clinic.example",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
        "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
        "DJANGO_SECRET_KEY": "from-the-environment",
        "SKINCARE_MAX_UPLOAD_SIZE": "1234",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f'[true, ["clinic.example"], "{tmp_path / "x.sqlite3"}", "{tmp_path / "media"}", "from-the-environment", 1234]'
    )


def test_check_warns_when_there_is_no_model(no_model):
    err = io.StringIO()
    call_command("check", stdout=io.StringIO(), stderr=err)
    assert "diagnosis.W001" in err.getvalue() and "No model available" in err.getvalue()


def test_check_is_quiet_with_a_model(standin_model):
    err = io.StringIO()
    call_command("check", stdout=io.StringIO(), stderr=err)
    assert "diagnosis.W001" not in err.getvalue()


@pytest.mark.parametrize("rise", [0, -0.1, 1.5, "0.2"])
def test_check_refuses_an_impossible_evolution_rise(settings, rise):
    from diagnosis.checks import evolution_rule_check

    settings.SKINCARE_EVOLUTION_MIN_RISE = rise
    assert [e.id for e in evolution_rule_check(None)] == ["diagnosis.E003"]


def test_evolution_settings_follow_the_environment():
    code = "import django, json; from django.conf import settings; django.setup(); print(json.dumps([settings.SKINCARE_EVOLUTION_MIN_RISE, settings.SKINCARE_EVOLUTION_HIGHER_OUTCOME]))"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skincare_site.settings",
        "SKINCARE_EVOLUTION_MIN_RISE": "0.25",
        "SKINCARE_EVOLUTION_HIGHER_OUTCOME": "0",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0.25, false]"


@pytest.mark.parametrize("method", ["", "grad-cam", "Occlusion"])
def test_check_refuses_an_unknown_heat_map(settings, method):
    from diagnosis.checks import heatmap_check

    settings.SKINCARE_HEATMAP = method
    assert [e.id for e in heatmap_check(None)] == ["diagnosis.E004"]
    settings.SKINCARE_HEATMAP = "occlusion"
    assert heatmap_check(None) == []
