"""API rate limits, read from the settings at each request (SKINCARE_API_THROTTLE_ANON,
SKINCARE_API_THROTTLE_USER) rather than once at import as DRF's own classes do, so that
a deployment (or a test) changes them with the setting alone. An empty rate: no limit.

A refused call gets DRF's JSON 429 with a Retry-After header.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class AnonymousThrottle(AnonRateThrottle):
    """Anonymous calls, per client address."""

    setting = "SKINCARE_API_THROTTLE_ANON"

    def get_rate(self):
        return getattr(settings, self.setting, "") or None


class UserThrottle(UserRateThrottle):
    """Signed-in calls, per user, whether by token or by session."""

    setting = "SKINCARE_API_THROTTLE_USER"

    def get_rate(self):
        return getattr(settings, self.setting, "") or None


class AnonymousCallsThrottledFirst:
    """A permission listed before IsAuthenticated: DRF checks throttles only after the
    permissions, so an anonymous call would get its 401 however often it came. This
    counts anonymous calls first (the user throttles still run once, after the permissions)."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            for throttle in view.get_throttles():
                if isinstance(throttle, AnonymousThrottle) and not throttle.allow_request(request, view):
                    view.throttled(request, throttle.wait())
        return True

    def has_object_permission(self, request, view, obj) -> bool:
        return True
