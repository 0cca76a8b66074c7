"""Django's error views (handler400/403/404/500), answering JSON under /api/.

DRF's exception handler (diagnosis.api.exception_handler) answers errors raised in
the API's views; these catch the rest: a URL under /api/ that names no view, and an
error raised outside a view (a middleware, the URL resolver). The pages keep
Django's HTML error pages.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.views import defaults


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": "The request was refused as malformed."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": "You do not have permission to do this."}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse(
            {
                "detail": "An unexpected error occurred on the server; it has been logged. Try again, and tell the "
                "site's administrator if it persists."
            },
            status=500,
        )
    return defaults.server_error(request)
