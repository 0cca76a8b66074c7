"""Start the production configuration (gunicorn, DEBUG off) on loopback, for the load test
and the deployment tests: a fresh database and media folder, a user with an API token.

Nothing here imports Django or TensorFlow: every step is a subprocess, as in a deployment.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO_ROOT / "ml" / "artifacts" / "model"
POSTGRES_SCRIPT = REPO_ROOT / ".ci" / "postgres.sh"
# The load test's requests carry the header a TLS proxy in front would set, and the
# server trusts it (DJANGO_SECURE_PROXY_SSL_HEADER=1), as in a deployment behind one.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
BEHIND_PROXY_ENV = {"DJANGO_SECURE_PROXY_SSL_HEADER": "1"}
# What the benchmarks measure: the server behind its proxy, not the per-user API throttle (docs/operations.md).
BENCHMARK_ENV = {**BEHIND_PROXY_ENV, "SKINCARE_API_THROTTLE_USER": ""}


def shipped_model_present() -> bool:
    return (SHIPPED_MODEL / "metadata.json").is_file() and (SHIPPED_MODEL / "model.keras").is_file()


def write_standin(directory: Path) -> Path:
    """The stand-in model (ml.testing), written by a subprocess so this one stays free of TensorFlow."""
    code = "import sys; from ml.testing import write_standin_model; write_standin_model(sys.argv[1], threshold=0.5)"
    subprocess.run(
        [sys.executable, "-c", code, str(directory)], cwd=REPO_ROOT, check=True, capture_output=True, timeout=300
    )
    return directory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def production_env(workdir: Path, database_url: str, model_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a deployment (README, "Deploy"), with everything under workdir."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SKINCARE_", "GUNICORN_", "DATABASE_URL", "WEB_CONCURRENCY"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="skincare_site.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url,
        DJANGO_MEDIA_ROOT=str(workdir / "media"),
        DJANGO_STATIC_ROOT=str(workdir / "static"),
        SKINCARE_MODEL_DIR=str(model_dir),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout


def create_token(env: dict[str, str], username: str = "bench") -> str:
    """A user (random password, never used) and its API token, through manage.py as a person would."""
    manage(env, "ensure_clinician", "--username", username)
    out = manage(env, "drf_create_token", username)
    found = re.search(r"\b([0-9a-f]{40})\b", out)
    if not found:
        raise RuntimeError(f"no token in drf_create_token's output: {out!r}")
    return found.group(1)


def count_rows(env: dict[str, str]) -> dict[str, int]:
    code = (
        "from diagnosis.models import Prediction, Upload; import json;"
        "print(json.dumps({'uploads': Upload.objects.count(), 'predictions': Prediction.objects.count(),"
        " 'prediction_ids': list(Prediction.objects.values_list('id', flat=True))}))"
    )
    import json

    return json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])


@dataclass
class Postgres:
    """A throwaway PostgreSQL server (.ci/postgres.sh, Debian's package) on loopback."""

    directory: Path
    port: int = field(default_factory=free_port)
    url: str = ""

    def __enter__(self) -> Postgres:
        completed = subprocess.run(
            ["bash", str(POSTGRES_SCRIPT), "start", str(self.directory), str(self.port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"could not start PostgreSQL: {completed.stderr.strip()}")
        self.url = completed.stdout.strip().splitlines()[-1]
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", str(self.directory)], capture_output=True, timeout=120)


@dataclass
class Gunicorn:
    """gunicorn skincare_site.wsgi with the repository's gunicorn.conf.py, bound to loopback."""

    env: dict[str, str]
    log_path: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Gunicorn:
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "skincare_site.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 300) -> None:
        """Until it answers, and (where the model is warmed up at start) every worker has its model."""
        deadline = time.monotonic() + timeout
        warm = self.env.get("SKINCARE_WARM_MODEL", "1") not in {"0", "false", "no", "off"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}):\n{self.log_path.read_text()[-4000:]}")
            log = self.log_path.read_text()
            ready_workers = len(re.findall(r"Model loaded and warmed up|No model to warm up|Model warm-up failed", log))
            if not warm or ready_workers >= self.workers:
                try:
                    request = urllib.request.Request(f"{self.url}/accounts/login/", headers=PROXY_HEADERS)
                    with urllib.request.urlopen(request, timeout=10) as response:
                        if response.status == 200:
                            return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(0.5)
        raise TimeoutError(f"gunicorn not ready after {timeout:.0f} s:\n{self.log_path.read_text()[-4000:]}")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
