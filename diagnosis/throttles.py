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
