"""Erase everything kept about one patient (a request under data-protection law)."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from diagnosis import erasure


class Command(BaseCommand):
    help = (
        "Delete a patient's predictions, uploads, lesions, photos, thumbnails and heat maps. "
        "The audit trail records that an erasure happened and when, without the deleted content."
    )

    def add_arguments(self, parser):
        parser.add_argument("patient_ref", help="The pseudonymous patient reference, exactly as stored.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, patient_ref, yes, **options):
        if not yes and options.get("interactive", True):
            answer = input(f"Erase everything about patient {patient_ref}? This cannot be undone. Type 'yes': ")
            if answer.strip().lower() != "yes":
                raise CommandError("Nothing erased.")
        try:
            erased = erasure.erase_patient(patient_ref)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages))
        if not erased.uploads and not erased.lesions:
            self.stdout.write(self.style.WARNING(f"Nothing stored for patient {patient_ref}; the request is recorded."))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Erased patient {patient_ref}: {erased.predictions} prediction(s), {erased.uploads} upload(s), "
                f"{erased.lesions} lesion(s), {erased.files} file(s); {erased.audit_events_redacted} audit event(s) "
                "kept without their content."
            )
        )
