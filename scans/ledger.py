"""Every attempt of every task, from Celery's signals; and the end of a failed pipeline step.

Signals rather than Task hooks, because when a worker *process* dies the child that ran the
task cannot report anything: the worker's main process sends ``task_retry`` (the task is sent
again, see ``retry_on_worker_lost``) or ``task_failure`` (retries used up) on its behalf.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime
from functools import partial
from typing import Any

import redis
from billiard.exceptions import WorkerLostError
from celery import signals
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from eco2.celery import app
from eco2.db import release_db_connection
from eco2.queues import SCAN_PIPELINE_TASKS

from . import services
from .errors import coded_text
from .events import mirror_step_retries
from .models import AttemptOutcome, TaskAttempt
from .progress import redis_client
from .services import record_dead_letter

logger = logging.getLogger(__name__)


def _scan_id(args) -> str | None:
    try:
        return str(uuid.UUID(str(args[0])))
    except (IndexError, TypeError, ValueError):
        return None


def _is_pipeline(task) -> bool:
    return getattr(task, "name", None) in SCAN_PIPELINE_TASKS


# The attempts this process opened and has not closed yet, by task id. A task's prerun and
# postrun run in the same process (and thread), so closing it writes by primary key (or
# inserts it, when its start was not written: _announce_running); a close reported by another
# process (the worker's main process when a pool process died) looks the attempt up instead.
_open_attempts: dict[tuple[str, int], TaskAttempt] = {}
_MAX_OPEN_ATTEMPTS = 10_000  # a bound for attempts closed elsewhere; far above any pool size

# The deliveries running in this process (prerun to postrun), also after their attempt was
# closed with their result (scans.step_end): what they publish then is still theirs.
_running_here: set[tuple[str, int]] = set()


# Attempts of jobs that are recorded only when they did something (eco2.periodic.RecordedWhenBusy:
# the relays, the sweeper …): built at prerun, inserted at their end only if the run published
# something or failed. An idle run costs no write (two rows a run were ~26,000 a day).
_deferred_attempts: dict[tuple[str, int], TaskAttempt] = {}

# Attempts closed with the task's result, in the transaction that stored it (the step's final
# write, scans.step_end; or the result backend): task_postrun has nothing left to write.
_closed_with_result: set[tuple[str, int]] = set()


def _delivery(task_id: str) -> tuple[str, int]:
    """One delivery of ``task_id``: its prerun, its final write and its postrun run on one
    thread. After a broker connection loss a threads-pool worker can run a task's redelivery
    beside the original in one process; keyed by task id alone, the one ending last closed
    the other's attempt (a step recorded as succeeded twice)."""
    return task_id, threading.get_ident()


# --- a pipeline step's attempt while it runs ---------------------------------------------------
# A first delivery of a step writes its attempt once, when it ends, with the step's result;
# while it runs, Redis holds it (``attempt:{task_id}``), where the admin's revoke and the
# worker's main process (a pool process that died) find it. A redelivered or retried message
# (it may be what kills workers) and a worker without Redis write the row when it starts, as a
# process that dies cannot write it later; a redelivery also records the attempt before it
# that nobody recorded (its whole worker died: a threads pool).
RUNNING_ATTEMPT_TTL = 3600  # seconds: far beyond a step's hard time limit (90 s)
_ATTEMPT_FIELDS = (
    "scan_id",
    "task_id",
    "task_name",
    "step",
    "attempt",
    "redelivered",
    "worker",
    "queue",
)


def _running_key(task_id: str) -> str:
    return f"attempt:{task_id}"


def _announce_running(attempt: TaskAttempt) -> bool:
    """Hold the running attempt in Redis; False without Redis or when Redis failed (then its
    start is written to the ledger instead)."""
    client = redis_client()
    if client is None:
        return False
    data = {name: getattr(attempt, name) for name in _ATTEMPT_FIELDS}
    data["started_at"] = attempt.started_at.isoformat()
    try:
        client.set(_running_key(attempt.task_id), json.dumps(data), ex=RUNNING_ATTEMPT_TTL)
    except redis.RedisError as exc:
        logger.warning("attempt of %s not held in Redis: %s", attempt.task_id, exc)
        return False
    return True


def _running_elsewhere(task_id: str) -> TaskAttempt | None:
    """The attempt of ``task_id`` a process announced and did not record (None without)."""
    client = redis_client()
    if client is None:
        return None
    try:
        raw = client.get(_running_key(task_id))
    except redis.RedisError as exc:
        logger.warning("running attempt of %s not read from Redis: %s", task_id, exc)
        return None
    if not raw:
        return None
    data = json.loads(raw)
    return TaskAttempt(
        **{name: data.get(name) for name in _ATTEMPT_FIELDS},
        started_at=datetime.fromisoformat(data["started_at"]),
    )


def _take_off_running(task_id: str) -> bool:
    """Take the Redis copy of ``task_id``'s running attempt off; False when it was gone
    already (taken by another process, which recorded the attempt; or expired)."""
    client = redis_client()
    if client is None:
        return True
    try:
        return bool(client.delete(_running_key(task_id)))
    except redis.RedisError as exc:  # it expires (RUNNING_ATTEMPT_TTL)
        logger.warning("running attempt of %s not taken off Redis: %s", task_id, exc)
        return True  # nothing known to settle


# A redelivery cannot tell a delivery whose worker died from one still running elsewhere (its
# worker's broker connection was cut, or a threads pool runs both). Both record the attempt;
# each first writes its row, then takes the Redis copy off: exactly one of the two finds it
# there, and the other, whose row came second, takes the lost row away. One row an attempt.
def _settle_running(attempt: TaskAttempt) -> None:
    """After the end of an attempt held in Redis was written (committed)."""
    if not _take_off_running(attempt.task_id):
        TaskAttempt.objects.filter(
            task_id=attempt.task_id,
            started_at=attempt.started_at,
            outcome=AttemptOutcome.WORKER_LOST,
        ).exclude(pk=attempt.pk).delete()


def running_task_ids(task_ids: list[str]) -> set[str]:
    """Which of ``task_ids`` have an attempt running now: a started row of the ledger, or an
    attempt held in Redis."""
    running = set(
        TaskAttempt.objects.filter(
            task_id__in=task_ids, outcome=AttemptOutcome.STARTED, finished_at=None
        ).values_list("task_id", flat=True)
    )
    client = redis_client()
    if client is not None and task_ids:
        try:
            held = client.mget([_running_key(task_id) for task_id in task_ids])
        except redis.RedisError as exc:
            logger.warning("running attempts not read from Redis: %s", exc)
        else:
            running.update(task_id for task_id, raw in zip(task_ids, held, strict=True) if raw)
    return running


def _write(attempt: TaskAttempt, fields: dict) -> None:
    """Write an attempt's end: an UPDATE of its started row, or its only INSERT."""
    if attempt.pk is not None:
        TaskAttempt.objects.filter(pk=attempt.pk, outcome=AttemptOutcome.STARTED).update(**fields)
        return
    for name, value in fields.items():
        setattr(attempt, name, value)
    _insert(attempt)
    transaction.on_commit(partial(_settle_running, attempt))


def _insert(attempt: TaskAttempt) -> None:
    """Insert an attempt; one whose scan was deleted meanwhile is kept without its scan. No
    existence query first: the foreign key refuses the row (checked at commit: workers run
    in autocommit, so at this statement; in a step's final write the scan was just updated)."""
    if connection.in_atomic_block:
        attempt.save(force_insert=True)
        return
    try:
        attempt.save(force_insert=True)
    except IntegrityError:
        if attempt.scan_id is None:
            raise
        attempt.scan_id = None
        attempt.save(force_insert=True)


def close_attempt(
    task_id: str, outcome: str, exc: BaseException | None = None, *, busy: bool = True
) -> None:
    """Finish the latest open attempt of ``task_id`` with ``outcome``; ``busy``: the run did
    something (an idle run of a RecordedWhenBusy job leaves no attempt)."""
    deferred = _deferred_attempts.pop(_delivery(task_id), None)
    if deferred is not None:
        if busy or exc is not None or outcome != AttemptOutcome.SUCCEEDED:
            deferred.outcome = outcome
            deferred.finished_at = timezone.now()
            deferred.duration_ms = int(
                (deferred.finished_at - deferred.started_at).total_seconds() * 1000
            )
            if exc is not None:
                deferred.exception_class = type(exc).__name__
                deferred.exception_message = coded_text(exc)[:2000]
            deferred.save(force_insert=True)
        return
    attempt = _open_attempts.pop(_delivery(task_id), None)
    if attempt is None:
        # closed by another process (a pool process died): its started row, or its Redis copy
        attempt = (
            TaskAttempt.objects.filter(task_id=task_id, outcome=AttemptOutcome.STARTED)
            .order_by("-id")
            .only("pk", "started_at")
            .first()
        ) or _running_elsewhere(task_id)
        if attempt is None:
            return
    now = timezone.now()
    fields: dict[str, Any] = {
        "outcome": outcome,
        "finished_at": now,
        "duration_ms": int((now - attempt.started_at).total_seconds() * 1000),
    }
    if exc is not None:
        fields["exception_class"] = type(exc).__name__
        # "<code>: <detail>": the live retry line shows the code's message, not this text
        fields["exception_message"] = coded_text(exc)[:2000]
    _write(attempt, fields)


def has_open_attempt(task_id: str) -> bool:
    """Whether this process opened ``task_id``'s attempt and has not closed it yet."""
    return _delivery(task_id) in _open_attempts


def is_running_here(task_id: str) -> bool:
    """Whether this thread runs ``task_id`` (between its prerun and its postrun)."""
    return _delivery(task_id) in _running_here


def _success_outcome(retval: Any) -> str:
    outcome = retval.get("outcome") if isinstance(retval, dict) else None
    return outcome or AttemptOutcome.SUCCEEDED


def close_attempt_on_success(task_id: str, retval: Any) -> None:
    """Close the attempt of a task whose success is being stored, inside the transaction that
    stores it (the step's final write, scans.step_end; the result backend); once that
    commits, its task_postrun writes nothing."""
    close_attempt(task_id, _success_outcome(retval))
    transaction.on_commit(partial(_closed_with_result.add, _delivery(task_id)))


def closed_with_result(task_id: str) -> bool:
    """Whether ``task_id``'s attempt was recorded with its result (committed)."""
    return _delivery(task_id) in _closed_with_result


@signals.task_prerun.connect
def open_attempt(sender=None, task_id=None, task=None, args=(), **kwargs) -> None:
    """Every task's attempt is recorded; pipeline steps also name their scan and step."""
    request = task.request
    delivery = request.delivery_info or {}
    attempt = TaskAttempt(
        scan_id=_scan_id(args) if _is_pipeline(task) else None,
        task_id=task_id,
        task_name=task.name,
        step=getattr(task, "step", "") or "",
        attempt=(request.retries or 0) + 1,
        redelivered=bool(delivery.get("redelivered")),
        worker=request.hostname or "",
        queue=delivery.get("routing_key") or "",
        started_at=timezone.now(),
    )
    _running_here.add(_delivery(task_id))
    if getattr(task, "recorded_when_busy", False):
        _deferred_attempts[_delivery(task_id)] = attempt
        return
    if len(_open_attempts) >= _MAX_OPEN_ATTEMPTS:
        _open_attempts.clear()  # the lookup in close_attempt still finds them
    _open_attempts[_delivery(task_id)] = attempt
    first_delivery = attempt.attempt == 1 and not attempt.redelivered
    if _is_pipeline(task) and first_delivery and _announce_running(attempt):
        return  # written when it ends
    if _is_pipeline(task) and attempt.redelivered:
        _record_lost_before(task_id)
    _insert(attempt)


def _record_lost_before(task_id: str) -> None:
    """A redelivered step: the delivery before it may have died with its whole worker (no
    process left to record it); its attempt, held in Redis, is recorded as lost, unless it
    turns out to be still running and ends meanwhile (_settle_running)."""
    lost = _running_elsewhere(task_id)
    if lost is None:
        return
    now = timezone.now()
    lost.outcome = AttemptOutcome.WORKER_LOST
    lost.finished_at = now
    lost.duration_ms = int((now - lost.started_at).total_seconds() * 1000)
    lost.exception_class = WorkerLostError.__name__
    lost.exception_message = "worker_lost: the worker died while it ran this step"
    _insert(lost)  # committed (autocommit) before the copy is taken off
    if not _take_off_running(task_id):
        TaskAttempt.objects.filter(pk=lost.pk).delete()  # it ended and recorded its end


@signals.task_postrun.connect
def finish_attempt(sender=None, task_id=None, task=None, retval=None, state=None, **kwargs) -> None:
    _running_here.discard(_delivery(task_id))
    if _delivery(task_id) in _closed_with_result:
        _closed_with_result.discard(_delivery(task_id))
        return  # closed with the stored result (scans.step_end, scans.result_backend)
    if state != "SUCCESS":
        return  # retries and failures are closed by their own signals, with the exception
    busy = task.busy(retval) if hasattr(task, "busy") else bool(retval)  # eco2.periodic
    close_attempt(task_id, _success_outcome(retval), busy=busy)


@signals.task_retry.connect
def retry_attempt(sender=None, request=None, reason=None, **kwargs) -> None:
    exc = getattr(reason, "exc", None)
    outcome = (
        AttemptOutcome.WORKER_LOST if isinstance(exc, WorkerLostError) else AttemptOutcome.RETRY
    )
    close_attempt(request.id, outcome, exc)
    _mirror_retries(sender, getattr(request, "args", None))


def _mirror_retries(task, args) -> None:
    """A pipeline step's attempt retried or failed: the live stream shows its retries from the
    Redis mirror (nothing to do without Redis: streams read the ledger then)."""
    if not settings.REDIS_URL or not _is_pipeline(task):
        return
    scan_id = _scan_id(args or ())
    if scan_id:
        mirror_step_retries(scan_id, getattr(task, "step", "") or "")


@signals.task_failure.connect
def fail_pipeline_task(sender=None, task_id=None, exception=None, args=(), **kwargs) -> None:
    """The task will not run again: close its attempt; a pipeline step is also dead-lettered
    and its scan failed, unless the failure is not the scan's (services.failure_spares_scan)."""
    lost = isinstance(exception, WorkerLostError)
    close_attempt(task_id, AttemptOutcome.WORKER_LOST if lost else AttemptOutcome.FAILED, exception)
    if not _is_pipeline(sender):
        return
    _mirror_retries(sender, args)  # a step that failed for good starts its count again
    scan_id = _scan_id(args)
    if services.failure_spares_scan(scan_id, sender.step, exception):
        logger.warning(
            "scan %s: task %s of step %s failed after its work or in the broker (%r); "
            "not failing the scan: its message is redelivered, or the sweeper resumes it",
            scan_id,
            task_id,
            sender.step,
            exception,
        )
        return
    code, message = services.describe_failure(exception, sender.step)
    record_dead_letter(scan_id, task_id, sender.name, sender.step, code, message)
    if scan_id:
        services.fail_scan(scan_id, code=code, message=message)


@signals.task_rejected.connect
def record_rejected_message(sender=None, message=None, exc=None, **kwargs) -> None:
    """A message the worker's consumer rejected before any task ran (it could not be decoded
    or bound, eco2/worker_consumer.py): on RabbitMQ it is on scan.ai.dlq now; recorded here
    so that the admin and the dead-letter alert show it on every broker."""
    _record_undeliverable(message, "malformed_message", str(exc or "the message is unreadable"))


@signals.task_unknown.connect
def record_unknown_task(sender=None, message=None, exc=None, name=None, **kwargs) -> None:
    _record_undeliverable(message, "unknown_task", f"No task named {name!r} on this worker.")


def _record_undeliverable(message, code: str, reason: str) -> None:
    """Record what can be read of a rejected message. Runs in the worker's consumer thread:
    an error here is logged, never raised into Celery's event loop, and the consumer's
    database connection is handed back at once (it writes rarely)."""
    try:
        headers = message.headers if isinstance(message.headers, dict) else {}
        try:
            payload = message.payload
        except Exception:
            payload = None
        task_id, name, args = headers.get("id"), headers.get("task"), None
        if isinstance(payload, list | tuple) and payload:
            args = payload[0]
        elif isinstance(payload, dict):
            task_id, name = task_id or payload.get("id"), name or payload.get("task")
            args = payload.get("args")
        task_id = task_id if isinstance(task_id, str) and 0 < len(task_id) <= 255 else None
        name = str(name or "")[:255]
        queue = (message.delivery_info or {}).get("routing_key", "")
        body = (
            message.body.decode("utf-8", "replace")
            if isinstance(message.body, bytes)
            else str(message.body)
        )
        record_dead_letter(
            _scan_id(args) if isinstance(args, list | tuple) else None,
            task_id or f"unidentified-{uuid.uuid4()}",
            name,
            getattr(app.tasks.get(name), "step", "") or "",
            code,
            f"{reason}\nQueue: {queue}. Body: {body[:1000]}",
        )
    except Exception:
        logger.exception("could not record the rejected message %r", message)
    finally:
        release_db_connection()
