"""Make sure a login exists for local use, without a fixed password anywhere.

A new account gets a random password, printed once; an existing account keeps
its password (reset it with `manage.py changepassword USERNAME`). A reviewer gets
the reviewer's permissions, and an existing reviewer any added since it was made.
"""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand

REVIEWER_PERMISSIONS = [
    "view_upload",
    "change_upload",
    "view_prediction",
    "change_prediction",
    "view_lesion",
    "change_lesion",
    "view_auditevent",
]


class Command(BaseCommand):
    help = "Create a clinician account (random password, printed once) unless it exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="clinician")
        parser.add_argument(
            "--reviewer",
            action="store_true",
            help="Also let this account review predictions in the admin (/admin/).",
        )

    @staticmethod
    def reviewer_permissions():
        return Permission.objects.filter(content_type__app_label="diagnosis", codename__in=REVIEWER_PERMISSIONS)

    def handle(self, *args, username, reviewer, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None:
            if reviewer and user.is_staff:
                user.user_permissions.add(*self.reviewer_permissions())
            self.stdout.write(
                f"Account '{username}' exists; its password is unchanged "
                f"(reset it with: python manage.py changepassword {username})."
            )
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(username=username, password=password, is_staff=reviewer)
        if reviewer:
            user.user_permissions.set(self.reviewer_permissions())
        role = "reviewer (site and /admin/)" if reviewer else "clinician"
        self.stdout.write(self.style.SUCCESS(f"Created {role} account '{username}' with password: {password}"))
        self.stdout.write("This password is shown once only. Write it down now.")
