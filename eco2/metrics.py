"""Prometheus metrics: Celery task counters and latency, ``/metrics`` (with the scrape-time
collector of eco2/scrape.py, which apps add their gauges to) and the per-host exporter.

What is exported
    ``celery_task_total{task_name,status}``      counter; status ∈ succeeded, failed, retried,
                                                 revoked, rejected (Celery signals)
    ``celery_task_latency_seconds{task_name}``   histogram of the run time of every execution
                                                 (task_prerun → task_postrun), 0.01 s … 120 s
    ``eco2_queue_depth{queue}``                  messages ready per queue (scrape time,
                                                 eco2/queue_depths.py)
    ``eco2_periodic_task_seconds_since_last_run{task}``  since beat last sent the job, and
    ``eco2_periodic_task_late{task}``            1 when an interval job is late (eco2/beat_watch.py)
    ``eco2_worker_stalled{worker}``              1 while a worker of this host holds work and
                                                 makes no progress (eco2/worker_watch.py); with
                                                 ``eco2_worker_seconds_since_progress`` and
                                                 ``eco2_worker_held_tasks``
    ``eco2_metrics_collector_up{part}``          1 when that part of the scrape-time collector
                                                 answered, 0 when it failed or timed out (its
                                                 families are then left out and the error logged)
    registered by the scans app (scans/metrics.py):
    ``eco2_scans{status}``                       scans queued / processing now (scrape time, DB)
    ``eco2_scans_ended_total{status}``           runs that ended completed / failed / needs_input
    ``eco2_scans_refused_total{reason}``         uploads refused before anything was stored;
                                                 reason backlog: SCAN_BACKLOG_LIMIT (503)
    ``eco2_provider_tokens_total{kind}``         input / cached_input / output tokens, all scans
    ``eco2_provider_cost_usd_total``             provider cost of all scans (USD)
    ``eco2_dead_letters{state}``                 pending / redriven / resolved (DB), broker_dlq

The scans' ``eco2_*_total`` families are counters kept in the database (one row, ScanTotals),
incremented in the transaction that records a step's usage or a run's end: a scrape reads one
row, and deleting scans no longer lowers them.

Multiprocess mode (prefork)
    Celery runs tasks in forked pool processes, so the task metrics use prometheus_client's
    multiprocess mode: every process writes its samples to mmap files in
    ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums the files with ``MultiProcessCollector``
    into a fresh ``CollectorRegistry`` per scrape. The variable must be in ``os.environ`` before
    prometheus_client is imported; eco2/settings/pipeline.py sets it (default ``$ECO2_VAR_DIR/prometheus``).
    Celery's CLI imports Flower, and Flower imports prometheus_client, before the app and its
    settings are loaded, so the worker switches prometheus_client to multiprocess values itself
    at ``worker_init`` (before the pool forks).

    * Web and workers must share the directory: run them on one host, or mount one volume into
      both. Containers sharing a volume must also share the PID namespace, because the files
      are named after process ids (two "pid 7" processes would write the same file).
    * Across hosts, each worker host needs its own scrape target: run the small exporter
      ``python -m eco2.metrics --port 9808`` there; it serves the same multiprocess registry
      from that host's directory (task metrics only; the DB and broker gauges come from the
      web's ``/metrics``, once for the whole system). It has no authentication of its own:
      bind it to a private address (``--addr``) or firewall it.
    * Stale files: when a worker starts and no live process owns a file in the directory, the
      files are removed for a fresh start (counters restart at 0, a reset Prometheus handles).
      Otherwise nothing is removed, since counters must not go down while other processes are
      alive. Pool processes that exit are marked dead (``mark_process_dead``), which drops
      their live-gauge files; their counter files stay, so the sums stay monotonic.

Access
    ``/metrics`` answers ``Authorization: Bearer <METRICS_TOKEN>`` or a logged-in staff user;
    anything else gets 401 (403 when METRICS_TOKEN is not set and the caller is not staff).
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from celery import signals
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder

from eco2.scrape import AppCollector
from eco2.worker_watch import WorkerWatchCollector, pid_alive  # and its worker_ready handler

logger = logging.getLogger(__name__)

TASK_STATUSES = ("succeeded", "failed", "retried", "revoked", "rejected")
# Pipeline steps take ~10 ms (offline) to tens of seconds (a slow provider); the hard time
# limits end at 90 s, so 120 s is the last finite bucket.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

# registry=None: in multiprocess mode the samples are read back from the files, never from a
# registry, and a module imported twice (python -m eco2.metrics) cannot register them twice.
TASKS = Counter(
    "celery_task_total",
    "Celery task executions by final status of the attempt.",
    ["task_name", "status"],
    registry=None,
)
TASK_LATENCY = Histogram(
    "celery_task_latency_seconds",
    "Run time of a Celery task execution (task_prerun to task_postrun).",
    ["task_name"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)

_started: dict[str, float] = {}  # task id → monotonic start, per process
_STARTED_LIMIT = 10_000  # a task whose postrun never came must not grow this forever


# --- multiprocess plumbing ------------------------------------------------------------------
def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def enable_multiprocess_values() -> None:
    """Make new metric samples go to the multiprocess files.

    prometheus_client picks its value class when it is first imported; in ``celery`` commands
    that happens (through Flower's CLI plugin) before Django settings set the variable.
    """
    if values.ValueClass is values.MutexValue and multiproc_dir():
        values.ValueClass = values.get_value_class()


def _file_pid(name: str) -> int | None:
    # counter_123.db, histogram_123.db, gauge_livesum_123.db …
    pid = name.removesuffix(".db").rpartition("_")[2]
    return int(pid) if pid.isdigit() else None


def wipe_if_first(path: Path) -> bool:
    """Remove the directory's metric files when no live process owns any of them."""
    files = list(path.glob("*.db"))
    me = os.getpid()
    owners = {pid for f in files if (pid := _file_pid(f.name)) is not None and pid != me}
    alive = sorted(pid for pid in owners if pid_alive(pid))
    if alive:
        logger.info(
            "metrics directory %s is in use by pids %s; keeping its files", path, alive[:10]
        )
        return False
    for file in files:
        with suppress(FileNotFoundError):
            file.unlink()
    if files:
        logger.info("removed %d stale metrics files from %s", len(files), path)
    return True


# --- Celery signals -------------------------------------------------------------------------
def _task_name(task=None, request=None) -> str:
    name = getattr(task, "name", None) or getattr(request, "task", None)
    return name if isinstance(name, str) and name else "unknown"


def _count(task_name: str, status: str) -> None:
    enable_multiprocess_values()
    TASKS.labels(task_name=task_name, status=status).inc()


@signals.worker_init.connect(dispatch_uid="eco2.metrics.worker_init")
def _on_worker_init(**kwargs) -> None:
    # Loads the settings, which put PROMETHEUS_MULTIPROC_DIR into os.environ.
    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
    path.mkdir(parents=True, exist_ok=True)
    enable_multiprocess_values()
    wipe_if_first(path)


@signals.worker_process_shutdown.connect(dispatch_uid="eco2.metrics.worker_process_shutdown")
def _on_worker_process_shutdown(pid=None, **kwargs) -> None:
    if multiproc_dir():
        multiprocess.mark_process_dead(pid or os.getpid())


@signals.worker_shutdown.connect(dispatch_uid="eco2.metrics.worker_shutdown")
def _on_worker_shutdown(**kwargs) -> None:
    if multiproc_dir():
        multiprocess.mark_process_dead(os.getpid())


@signals.task_prerun.connect(dispatch_uid="eco2.metrics.task_prerun")
def _on_task_prerun(task_id=None, task=None, **kwargs) -> None:
    if task_id is None:
        return
    if len(_started) >= _STARTED_LIMIT:
        _started.clear()
    _started[task_id] = time.monotonic()


@signals.task_postrun.connect(dispatch_uid="eco2.metrics.task_postrun")
def _on_task_postrun(task_id=None, task=None, **kwargs) -> None:
    started = _started.pop(task_id, None)
    if started is None:
        return
    enable_multiprocess_values()
    TASK_LATENCY.labels(task_name=_task_name(task)).observe(time.monotonic() - started)


@signals.task_success.connect(dispatch_uid="eco2.metrics.task_success")
def _on_task_success(sender=None, **kwargs) -> None:
    _count(_task_name(sender), "succeeded")


@signals.task_failure.connect(dispatch_uid="eco2.metrics.task_failure")
def _on_task_failure(sender=None, **kwargs) -> None:
    _count(_task_name(sender), "failed")


@signals.task_retry.connect(dispatch_uid="eco2.metrics.task_retry")
def _on_task_retry(sender=None, request=None, **kwargs) -> None:
    _count(_task_name(sender, request), "retried")


@signals.task_revoked.connect(dispatch_uid="eco2.metrics.task_revoked")
def _on_task_revoked(sender=None, request=None, **kwargs) -> None:
    _count(_task_name(sender, request), "revoked")


@signals.task_rejected.connect(dispatch_uid="eco2.metrics.task_rejected")
def _on_task_rejected(message=None, **kwargs) -> None:
    headers = getattr(message, "headers", None) or {}
    _count(headers.get("task") or "unknown", "rejected")


@signals.task_unknown.connect(dispatch_uid="eco2.metrics.task_unknown")
def _on_task_unknown(name=None, **kwargs) -> None:
    # an unregistered task name: the consumer rejects the message
    _count(name or "unknown", "rejected")


def multiprocess_registry(path: str | os.PathLike | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, path=str(path or multiproc_dir()))
    return registry


# --- the view -------------------------------------------------------------------------------
def _denied(request: HttpRequest) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer" and given and token:
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        return _unauthorized("invalid token")
    if scheme.lower() != "bearer" or not given:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            return None
    if not token:
        return HttpResponse(
            "Forbidden: METRICS_TOKEN is not set. Set it and scrape with "
            "'Authorization: Bearer <token>', or log in as a staff user.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    return _unauthorized("credentials required")


def _unauthorized(reason: str) -> HttpResponse:
    response = HttpResponse(
        f"Unauthorized: {reason}.\n", status=401, content_type="text/plain; charset=utf-8"
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    denied = _denied(request)
    if denied is not None:
        return denied
    registry = multiprocess_registry(settings.PROMETHEUS_MULTIPROC_DIR)
    registry.register(AppCollector(timeout=settings.METRICS_COLLECT_TIMEOUT))
    registry.register(WorkerWatchCollector())  # the workers of this host (eco2/worker_watch.py)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)


# --- per-host exporter ----------------------------------------------------------------------
def main(argv: Iterable[str] | None = None) -> None:
    from prometheus_client import start_http_server

    parser = argparse.ArgumentParser(
        prog="python -m eco2.metrics",
        description="Serve this host's Celery task metrics (multiprocess directory).",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("METRICS_PORT", "9808")))
    # all interfaces by default: Prometheus scrapes it from outside the container
    parser.add_argument("--addr", default=os.environ.get("METRICS_ADDR", "0.0.0.0"))  # noqa: S104
    args = parser.parse_args(None if argv is None else list(argv))

    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)  # loads the settings (and the variable)
    path.mkdir(parents=True, exist_ok=True)
    registry = multiprocess_registry(path)
    registry.register(WorkerWatchCollector())
    start_http_server(args.port, addr=args.addr, registry=registry)
    print(f"eco2 metrics exporter: http://{args.addr}:{args.port}/metrics ({path})", flush=True)
    with suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
