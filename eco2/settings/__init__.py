"""Eco² settings: everything comes from the environment, with embedded defaults.

With no environment at all, Eco² runs on SQLite, kombu's filesystem broker and the offline
provider, so ``make run`` works on a fresh machine. ``DATABASE_URL``, ``CELERY_BROKER_URL``,
``REDIS_URL`` and ``OPENAI_API_KEY`` switch to real services.

This module holds the site (security, apps, middleware, database, auth, languages, files, the
API); ``pipeline.py`` the background side (Celery, Redis, monitoring, the scan pipeline and its
providers, workers, e-mail, logging), imported at the end.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .environment import BASE_DIR, VAR_DIR, env
from .media import s3_media_storage

DEBUG = env.bool("DEBUG", default=False)
# The fallback key only exists so a fresh checkout runs; production must set SECRET_KEY.
DEVELOPMENT_SECRET_KEY = "eco2-insecure-development-key-set-SECRET_KEY-in-prod"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Production hardening -------------------------------------------------------------------
# DJANGO_ENV=production switches on HTTPS-only settings; `manage.py check --deploy` passes
# without warnings with them (tests/eco2/test_production_settings.py runs it). Behind a
# TLS-terminating proxy set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO=https (only if the
# proxy always sets that header).
DJANGO_ENV = env.str("DJANGO_ENV", default="development").strip().lower()
PRODUCTION = DJANGO_ENV == "production"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "DJANGO_ENV=production needs SECRET_KEY: a random value of at least 50 characters "
            "(not the development key), e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`."
        )
    if DEBUG:
        raise ImproperlyConfigured("DJANGO_ENV=production must not run with DEBUG=true.")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # probes and the scraper may speak plain HTTP inside the cluster
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)  # one year
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    _proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="")
    if _proxy_ssl_header:
        _header, _, _value = _proxy_ssl_header.partition("=")
        if not _header or not _value:
            raise ImproperlyConfigured(
                "SECURE_PROXY_SSL_HEADER must look like HTTP_X_FORWARDED_PROTO=https."
            )
        SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip())

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "scans",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # the database unreachable: 503 with Retry-After instead of a 500 (API and pages)
    "eco2.db.DatabaseUnavailableMiddleware",
    # a locked-out log-in (django-axes, eco2/login_guard.py) is answered with 429 and the reason
    "axes.middleware.AxesMiddleware",
    # publishing a new scan's chain waits for the broker: done after the 202 is sent
    "eco2.after_response.AfterResponseMiddleware",
    # 413 for oversized scan uploads from Content-Length, before any view or CSRF check
    # parses the body. These last two are sync-only, and under ASGI the innermost middleware
    # decides the mode of the whole chain: with them here every middleware runs in one
    # thread; below an async-capable one, each of those would hop between the event loop and
    # a thread twice per request (bench/api_latency.py measured the hops).
    "scans.middleware.UploadSizeLimitMiddleware",
]

ROOT_URLCONF = "eco2.urls"
WSGI_APPLICATION = "eco2.wsgi.application"
ASGI_APPLICATION = "eco2.asgi.application"

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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # web, worker and beat share one SQLite file: WAL lets readers run beside the writer,
    # IMMEDIATE transactions take the write lock up front instead of failing on upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    # DB_POOL_MAX_SIZE > 0 gives this process a psycopg connection pool (Django's "pool"
    # option): the web under ASGI serves each request in a new thread, so without a pool every
    # request opens a PostgreSQL connection, and a threads-pool worker would hold one per
    # thread. Procfile and compose set it for the web and the threads-pool AI workers; prefork
    # workers leave it at 0 (Celery closes a prefork child's pool around every task).
    pool_max_size = env.int("DB_POOL_MAX_SIZE", default=0)
    if pool_max_size > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(env.int("DB_POOL_MIN_SIZE", default=1), pool_max_size),
            "max_size": pool_max_size,
            # a request or task waiting longer than this for a connection fails loudly
            "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # a pooled connection goes back to the pool
        if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
            # Django's pool checks every connection it hands out (a round trip a request, two
            # a threads-pool step); eco2.postgresql checks one that sat in the pool longer
            # than DB_POOL_CHECK_AFTER_IDLE seconds, as the prefork children's kept ones
            # (WORKER_DB_CHECK_AFTER_IDLE). 0 checks every one.
            DATABASES["default"]["ENGINE"] = "eco2.postgresql"
            DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # the pool's own check: off
    else:
        # 0: under ASGI each request's thread would keep its own persistent connection until
        # PostgreSQL runs out (Django's docs: disable them under ASGI, or pool).
        DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # Behind PgBouncer in transaction pooling mode a server-side cursor (QuerySet.iterator())
    # would outlive the transaction PgBouncer gave it a server connection for (Django's docs,
    # "Transaction pooling and server-side cursors"); docs/deployment.md, "PgBouncer".
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DB_DISABLE_SERVER_SIDE_CURSORS", default=False
    )
DB_POOL_CHECK_AFTER_IDLE = env.float("DB_POOL_CHECK_AFTER_IDLE", default=1.0)  # eco2.postgresql
# A request the database cannot serve (unreachable, no pooled connection within
# DB_POOL_TIMEOUT) is answered 503 with this Retry-After (s), not 500 (eco2/db.py).
DB_UNAVAILABLE_RETRY_AFTER = env.int("DB_UNAVAILABLE_RETRY_AFTER", default=10)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "scans:upload"
LOGOUT_REDIRECT_URL = "login"
# Password guessing (django-axes, eco2/login_guard.py): after AXES_FAILURE_LIMIT failed log-ins
# for a username, or from an address (REMOTE_ADDR: behind a proxy, uvicorn's --proxy-headers
# and FORWARDED_ALLOW_IPS set it), both are refused for AXES_COOLOFF_MINUTES on the login page,
# the admin login and POST /api/v1/auth/token. Failures during a lockout do not extend it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "eco2.login_guard.LoginAttemptHandler"  # axes' database handler
AXES_VERBOSE = False  # no version banner on every start of every process and command
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
_cooloff_minutes = env.int("AXES_COOLOFF_MINUTES", default=15)
if AXES_FAILURE_LIMIT < 1 or _cooloff_minutes < 1:
    raise ImproperlyConfigured("AXES_FAILURE_LIMIT and AXES_COOLOFF_MINUTES must be at least 1.")
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own
AXES_RESET_ON_SUCCESS = False  # a success clears that username's failures from that address
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "eco2.login_guard.lockout_response"
DEMO_USERNAME = env.str("DEMO_USERNAME", default="demo")
DEMO_PASSWORD = env.str("DEMO_PASSWORD", default="eco2-demo")

# --- I18N -----------------------------------------------------------------------------------
LANGUAGE_CODE = "ko"
LANGUAGES = [("ko", "한국어"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Seoul"
USE_I18N = True
USE_TZ = True

# --- Static and uploaded files --------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
STATICFILES_DIRS = [BASE_DIR / "static"]
# Uploaded photos are private: they are served only through an owner-checked view, never
# from a public MEDIA_URL.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media-not-public/"
# MEDIA_STORAGE=s3: photos and thumbnails go to a private S3-compatible bucket instead of
# MEDIA_ROOT (settings/media.py), so web and workers on several hosts need no shared disk. The
# photo view then redirects the owner to a URL signed for AWS_QUERYSTRING_EXPIRE seconds.
MEDIA_STORAGE = env.str("MEDIA_STORAGE", default="filesystem").strip().lower()
AWS_QUERYSTRING_EXPIRE = env.int("AWS_QUERYSTRING_EXPIRE", default=300)
if MEDIA_STORAGE == "filesystem":
    _media_storage: dict = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif MEDIA_STORAGE == "s3":
    _bucket = env.str("AWS_STORAGE_BUCKET_NAME", default="").strip()
    if not _bucket:
        raise ImproperlyConfigured("MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME.")
    if not 1 <= AWS_QUERYSTRING_EXPIRE <= 604_800:  # S3's limit for a signed URL: 7 days
        raise ImproperlyConfigured("AWS_QUERYSTRING_EXPIRE must be 1 to 604800 seconds.")
    _media_storage = s3_media_storage(
        bucket_name=_bucket,
        endpoint_url=env.str("AWS_S3_ENDPOINT_URL", default=""),  # MinIO, Ceph, R2; "" = AWS
        region_name=env.str("AWS_S3_REGION_NAME", default=""),
        addressing_style=env.str("AWS_S3_ADDRESSING_STYLE", default=""),  # "path" for MinIO
        location=env.str("AWS_LOCATION", default=""),
        expire_seconds=AWS_QUERYSTRING_EXPIRE,
    )
else:
    raise ImproperlyConfigured(f"MEDIA_STORAGE must be filesystem or s3, not {MEDIA_STORAGE!r}.")
STORAGES = {
    "default": _media_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
SCAN_IMAGE_MAX_BYTES = env.int("SCAN_IMAGE_MAX_BYTES", default=10 * 1024 * 1024)
SCAN_HINT_MAX_LENGTH = 200
SCAN_BATCH_MAX_IMAGES = env.int("SCAN_BATCH_MAX_IMAGES", default=10)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Scan creation per user is a cost guard, "N/s|min|hour|day", enforced by the services for the
# API, the upload page, batches (each photo counts) and `manage.py scan`; over it, 429 with
# Retry-After. Counted in Redis when REDIS_URL is set, else (and while Redis does not answer) in
# the database (scans/creation_rate.py). Empty disables it.
SCAN_CREATE_RATE = env.str("SCAN_CREATE_RATE", default="30/min").strip()
if SCAN_CREATE_RATE and not re.fullmatch(
    r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", SCAN_CREATE_RATE
):
    raise ImproperlyConfigured(f"SCAN_CREATE_RATE must look like 30/min, not {SCAN_CREATE_RATE!r}")
# Load shedding: with more than SCAN_BACKLOG_LIMIT scans waiting for a worker (status queued),
# a new upload is refused with 503 and Retry-After instead of joining a line minutes long.
# 0 (the default) turns it off; set it to a few minutes of the workers' throughput.
SCAN_BACKLOG_LIMIT = env.int("SCAN_BACKLOG_LIMIT", default=0)
SCAN_BACKLOG_RETRY_AFTER = env.int("SCAN_BACKLOG_RETRY_AFTER", default=30)
# A replayed Idempotency-Key on POST /api/v1/scans returns the first response for this long.
SCAN_IDEMPOTENCY_TTL_HOURS = env.int("SCAN_IDEMPOTENCY_TTL_HOURS", default=24)
# image_url scans: the worker fetches the photo (SSRF-checked, see scans/fetch/).
SCAN_FETCH_CONNECT_TIMEOUT = env.float("SCAN_FETCH_CONNECT_TIMEOUT", default=5.0)
SCAN_FETCH_READ_TIMEOUT = env.float("SCAN_FETCH_READ_TIMEOUT", default=10.0)
SCAN_FETCH_TOTAL_TIMEOUT = env.float("SCAN_FETCH_TOTAL_TIMEOUT", default=20.0)
SCAN_FETCH_MAX_REDIRECTS = env.int("SCAN_FETCH_MAX_REDIRECTS", default=3)
# Tests only: lets the fetcher reach 127.0.0.0/8 and ::1 (a local test server). Never in prod.
SCAN_FETCH_ALLOW_LOOPBACK = env.bool("SCAN_FETCH_ALLOW_LOOPBACK", default=False)
if PRODUCTION and SCAN_FETCH_ALLOW_LOOPBACK:
    raise ImproperlyConfigured("SCAN_FETCH_ALLOW_LOOPBACK is for tests; not in production.")
DATA_UPLOAD_MAX_NUMBER_FILES = SCAN_BATCH_MAX_IMAGES

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "eco2.pagination.BoundedPageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # the project's coded errors answer with their status and {"detail", "code"}
    "EXCEPTION_HANDLER": "scans.api.exceptions.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Eco² API",
    "DESCRIPTION": "Upload a photo of household waste and get Korean disposal guidance (분리배출).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed sidecar package, not a CDN
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # a scan's status and a batch's status are different choice sets: each gets its own name
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": "scans.models.ScanStatus",  # the name clients have generated code from
        "BatchStatusEnum": "scans.models.BatchStatus",
    },
    # the default hook, and the live-progress stream (a plain async view spectacular cannot see)
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "scans.openapi.add_scan_events_path",
    ],
}


# the background side
from .pipeline import *  # noqa: E402, F403
