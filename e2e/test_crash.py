"""A server killed (SIGKILL, no clean-up of any kind) at the moment an upload's file
appears in the media folder: the database holds no row for it, the file it left is
found by `check_media` and removed by `check_media --fix`, after which check_media
reports nothing; and no temporary copy of the photo (EXIF and GPS included) is left in
the temp folder, since uploads are held in memory (diagnosis/uploadhandler.py).

gunicorn in the production configuration, as deployed (bench/server.py); its own
SQLite file, media folder and temp folder.
"""

from __future__ import annotations

import http.client
import io
import os
import signal
import subprocess
import sys
import threading
import time

from PIL import Image

from bench.load import multipart
from bench.server import BEHIND_PROXY_ENV, PROXY_HEADERS, Gunicorn, count_rows, create_token, manage, production_env

from .conftest import REPO_ROOT


def large_jpeg_with_gps(side: int = 1600) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 12.0), 3: "E", 4: (4.0, 53.0, 44.0)}  # GPSInfo
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        buffer, format="JPEG", quality=95, exif=exif.tobytes()
    )
    return buffer.getvalue()


def check_media(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check_media", "--min-age", "0", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_kill_at_the_moment_the_file_appears_leaves_nothing_check_media_cannot_clean(tmp_path):
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    env = production_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite3'}",
        tmp_path / "no-model",
        **BEHIND_PROXY_ENV,
        SKINCARE_WARM_MODEL="0",
        TMPDIR=str(tmp_dir),
        WEB_CONCURRENCY="1",
    )
    manage(env, "migrate", "--noinput")
    token = create_token(env)
    uploads = tmp_path / "media" / "uploads"
    # A large photo (over Django's in-memory limit, so Django would spool it to a temporary file)
    # with EXIF and GPS: its thumbnail takes a while to draw after the photo's file appears, so
    # the kill lands before the commit.
    body, content_type = multipart({"patient_ref": "PT-1"}, "mole.jpg", large_jpeg_with_gps())
    assert len(body) > 2_621_440
    leftovers: list[str] = []

    with Gunicorn(env, tmp_path / "gunicorn.log", workers=1) as server:
        server.wait_ready(timeout=120)

        def send():
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            try:
                connection.request(
                    "POST",
                    "/api/predictions/",
                    body=body,
                    headers={"Authorization": f"Token {token}", "Content-Type": content_type, **PROXY_HEADERS},
                )
                connection.getresponse().read()
            except (ConnectionError, http.client.HTTPException, OSError):
                pass  # killed: no answer
            finally:
                connection.close()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if uploads.is_dir() and any(entry.is_file() for entry in os.scandir(uploads)):
                os.killpg(server.process.pid, signal.SIGKILL)
                break
            time.sleep(0.001)  # the thumbnail takes tens of milliseconds after the photo's file appears
        else:
            raise AssertionError(
                "the upload's file never appeared:\n" + (tmp_path / "gunicorn.log").read_text()[-3000:]
            )
        server.process.wait(timeout=30)
        sender.join(timeout=30)
        leftovers = sorted(path.name for path in tmp_dir.rglob("*") if path.is_file())

    assert count_rows(env)["uploads"] == 0, "the kill came after the commit: nothing was left to find"
    assert leftovers == [], f"temporary copies of the upload left behind: {leftovers}"

    found = check_media(env)
    assert found.returncode == 1 and "orphan: uploads/" in found.stdout, found.stdout + found.stderr
    fixed = check_media(env, "--fix")
    assert fixed.returncode == 0 and "removed orphan uploads/" in fixed.stdout, fixed.stdout + fixed.stderr
    after = check_media(env)
    assert after.returncode == 0 and "nothing to report" in after.stdout, after.stdout + after.stderr
    assert not any(path.is_file() for path in (tmp_path / "media").rglob("*"))
