"""A consistent copy of the database and of every stored file, with checksums (diagnosis/backup.py)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from diagnosis import backup


class Command(BaseCommand):
    help = (
        "Back up the database (SQLite's online backup API, or pg_dump on PostgreSQL) and every stored "
        "photo, thumbnail and heat map into DEST (a new or empty folder), with a manifest of SHA-256 checksums."
    )

    def add_arguments(self, parser):
        parser.add_argument("destination", type=Path, help="A new (or empty) folder.")

    def handle(self, *args, destination, **options):
        try:
            manifest = backup.backup(destination)
        except backup.BackupError as exc:
            raise CommandError(str(exc))
        counts = manifest["counts"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Backed up to {destination}: {manifest['engine']} database with {counts['predictions']} prediction(s), "
                f"{counts['lesions']} lesion(s); {len(manifest['media'])} file(s). Checksums in {backup.MANIFEST}."
            )
        )
