"""Stored files no row points at, and rows whose file is missing (diagnosis/media.py)."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from diagnosis import media


class Command(BaseCommand):
    help = (
        "List stored files that no upload or prediction points at (left by a process killed mid-upload) "
        "and rows whose file is missing; with --fix, remove the files and repair the rows. Exits 1 when "
        "something is left to report."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--fix",
            action="store_true",
            help="Remove orphan files; clear a missing heat map, draw a missing thumbnail again.",
        )
        parser.add_argument(
            "--delete-missing",
            action="store_true",
            help="With --fix: also delete an upload "
            "(and its prediction) whose photo is missing. Restore from a backup first if you can.",
        )
        parser.add_argument(
            "--min-age",
            type=int,
            default=None,
            metavar="SECONDS",
            help="Leave alone unreferenced files younger than this, which may belong to an upload "
            "still being written (default SKINCARE_MEDIA_ORPHAN_MIN_AGE).",
        )

    def handle(self, *args, fix, delete_missing, min_age, **options):
        if min_age is None:
            min_age = settings.SKINCARE_MEDIA_ORPHAN_MIN_AGE
        report = media.check(min_age=timedelta(seconds=min_age))
        if fix:
            for line in media.fix(report, delete_missing=delete_missing):
                self.stdout.write(f"fixed: {line}")
            report = media.check(min_age=timedelta(seconds=min_age))
        for name in report.orphans:
            self.stdout.write(f"orphan: {name} (no row points at it)")
        for row in report.missing:
            self.stdout.write(f"missing: {row}")
        if report.young:
            self.stdout.write(
                f"{len(report.young)} unreferenced file(s) younger than {min_age} s left alone "
                "(an upload may still be writing them)."
            )
        summary = f"{report.files} file(s), {report.rows} row(s) checked"
        if report.clean:
            self.stdout.write(self.style.SUCCESS(f"{summary}: nothing to report."))
            return
        self.stdout.write(
            self.style.WARNING(
                f"{summary}: {len(report.orphans)} orphan file(s), {len(report.missing)} missing file(s)."
                + ("" if fix else " Run check_media --fix to repair.")
            )
        )
        raise SystemExit(1)
