"""Liveness and readiness probes: ``/healthz`` and ``/readyz``.

``/healthz``  the process is up and serving requests: always 200 ``{"status": "ok"}``; it
              touches neither the database nor the session (use it as the liveness probe, so a
              database outage does not get every web process restarted).
``/readyz``   this process can do its work: the database answers ``SELECT 1``, the broker
              accepts a connection (the filesystem broker: its folders are writable), Redis
              answers PING when REDIS_URL is set. The checks run in parallel, each time-boxed to
              HEALTH_CHECK_TIMEOUT (1 s); 200 when all pass, 503 otherwise::

                  {"status": "ok" | "fail",
                   "checks": {"database": "ok", "broker": "ok", "redis": "ok" | "skipped" | "error: …",
                              "beat": "ok" | "late: <job>, …"}}

              ``beat`` reports the relays and the sweeper (BEAT_WATCHED_TASKS) that beat has not
              sent for several of their intervals (eco2/beat_watch.py); it never fails the
              probe, since a web process serves without beat: alert on it instead.

Neither needs authentication. Errors are reported by exception class only (the full message,
which may name hosts, goes to the log), since the endpoints are public. Workers are not pinged
(``celery inspect ping`` waits for busy workers and fails under load): watch them through
``celery_task_total``, ``eco2_queue_depth`` and Flower instead.

Probes send the pod or host address as ``Host``; it has to be in ALLOWED_HOSTS, or the probe
must send an allowed ``Host`` header (e.g. Kubernetes ``httpHeaders: [{name: Host, value:
localhost}]``), otherwise Django answers 400.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from kombu import Connection

logger = logging.getLogger(__name__)


def broker_connection(url: str, timeout: float) -> Connection:
    """A kombu connection that gives up after ``timeout`` seconds (connect, read, write)."""
    options = {}
    if url.startswith(("amqp", "pyamqp")):
        options = {"read_timeout": timeout, "write_timeout": timeout}
    return Connection(url, connect_timeout=timeout, transport_options=options, heartbeat=0)


def check_database(timeout: float) -> None:
    # Runs in its own thread, hence on its own connection, closed again afterwards: with the
    # connection pool (DB_POOL_MAX_SIZE) "closed" means handed back, to serve the next request.
    # So the time box is SET LOCAL, inside the probe's own transaction: a session-level SET
    # stayed on the pooled connection and cancelled later requests' queries after 1 s (and
    # would follow the connection through PgBouncer the same way).
    # (SQLite has no statement timeout, and its IMMEDIATE transactions would take the write lock.)
    from contextlib import nullcontext

    from django.db import DEFAULT_DB_ALIAS, connections, transaction

    connection = connections[DEFAULT_DB_ALIAS]
    postgresql = connection.vendor == "postgresql"
    try:
        with transaction.atomic() if postgresql else nullcontext(), connection.cursor() as cursor:
            if postgresql:
                cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def check_broker(timeout: float) -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            folder = options.get(key)
            if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                raise OSError(f"broker folder {folder} is missing or not writable")
        return
    with broker_connection(url, timeout) as conn:
        conn.ensure_connection(max_retries=0)


def check_redis(timeout: float) -> str | None:
    if not settings.REDIS_URL:
        return "skipped"
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    finally:
        client.close()
    return None


CHECKS: dict[str, Callable[[float], str | None]] = {
    "database": check_database,
    "broker": check_broker,
    "redis": check_redis,
}


def run_checks(timeout: float) -> dict[str, str]:
    """Run every check in a daemon thread; a check still running after ``timeout`` fails."""
    results: dict[str, str] = {}

    def run(name: str, check: Callable[[float], str | None]) -> None:
        try:
            results[name] = check(timeout) or "ok"
        except Exception as exc:
            logger.warning("readiness check %s failed: %r", name, exc)
            results[name] = f"error: {type(exc).__name__}"

    threads = [
        threading.Thread(target=run, args=(name, check), name=f"readyz-{name}", daemon=True)
        for name, check in CHECKS.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, f"error: timed out after {timeout:g}s") for name in CHECKS}


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def beat_report() -> str:
    """ "ok", or "late: <job>, …" for the watched jobs beat has not sent for several intervals
    (eco2/beat_watch.py). Reported, never failing: this process serves without beat."""
    from eco2.beat_watch import late_watched_jobs

    try:
        late = late_watched_jobs()
    except Exception as exc:
        logger.warning("readiness: beat's jobs could not be read: %r", exc)
        return f"error: {type(exc).__name__}"
    return "late: " + ", ".join(job.name for job in late) if late else "ok"


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    checks = run_checks(settings.HEALTH_CHECK_TIMEOUT)
    ok = all(result in ("ok", "skipped") for result in checks.values())
    if checks["database"] == "ok":
        # informational: a late beat is an alert for operators (docs/deployment.md), not a
        # reason to take a web process out of service
        checks["beat"] = beat_report()
    return JsonResponse(
        {"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503
    )
