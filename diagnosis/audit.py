"""The audit trail: who uploaded, viewed, reviewed or retried what, and when.

Services and views call `record`; nothing updates or deletes an event (the admin
shows them read-only). An event is written in the same transaction as what it
records, so a trail never claims something that was rolled back.
"""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db import models

from .models import AuditEvent, Prediction

Action = AuditEvent.Action
Via = AuditEvent.Via


def record(user, action: str, target: models.Model | None, *, via: str, **details) -> AuditEvent:
    """Add one event. `user` may be None (a management command) or anonymous (stored as None)."""
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    return AuditEvent.objects.create(
        user=user,
        action=action,
        via=via,
        content_type=ContentType.objects.get_for_model(target) if target is not None else None,
        object_id=target.pk if target is not None else None,
        object_repr=describe(target)[:200] if target is not None else "",
        details=details,
    )


def describe(target: models.Model) -> str:
    """The object's name as the trail keeps it: what identifies it, not its state then
    (a prediction's outcome changes from "not assessed" when it is retried)."""
    if isinstance(target, Prediction):
        ref = target.upload.patient_ref
        return f"Prediction {target.pk}" + (f" ({ref})" if ref else "")
    return str(target)


def events_for(target: models.Model):
    """The trail of one object, oldest first."""
    return (
        AuditEvent.objects.filter(content_type=ContentType.objects.get_for_model(target), object_id=target.pk)
        .select_related("user")
        .order_by("at", "id")
    )


def record_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """django-axes' `user_locked_out` signal: a login refused after too many failed tries.
    Kept with the username tried and the address (never the password), against the user
    when that username exists."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first() if username else None
    path = getattr(request, "path", "") or ""
    record(
        None,
        Action.LOCKOUT,
        user,
        via=Via.ADMIN if path.startswith("/admin/") else Via.PAGE,
        username=(username or "")[:150],
        ip_address=ip_address,
        path=path[:200],
    )
