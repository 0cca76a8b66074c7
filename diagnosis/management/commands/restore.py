"""Bring a backup (manage.py backup) back into an empty install (diagnosis/backup.py)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from diagnosis import backup


class Command(BaseCommand):
    help = (
        "Restore a backup folder made by `manage.py backup` into an empty install (migrated, nothing "
        "uploaded): every checksum is verified first, then the database and the stored files come back."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", type=Path, help="The backup folder.")

    def handle(self, *args, source, **options):
        try:
            manifest = backup.restore(source)
        except backup.BackupError as exc:
            raise CommandError(str(exc))
        counts = manifest["counts"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored from {source} (made {manifest['created_at']}): {counts['predictions']} prediction(s), "
                f"{counts['lesions']} lesion(s), {len(manifest['media'])} file(s), every checksum verified."
            )
        )
