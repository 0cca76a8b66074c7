"""Every stored file goes through here, and only through Django's storage API.

No file system path appears in the app: the storage named by STORAGES["default"]
(the local folder DJANGO_MEDIA_ROOT by default) could be an object store by a
settings change alone, and the tests run the uploads against Django's
InMemoryStorage too.

Files come before the rows that point at them, so a failure in between must not
leave them behind: `removed_on_failure()` deletes what was written in its block if
the block fails (the database work inside it rolled back), and a deletion that must
wait for its transaction (an erasure) goes through `delete_on_commit`. A process
killed between the two leaves a file no row points at: `manage.py check_media`
finds those (media.py) and removes them with --fix.

A storage that cannot be written (read-only, full, unreachable) raises
StorageUnavailable, which the pages and the API answer with 503 and a message a
person can act on; the details go to the log, never to the user.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.fields.files import FieldFile

logger = logging.getLogger(__name__)

UNAVAILABLE_MESSAGE = (
    "The photo could not be saved: the image storage is not writable or is full. "
    "Nothing was stored. Try again later, and tell the site's administrator if it persists "
    "(the server log says what the storage answered)."
)


class StorageUnavailable(Exception):
    """The media storage refused a write. str() is the message for the user."""

    def __init__(self, message: str = UNAVAILABLE_MESSAGE):
        super().__init__(message)


class Written:
    """The names written in one `removed_on_failure()` block."""

    def __init__(self):
        self.names: list[tuple[object, str]] = []

    def save(self, field_file: FieldFile, filename: str, content: bytes) -> str:
        name = save(field_file, filename, content)
        self.names.append((field_file.storage, name))
        return name

    def remove_all(self) -> None:
        for storage, name in self.names:
            delete(name, storage=storage)
        self.names.clear()


def save(field_file: FieldFile, filename: str, content: bytes) -> str:
    """Write `content` under the field's own (random) name; the field then points at it.
    The model instance is not saved: its row is written by the caller."""
    field = field_file.field
    name = field.generate_filename(field_file.instance, filename)
    try:
        stored = field_file.storage.save(name, ContentFile(content), max_length=field.max_length)
    except Exception as exc:
        logger.exception("The media storage refused to write %s", name)
        raise StorageUnavailable() from exc
    field_file.name = stored
    field_file._committed = True
    return stored


def delete(name: str, *, storage=None) -> bool:
    """Remove one stored file; False (logged) if the storage refused."""
    storage = storage or default_storage
    if not name:
        return True
    try:
        storage.delete(name)
    except Exception:
        logger.exception("The media storage could not delete %s (check_media --fix will)", name)
        return False
    return True


def delete_on_commit(names, *, storage=None) -> None:
    """Remove these files once the current transaction commits (at once outside one),
    so that a deletion rolled back keeps its files."""
    names = [name for name in names if name]
    transaction.on_commit(lambda: [delete(name, storage=storage) for name in names])


@contextmanager
def removed_on_failure():
    """Files saved through the yielded `Written` are deleted again if the block raises
    (or is interrupted: KeyboardInterrupt, SystemExit), so that a failed transaction
    inside it leaves no file behind."""
    written = Written()
    try:
        yield written
    except BaseException:
        written.remove_all()
        raise
