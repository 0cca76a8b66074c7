"""Settings for the skinCare site, read from the environment.

Every setting has a default that is safe for local use on one machine; a
deployment sets the environment variables listed in README.md. Nothing secret is
kept in the repository: without DJANGO_SECRET_KEY a random key is generated once
into the git-ignored file `.secret_key`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def local_secret_key(path: Path) -> str:
    """A per-checkout key, generated on first use and never committed (.gitignore)."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        key = secrets.token_urlsafe(50)
        path.write_text(key + "\n")
        path.chmod(0o600)
    return key


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or local_secret_key(BASE_DIR / ".secret_key")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Locks out an account (or address) after too many failed logins (AXES_* below).
    "axes",
    "ml",
    "diagnosis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from gunicorn (compressed, cached forever under hashed names).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a logged-in user unless its view says otherwise (the login
    # page, the API and the media view, which answer 401/403 themselves).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it refuses a locked-out login before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "skincare_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "diagnosis.context_processors.wording",
            ],
        },
    },
]

WSGI_APPLICATION = "skincare_site.wsgi.application"

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several gunicorn workers write at once. WAL lets readers go on while one writes;
    # BEGIN IMMEDIATE takes the write lock when a transaction starts (a deferred one
    # that tries to upgrade later fails at once with "database is locked", whatever
    # the timeout); the timeout (seconds) is how long a writer waits for the lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": env_int("DJANGO_SQLITE_TIMEOUT", 20),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "diagnosis:upload"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
# `collectstatic` writes hashed, compressed copies; WhiteNoise serves them.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Uploaded images. MEDIA_URL is answered by diagnosis.views.media, which checks
# the login; a web server in front must not serve MEDIA_ROOT itself.
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", BASE_DIR / "media"))

# Django's own request limits. Files in a multipart body do not count towards
# DATA_UPLOAD_MAX_MEMORY_SIZE (FILE_UPLOAD_HANDLERS below holds them, bounded by
# SKINCARE_MAX_UPLOAD_SIZE), so a 12 MB photo reaches the form and gets the
# form's message; other oversized bodies get a 400 (API: a JSON 413).
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_PERMISSIONS = 0o640
# Uploaded files are held in memory, never in a temporary file (a copy with the photo's
# EXIF and GPS would be left in the temp folder if the process were killed); the memory
# held is bounded by SKINCARE_MAX_UPLOAD_SIZE (diagnosis.uploadhandler).
FILE_UPLOAD_HANDLERS = ["diagnosis.uploadhandler.BoundedMemoryUploadHandler"]

# With DEBUG off the site is HTTPS-only unless told otherwise: secure cookies, a
# redirect from http to https, HSTS (`check --deploy --fail-level WARNING` clean).
# Behind a TLS proxy that sets X-Forwarded-Proto (and never passes on a client's),
# DJANGO_SECURE_PROXY_SSL_HEADER=1 makes Django trust that header; the proxy may
# then do the redirect itself (DJANGO_SECURE_SSL_REDIRECT=0).
BEHIND_TLS_PROXY = env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# HSTS preload commits the domain to browsers' lists: an opt-in, not a warning.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
if BEHIND_TLS_PROXY and not SECURE_SSL_REDIRECT:
    SILENCED_SYSTEM_CHECKS.append("security.W008")  # the proxy redirects http to https
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    # Token first, so that an anonymous call gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "diagnosis.throttles.AnonymousCallsThrottledFirst",
        "rest_framework.permissions.IsAuthenticated",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "diagnosis.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Requests per user (token or session) and per address for anonymous callers.
    # Rates: SKINCARE_API_THROTTLE_ANON and SKINCARE_API_THROTTLE_USER below.
    # Anonymous calls are counted per address: REMOTE_ADDR, or behind the TLS proxy the address it
    # appends to X-Forwarded-For (never one a client sent itself).
    "NUM_PROXIES": 1 if BEHIND_TLS_PROXY else 0,
    "DEFAULT_THROTTLE_CLASSES": [
        "diagnosis.throttles.AnonymousThrottle",
        "diagnosis.throttles.UserThrottle",
    ],
}

# The OpenAPI 3 schema at /api/schema/ (signed-in users only), drf-spectacular.
SPECTACULAR_SETTINGS = {
    "TITLE": "skinCare API",
    "DESCRIPTION": "Upload a dermoscopic photo and read the model's answer. Every error is JSON.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
}

# Failed logins (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username
# from one address, that login is refused for AXES_COOLOFF_TIME hours (the attempts are
# counted in the database, so every gunicorn worker sees them). A lockout is written to
# the audit trail (diagnosis.audit). `manage.py axes_reset` lifts every lockout.
AXES_ENABLED = env_bool("SKINCARE_AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("SKINCARE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_float("SKINCARE_LOGIN_COOLOFF_HOURS", 1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# --- skinCare ---------------------------------------------------------------
# Where the shipped model (model.keras + metadata.json) lives; see ml/serving/classifier.py.
SKINCARE_MODEL_DIR = Path(os.environ.get("SKINCARE_MODEL_DIR", BASE_DIR / "ml" / "artifacts" / "model"))
# "auto": the LiteRT export when the artifact has one (no TensorFlow in the worker), else Keras;
# "keras" or "litert" to force one.
SKINCARE_RUNTIME = os.environ.get("SKINCARE_RUNTIME", "auto")
# LiteRT threads per inference; 0: the CPUs the process may use, at most 4 (ml.serving.runtimes.inference_threads).
SKINCARE_INFERENCE_THREADS = env_int("SKINCARE_INFERENCE_THREADS", 0)
# Check close calls again in all eight flips and quarter turns of the photo, where the model carries
# the calibration for it (metadata "close_call_check", ml/serving/tta.py). Off by default: it makes the answer
# all but independent of how the photo is turned, at about 50 ms instead of 9 for those results
# (README, "Checking close calls").
SKINCARE_CLOSE_CALL_CHECK = env_bool("SKINCARE_CLOSE_CALL_CHECK", False)
# The heat map served with a result (ml/serving/heatmap.py): "gradcam" (free, but it mostly lights up the
# skin around a lesion) or "occlusion" (each of 64 patches covered in turn: where the answer rests, at about
# 0.4 s more on 2 CPUs).
SKINCARE_HEATMAP = os.environ.get("SKINCARE_HEATMAP", "gradcam")
# Upload limits, checked before the image is decoded.
SKINCARE_MAX_UPLOAD_SIZE = env_int("SKINCARE_MAX_UPLOAD_SIZE", 10 * 1024 * 1024)  # bytes
SKINCARE_MAX_IMAGE_PIXELS = env_int("SKINCARE_MAX_IMAGE_PIXELS", 40_000_000)  # width * height
# Pillow format names accepted; the bytes decide the format, never the file name.
SKINCARE_ALLOWED_IMAGE_FORMATS = env_list("SKINCARE_ALLOWED_IMAGE_FORMATS", "JPEG,PNG,BMP,WEBP")
SKINCARE_HISTORY_PAGE_SIZE = env_int("SKINCARE_HISTORY_PAGE_SIZE", 25)
# A lesion followed over time is flagged as changed (the E of ABCDE, evolution) when the
# probability of malignancy rose by at least this much since the previous assessed visit,
# or (when SKINCARE_EVOLUTION_HIGHER_OUTCOME) it moved into a higher outcome. See diagnosis/evolution.py.
SKINCARE_EVOLUTION_MIN_RISE = env_float("SKINCARE_EVOLUTION_MIN_RISE", 0.15)
SKINCARE_EVOLUTION_HIGHER_OUTCOME = env_bool("SKINCARE_EVOLUTION_HIGHER_OUTCOME", True)
# API rate limits, "N/second", "N/minute", "N/hour" or "N/day"; empty: no limit. Anonymous
# calls are counted per address, signed-in ones per user (token or session). Counted in
# Django's cache: per gunicorn worker with the default local-memory cache (CACHES).
SKINCARE_API_THROTTLE_ANON = os.environ.get("SKINCARE_API_THROTTLE_ANON", "30/minute")
SKINCARE_API_THROTTLE_USER = os.environ.get("SKINCARE_API_THROTTLE_USER", "30/second")
# check_media leaves alone stored files younger than this (seconds): an upload still being
# written has its file before its row. `check_media --min-age 0` looks at every file.
SKINCARE_MEDIA_ORPHAN_MIN_AGE = env_int("SKINCARE_MEDIA_ORPHAN_MIN_AGE", 3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # Django's own default handler would print these a second time through the root logger.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "diagnosis": {
            "handlers": ["console"],
            "level": os.environ.get("SKINCARE_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
