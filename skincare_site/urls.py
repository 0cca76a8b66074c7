"""URL map: the clinic's pages, the JSON API, the admin, and the login-checked media view."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from diagnosis import views as diagnosis_views

admin.site.site_header = "skinCare review"
admin.site.site_title = "skinCare review"
admin.site.index_title = "Uploads, predictions and reviews"

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # The OpenAPI 3 schema of the API (signed-in users only: SPECTACULAR_SETTINGS).
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include("diagnosis.api_urls")),
    path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", diagnosis_views.media, name="media"),
    path("", include("diagnosis.urls")),
]

# JSON under /api/, Django's pages elsewhere (diagnosis/errors.py).
handler400 = "diagnosis.errors.bad_request"
handler403 = "diagnosis.errors.permission_denied"
handler404 = "diagnosis.errors.page_not_found"
handler500 = "diagnosis.errors.server_error"
