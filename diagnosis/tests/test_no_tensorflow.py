"""`manage.py check` and `migrate` must never import TensorFlow: only the first
prediction pays for it. Run in fresh interpreters, since this test process has
imported TensorFlow for the stand-in model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def imported_modules(*manage_args: str, env_extra: dict | None = None) -> set[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "skincare_site.settings", **(env_extra or {})}
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "manage.py", *manage_args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    modules = set()
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    assert "django" in modules  # the -X importtime report was read
    return modules


def test_check_does_not_import_tensorflow():
    modules = imported_modules("check")
    assert not [m for m in modules if m.split(".")[0] in {"tensorflow", "keras"}]


def test_migrate_does_not_import_tensorflow(tmp_path):
    modules = imported_modules(
        "migrate", "--noinput", env_extra={"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    )
    assert not [m for m in modules if m.split(".")[0] in {"tensorflow", "keras"}]
