"""Stored files against the rows that point at them (manage.py check_media).

A file is written before the row that names it (storage.py), so a process killed
in between leaves a file no row points at: an orphan. A file removed behind the
app's back leaves a row whose file is missing. `check` finds both, through the
storage API only (so it works the same on an object store); `fix` removes the
orphans and repairs what can be repaired without losing anything stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.files.storage import default_storage
from django.utils import timezone

from . import storage as media_storage
from .images import encode_thumbnail
from .models import Prediction, Upload

logger = logging.getLogger(__name__)

# (model, field name) of every file the app stores.
FILE_FIELDS = [(Upload, "image"), (Upload, "thumbnail"), (Prediction, "heatmap")]


@dataclass(frozen=True)
class MissingFile:
    model: str
    pk: int
    field: str
    name: str

    def __str__(self) -> str:
        return f"{self.model} {self.pk}: its {self.field} {self.name} is missing"


@dataclass
class Report:
    files: int = 0
    rows: int = 0
    orphans: list[str] = field(default_factory=list)
    young: list[str] = field(default_factory=list)  # unreferenced but maybe still being written
    missing: list[MissingFile] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.missing


def stored_names(storage=None, directory: str = "") -> list[str]:
    """Every file in the storage, by its storage name ("uploads/ab12.png"); hidden files
    (".gitkeep") are not the app's."""
    storage = storage or default_storage
    try:
        directories, files = storage.listdir(directory)
    except FileNotFoundError:
        return []
    names = [f"{directory}{name}" for name in files if not name.startswith(".")]
    for sub in directories:
        if not sub.startswith("."):
            names.extend(stored_names(storage, f"{directory}{sub}/"))
    return sorted(names)


def referenced_names() -> dict[str, MissingFile]:
    """Every file name a row points at, with the row."""
    names = {}
    for model, field_name in FILE_FIELDS:
        rows = model.objects.exclude(**{field_name: ""}).values_list("pk", field_name)
        for pk, name in rows.iterator():
            names[name] = MissingFile(model.__name__, pk, field_name, name)
    return names


def _age(storage, name: str) -> timedelta | None:
    try:
        return timezone.now() - storage.get_modified_time(name)
    except (NotImplementedError, OSError):
        return None


def check(*, min_age: timedelta = timedelta(0), storage=None) -> Report:
    """Orphans (files no row points at, older than `min_age`: a younger one may belong to an
    upload still being written) and rows whose file is missing."""
    storage = storage or default_storage
    stored = stored_names(storage)
    referenced = referenced_names()
    report = Report(files=len(stored), rows=Upload.objects.count() + Prediction.objects.count())
    for name in stored:
        if name in referenced:
            continue
        age = _age(storage, name)
        (report.young if age is not None and age < min_age else report.orphans).append(name)
    stored_set = set(stored)
    report.missing = [row for name, row in referenced.items() if name not in stored_set]
    return report


def fix(report: Report, *, delete_missing: bool = False, storage=None) -> list[str]:
    """Remove the orphans; clear a missing heat map, draw a missing thumbnail again from its
    photo. A row whose photo is missing is kept (the model's answer and the review stay)
    unless `delete_missing`. Returns what was done, one line each."""
    from . import audit, erasure

    storage = storage or default_storage
    done = []
    for name in report.orphans:
        if media_storage.delete(name, storage=storage):
            done.append(f"removed orphan {name}")
    for row in report.missing:
        if row.field == "heatmap":
            Prediction.objects.filter(pk=row.pk, heatmap=row.name).update(heatmap="")
            done.append(f"{row}: cleared (the prediction is kept without its heat map)")
        elif row.field == "thumbnail":
            upload = Upload.objects.get(pk=row.pk)
            try:
                with upload.image.open("rb") as stored:
                    from PIL import Image

                    with Image.open(stored) as photo:
                        thumbnail = encode_thumbnail(photo.convert("RGB"))
            except FileNotFoundError:
                Upload.objects.filter(pk=row.pk).update(thumbnail="")
                done.append(f"{row}: cleared (its photo is missing too)")
                continue
            media_storage.save(upload.thumbnail, "thumbnail.jpg", thumbnail)
            Upload.objects.filter(pk=row.pk).update(thumbnail=upload.thumbnail.name)
            done.append(f"{row}: drawn again from the photo")
        elif delete_missing:
            upload = Upload.objects.select_related("prediction").get(pk=row.pk)
            erasure.delete_uploads([upload])
            audit.record(
                None,
                audit.Action.ERASE,
                None,
                via=audit.Via.COMMAND,
                reason="check_media --delete-missing: the photo was missing",
                uploads=1,
            )
            done.append(f"{row}: the upload and its prediction deleted")
    return done
