"""The Celery application.

The pipeline's fixed configuration (JSON only, routes, late acks) is written here once; what
changes between deployments (broker URL, transport options) comes from Django settings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import weakref

from amqp.exceptions import ConnectionError as AMQPConnectionError
from celery import Celery, signals

from eco2.queues import (
    DEFAULT_QUEUE,
    NOTIFICATION_QUEUE,
    SCAN_AI_TASKS,
    SCAN_IMAGE_QUEUE,
    SCAN_PIPELINE_QUEUE,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eco2.settings")

app = Celery("eco2")
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.update(
    # JSON only: a pickle message on the broker must never reach a worker as code.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    timezone="Asia/Seoul",
    enable_utc=True,
    # task_queues: the settings build them in the deployment's queue type (CELERY_QUEUE_TYPE,
    # eco2/broker_queues.py)
    task_default_queue=DEFAULT_QUEUE,
    task_routes={
        "scans.tasks.prepare_image": {"queue": SCAN_IMAGE_QUEUE},
        **{name: {"queue": SCAN_PIPELINE_QUEUE} for name in SCAN_AI_TASKS},
        "notifications.*": {"queue": NOTIFICATION_QUEUE},
    },
    # At-least-once: a task is acked after it ran, and a killed worker's task is redelivered.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A message that cannot be decoded or bound is rejected (to scan.ai.dlq) and recorded
    # instead of stopping the worker, and every worker after it (eco2/worker_consumer.py).
    worker_consumer="eco2.worker_consumer:Consumer",
    # A worker that lost its broker connection cannot ack what it runs any more: the broker
    # redelivers those messages, so stop running them here rather than run them twice.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # On SIGTERM (deploys), let running tasks finish for up to 20 s before the cold shutdown.
    worker_soft_shutdown_timeout=20.0,
    worker_enable_soft_shutdown_on_idle=True,
    # Publishing from a worker (the next step of a chain, a retry) rides out a broker restart
    # of up to ~1 minute instead of failing the step. The web request publishes once, with
    # bounded waits of its own (scans/publishing.py), and leaves the rest to the outbox.
    task_publish_retry_policy={
        "max_retries": 40,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 2,
        # A restarting RabbitMQ accepts connections before its vhosts are up and refuses
        # them with 530 "vhost not found" or 541 "vhost is down": connection errors kombu
        # does not retry by itself. Retried here like a refused connection.
        "retry_errors": (AMQPConnectionError,),
    },
    task_default_retry_delay=60,
    task_max_retries=3,
    # django-celery-results' table, a state in one UPDATE and a success stored in one
    # transaction with its attempt's close (scans/result_backend.py)
    result_backend="scans.result_backend:HistoryBackend",
    result_extended=True,
    # One result backend per process instead of one per thread: the django-db backend keeps no
    # per-thread state (Django gives each thread its own connection). Under ASGI every request
    # runs in a new thread, so each upload built a backend for the AsyncResult of its publish,
    # and every pool thread of an AI worker kept one of its own.
    result_backend_thread_safe=True,
    task_track_started=True,
    # Prefork workers send task events for Flower (threads pools cannot: see below). No
    # "task-sent" events: each would be one more confirmed publish per task, and Flower would
    # show the AI worker's tasks stuck as sent; queued tasks are visible in the task history
    # (a PENDING row per publish, scans/task_history.py).
    worker_send_task_events=True,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    # Beat writes a job's last_run_at after every send instead of every three minutes, so its
    # age is true to a few seconds (/metrics, /readyz, the admin: eco2/beat_watch.py). A row
    # write per send: about one every two seconds with today's jobs.
    beat_sync_every=1,
    worker_hijack_root_logger=False,
)
# Celery's Django fixup closes every database connection before and after each task whatever
# CONN_MAX_AGE says (celery/fixups/django.py, 5.7), unless DB_REUSE_MAX is set: then it closes
# them every DB_REUSE_MAX tasks only. Set high, so that Django's own per-request rule decides
# instead (_close_old_db_connections below): a pooled or CONN_MAX_AGE=0 connection is still
# handed back after every task, a prefork child keeps its one (WORKER_CONN_MAX_AGE).
app.conf.update(CELERY_DB_REUSE_MAX=1_000_000)

app.autodiscover_tasks()


THREADED_POOLS = ("threads", "gevent", "eventlet")


def pool_name(pool_cls) -> str:
    """The pool's name ("prefork", "threads", …) from what `celery worker --pool` hands the
    worker: the CLI converts the name to the pool class, programmatic use may pass the name."""
    from celery import concurrency

    if isinstance(pool_cls, str):
        return pool_cls
    module = getattr(pool_cls, "__module__", "")
    for name in concurrency.get_available_pool_names():
        implementation = concurrency.ALIASES.get(name) or ""
        if implementation.rsplit(":", 1)[0] == module:
            return name
    return module


@signals.celeryd_init.connect
def _no_task_events_on_threaded_pools(sender=None, conf=None, options=None, **kwargs) -> None:
    """A threads or gevent worker sends no task events while publisher confirms are on.

    Task events are published from the pool's threads on a connection the worker's event loop
    also reads. With ``confirm_publish`` the publishing thread waits for the broker's ack on
    that connection, the loop takes the ack frame, and both block: every slot stops, the
    broker drops the silent connection after its heartbeat timeout (Celery 5.7, found by
    bench/pipeline_overhead.py with a 32-thread worker). Prefork workers send events from
    their main process and keep them; task history and /metrics cover every worker.
    """
    options = options or {}
    # the CLI passes the class as "pool" (and "pool_cls" as None)
    pool = pool_name(options.get("pool") or options.get("pool_cls") or conf.worker_pool)
    confirms = (conf.broker_transport_options or {}).get("confirm_publish")
    if pool in THREADED_POOLS and confirms and conf.worker_send_task_events:
        conf.worker_send_task_events = False
        logging.getLogger(__name__).warning(
            "%s: task events off on the %s pool (publisher confirms on the event connection "
            "would deadlock the pool's threads); do not enable them with `celery control "
            "enable_events`",
            sender,
            pool,
        )


@signals.celeryd_init.connect
def _no_prefetch_reduction_on_threaded_pools(
    sender=None, conf=None, options=None, **kwargs
) -> None:
    """A threads or gevent worker keeps its full prefetch count after a broker reconnect.

    With the reduction on, Celery lowers the prefetch count after a reconnect by the tasks
    still running and restores it step by step from each later task's ack. The ack runs on the
    pool thread that ran the task, and so does the restoring ``basic_qos``: a synchronous call
    on the connection whose frames the worker's event loop reads, often while the loop sends a
    ``basic_qos`` of its own. Both waited for a ``qos-ok`` that neither took, and the worker
    ran nothing until the broker dropped the silent connection (about three minutes; py-spy
    showed both threads in ``basic_qos``, tests/integration/chaos/test_network_faults.py). Without it the
    worker may take up to a full prefetch of new messages while cut tasks still finish; those
    wait unacked in the pool's queue and are redelivered if it dies. Prefork workers ack from
    their event loop and keep the reduction.
    """
    options = options or {}
    pool = pool_name(options.get("pool") or options.get("pool_cls") or conf.worker_pool)
    if pool in THREADED_POOLS:
        conf.worker_enable_prefetch_count_reduction = False


@signals.celeryd_init.connect
def _quick_gil_handoff_on_threads_pools(sender=None, conf=None, options=None, **kwargs) -> None:
    """A threads-pool worker hands the GIL over every WORKER_THREADS_SWITCH_INTERVAL seconds.

    Its threads mostly wait on I/O (provider calls, the database); each wake-up waits for the
    GIL, by default up to 5 ms per thread ahead of it, and so does the consumer thread that
    hands messages to the pool. With 128 threads that wait kept ~20 threads idle while their
    messages sat unacknowledged; 1 ms gave 14.1 and 14.2 scans/s against 12.5 and 11.7 side by
    side in bench/io_concurrency.py (docs/benchmarks.md). Prefork and gevent are unchanged.
    """
    from django.conf import settings

    options = options or {}
    pool = pool_name(options.get("pool") or options.get("pool_cls") or conf.worker_pool)
    interval = settings.WORKER_THREADS_SWITCH_INTERVAL
    if pool == "threads" and interval:
        sys.setswitchinterval(interval)


def _close_old_db_connections(sender=None, **kwargs) -> None:
    """Before and after every task, what Django does around every request.

    close_old_connections(): a connection is closed (or handed back to its pool) when
    CONN_MAX_AGE says so, when an error left it unusable, or when the task changed its
    autocommit; otherwise it is kept, and checked once before its next use
    (CONN_HEALTH_CHECKS). An eager task runs inside its caller's request or transaction, whose
    connection is not the task's to close.
    """
    from django.db import close_old_connections

    if sender is not None and not getattr(sender.request, "is_eager", False):
        close_old_connections()


# When the task before ended with each kept connection usable (connections are per thread).
_task_ended_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_db_connections_only_after_idle(sender=None, **kwargs) -> None:
    """Before a task: no health check for a kept connection the task before used a moment
    ago (WORKER_DB_CHECK_AFTER_IDLE); Django's CONN_HEALTH_CHECKS sends a SELECT 1 before
    the first query of every task otherwise, a round trip and a transaction for each of a
    scan's four steps. A connection broken within that moment (PostgreSQL restarted between
    two tasks) fails the next task's first query, as it would have failed a running task.
    """
    from django.conf import settings
    from django.db import connections

    if sender is None or getattr(sender.request, "is_eager", False):
        return
    fresh_after = time.monotonic() - settings.WORKER_DB_CHECK_AFTER_IDLE
    for connection in connections.all(initialized_only=True):
        used_at = _task_ended_at.get(connection)
        if connection.connection is not None and used_at is not None and used_at >= fresh_after:
            connection.health_check_done = True  # type: ignore[attr-defined]  # not in the stubs


def _note_db_connections_used(sender=None, **kwargs) -> None:
    """After a task (and after close_old_connections): when each kept connection was last
    known good."""
    from django.db import connections

    if sender is None or getattr(sender.request, "is_eager", False):
        return
    now = time.monotonic()
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.errors_occurred:
            _task_ended_at[connection] = now
        else:
            _task_ended_at.pop(connection, None)


signals.task_prerun.connect(_close_old_db_connections)
signals.task_prerun.connect(_check_db_connections_only_after_idle)


@signals.worker_init.connect
def _close_old_db_connections_after_tasks(**kwargs) -> None:
    # Receivers run in the order they were connected, and the attempt ledger writes in a
    # task_postrun receiver of its own (scans/ledger.py): connected here, once the worker has
    # imported every task module, this one runs last. Run earlier, the ledger's write took a
    # pooled connection back out and its thread held it until its next task (a threads pool
    # of 32 ran out of 16 connections).
    signals.task_postrun.connect(_close_old_db_connections, dispatch_uid="eco2.close_old_db")
    signals.task_postrun.connect(_note_db_connections_used, dispatch_uid="eco2.db_used_at")


@signals.worker_process_init.connect
def _persistent_db_connection_in_prefork_children(**kwargs) -> None:
    """A prefork child keeps its database connection between tasks (WORKER_CONN_MAX_AGE).

    CONN_MAX_AGE stays 0 for the web (under ASGI every request runs in a new thread, and each
    would keep a connection), and each task of a prefork child then opened a new PostgreSQL
    connection (a backend fork and the session set-up) and closed it: a quarter of the photo
    worker's CPU in bench/pipeline_overhead.py. A child runs one task at a time, so one
    persistent connection per child is the right shape. Only prefork children send this
    signal, and a process with a connection pool (DB_POOL_MAX_SIZE) keeps the pool's rule.
    """
    from django.conf import settings
    from django.db import connections

    max_age = settings.WORKER_CONN_MAX_AGE
    for connection in connections.all():
        pooled = connection.settings_dict.get("OPTIONS", {}).get("pool")
        if max_age and not pooled and connection.settings_dict.get("CONN_MAX_AGE") == 0:
            connection.settings_dict["CONN_MAX_AGE"] = max_age


import eco2.metrics  # noqa: E402, F401  (Prometheus task metrics: Celery signal handlers)
