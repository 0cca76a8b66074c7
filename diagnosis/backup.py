"""Backup and restore: the database and every stored file, with a manifest of checksums.

A backup is a folder:

    manifest.json     format, when, the database engine, and the SHA-256 of every file below
    database.sqlite3  SQLite: a consistent copy made with SQLite's online backup API
    database.dump     PostgreSQL: pg_dump's custom format (restored with pg_restore)
    media/<name>      every stored photo, thumbnail and heat map, under its storage name

The database is copied first, then the files, all through the storage API (so an
object store backs up the same way). An upload made while the backup runs may leave a
file the copied database does not know: `check_media --fix` removes it after a restore.

`restore` goes into an empty install only (migrated, nothing uploaded yet): it checks
every checksum before it touches anything, then brings back the database and the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from . import media
from .models import AuditEvent, Lesion, Prediction, Upload

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.dump"
MEDIA_DIR = "media"


class BackupError(Exception):
    """Why a backup or restore cannot go on, in words for the operator."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _engine(connection) -> str:
    if connection.vendor in ("sqlite", "postgresql"):
        return connection.vendor
    raise BackupError(f"Backups support SQLite and PostgreSQL, not {connection.vendor}.")


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_major(version_text: str) -> int:
    found = re.search(r"(\d+)(?:\.\d+)?", version_text)
    if not found:
        raise BackupError(f"Cannot read a PostgreSQL version from {version_text!r}.")
    return int(found.group(1))


def pg_tool(name: str, connection) -> str:
    """pg_dump / pg_restore of the server's major version where installed (Debian keeps one per
    version under /usr/lib/postgresql/N/bin), else the newest one at least as new as the server;
    a tool older than the server refuses to dump it, so that is an error that says what to install."""
    server = connection.pg_version // 10000
    candidates = []
    for directory in Path("/usr/lib/postgresql").glob("*/bin"):
        tool = directory / name
        if tool.is_file() and directory.parent.name.isdigit():
            candidates.append((int(directory.parent.name), str(tool)))
    on_path = shutil.which(name)
    if on_path:
        out = subprocess.run(
            [on_path, "--version"], capture_output=True, text=True
        ).stdout  # "pg_dump (PostgreSQL) 17.4"
        candidates.append((_pg_major(out.split(")", 1)[-1]), on_path))
    usable = sorted((major, tool) for major, tool in candidates if major >= server)
    if not usable:
        found = ", ".join(f"{tool} ({major})" for major, tool in candidates) or "none"
        raise BackupError(
            f"{name} for PostgreSQL {server} or newer is needed (found: {found}). "
            f"Install it: apt-get install postgresql-client-{server}."
        )
    exact = [tool for major, tool in usable if major == server]
    return exact[0] if exact else usable[0][1]


def _pg_args(connection) -> tuple[list[str], dict]:
    params = connection.get_connection_params()
    args = []
    for flag, key in (("--host", "host"), ("--port", "port"), ("--username", "user")):
        if params.get(key):
            args += [flag, str(params[key])]
    env = {**os.environ}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    return args + ["--dbname", params.get("dbname") or params.get("database")], env


def _run(command: list[str], env: dict) -> None:
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BackupError(
            f"{Path(command[0]).name} failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}"
        )


# --- backup -------------------------------------------------------------------------------


def backup(destination: Path, *, using: str = DEFAULT_DB_ALIAS, storage=None) -> dict:
    """Write the backup folder (new, or empty); returns its manifest."""
    storage = storage or default_storage
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty: back up into a new folder.")
    destination.mkdir(parents=True, exist_ok=True)
    connection = connections[using]
    engine = _engine(connection)
    connection.ensure_connection()
    if engine == "sqlite":
        database_file = destination / SQLITE_FILE
        target = sqlite3.connect(database_file)
        try:
            with connection.wrap_database_errors:
                connection.connection.backup(target)
        finally:
            target.close()
    else:
        database_file = destination / POSTGRES_FILE
        args, env = _pg_args(connection)
        _run(
            [
                pg_tool("pg_dump", connection),
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                "--file",
                str(database_file),
                *args,
            ],
            env,
        )

    files = {}
    for name in media.stored_names(storage):
        target = destination / MEDIA_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(name, "rb") as source, open(target, "wb") as copy:
            shutil.copyfileobj(source, copy)
        files[name] = sha256(target)

    manifest = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "engine": engine,
        "database": {"file": database_file.name, "sha256": sha256(database_file)},
        "media": files,
        "counts": {
            "predictions": Prediction.objects.using(using).count(),
            "uploads": Upload.objects.using(using).count(),
            "lesions": Lesion.objects.using(using).count(),
        },
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


# --- restore ------------------------------------------------------------------------------


def verify(source: Path) -> dict:
    """The manifest, once every file in it has its recorded checksum."""
    source = Path(source)
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} has no {MANIFEST}: not a backup folder made by manage.py backup.")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"Backup format {manifest.get('format')!r} is not {FORMAT}.")
    expected = {manifest["database"]["file"]: manifest["database"]["sha256"]}
    expected.update({f"{MEDIA_DIR}/{name}": digest for name, digest in manifest["media"].items()})
    for relative, digest in expected.items():
        path = source / relative
        if not path.is_file():
            raise BackupError(f"The backup is incomplete: {relative} is missing.")
        if sha256(path) != digest:
            raise BackupError(f"The backup is damaged: {relative} does not match its checksum.")
    return manifest


def ensure_empty(*, using: str = DEFAULT_DB_ALIAS, storage=None) -> None:
    storage = storage or default_storage
    rows = {model.__name__: model.objects.using(using).count() for model in (Upload, Lesion, AuditEvent)}
    stored = media.stored_names(storage)
    if any(rows.values()) or stored:
        held = ", ".join(f"{count} {name}" for name, count in rows.items() if count)
        raise BackupError(
            "restore goes into an empty install, and this one holds "
            + ", ".join(filter(None, [held, f"{len(stored)} stored file(s)" if stored else ""]))
            + ". Point DATABASE_URL and DJANGO_MEDIA_ROOT at a new database and folder, run migrate, then restore."
        )


def restore(source: Path, *, using: str = DEFAULT_DB_ALIAS, storage=None) -> dict:
    """Bring back a backup into this (empty) install; returns its manifest."""
    from django.contrib.contenttypes.models import ContentType

    storage = storage or default_storage
    source = Path(source)
    manifest = verify(source)
    connection = connections[using]
    engine = _engine(connection)
    if manifest["engine"] != engine:
        raise BackupError(f"This backup is of a {manifest['engine']} database; this install uses {engine}.")
    ensure_empty(using=using, storage=storage)

    database_file = source / manifest["database"]["file"]
    connection.ensure_connection()
    if engine == "sqlite":
        backup_db = sqlite3.connect(f"file:{database_file}?mode=ro", uri=True)
        try:
            with connection.wrap_database_errors:
                backup_db.backup(connection.connection)
        finally:
            backup_db.close()
    else:
        connection.close()  # pg_restore drops and recreates the tables
        args, env = _pg_args(connection)
        _run(
            [
                pg_tool("pg_restore", connection),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                *args,
                str(database_file),
            ],
            env,
        )
    ContentType.objects.clear_cache()

    for name in manifest["media"]:
        with open(source / MEDIA_DIR / name, "rb") as stream:
            saved = storage.save(name, ContentFile(stream.read()))
        if saved != name:
            raise BackupError(f"The storage kept {name} as {saved}: restore into an empty media storage.")
    return manifest
