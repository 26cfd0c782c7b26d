"""Task history from the moment a task is sent, with arguments as JSON, for every task.

django-celery-results writes a row only when a task starts or ends, and stores arguments as
Python reprs. Here, every published task gets a PENDING row right away (so queued work is
visible in the admin), and its argsrepr/kwargsrepr are JSON, so the admin can show them and
re-run the task with the same arguments. Task arguments are ids only, never secrets.
"""

from __future__ import annotations

import ast
import json
import logging
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from celery import current_task, signals, states
from celery.exceptions import TaskRevokedError
from django.db import DatabaseError, connection, transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django_celery_results.models import TaskResult

from eco2.celery import app
from eco2.db import insert_unless_exists
from eco2.queues import SCAN_AI_TASKS, SCAN_PIPELINE_TASKS

from . import services
from .ledger import close_attempt, close_attempt_on_success, is_running_here, running_task_ids
from .models import AttemptOutcome, TaskAttempt, TaskRerun
from .step_end import expect_step_end

logger = logging.getLogger(__name__)


@signals.before_task_publish.connect
def json_argsrepr(sender=None, body=None, headers=None, **kwargs) -> None:
    if not headers or not isinstance(body, list | tuple) or len(body) < 2:
        return
    args, task_kwargs = body[0], body[1]
    try:
        headers["argsrepr"] = json.dumps(list(args), ensure_ascii=False)
        headers["kwargsrepr"] = json.dumps(task_kwargs, ensure_ascii=False)
    except (TypeError, ValueError):
        pass  # JSON is the only serializer, so this does not happen; keep Celery's repr then


@signals.after_task_publish.connect
def record_queued(sender=None, headers=None, **kwargs) -> None:
    """A PENDING row as soon as the broker has the message (never for a failed publish); none
    for a task sent with ignore_result (eco2.periodic.RecordedWhenBusy: the relays, the sweeper …)."""
    if not headers or "id" not in headers or headers.get("ignore_result"):
        return
    row = TaskResult(
        task_id=headers["id"],
        task_name=headers.get("task"),
        # encoded as django-celery-results stores them: a JSON string of the repr
        task_args=json.dumps(headers.get("argsrepr")),
        task_kwargs=json.dumps(headers.get("kwargsrepr")),
        periodic_task_name=headers.get("periodic_task_name"),
        status=states.PENDING,
    )
    if headers["id"] in _written_before_publish:
        _written_before_publish.discard(headers["id"])
        return  # the next step of a chain: written with its sender's result (_write_step_end)
    publisher = _running_task_id()
    if publisher is not None:
        # sent by a task running here (the next step of a chain, a retry): written with that
        # task's result, in its transaction (scans.result_backend), or at its postrun
        _queued_by.setdefault(publisher, []).append(row)
        return
    try:
        # One INSERT (every publish pays this; bulk_create would wrap it in BEGIN/COMMIT). A
        # row the worker already wrote (a fast task) or an earlier publish of the same id
        # stays as it is.
        insert_unless_exists(row)
    except DatabaseError:  # history must never break sending
        logger.warning("no queued row for task %s", headers.get("id"), exc_info=True)


# The queued rows of the tasks a running task sent (its chain's next step, its retry), by the
# sender's task id: one INSERT with the sender's result instead of a transaction per publish.
_queued_by: dict[str, list[TaskResult]] = {}


def _running_task_id() -> str | None:
    """The id of the task this thread runs, when a worker runs it here; None in the web, the
    beat, a worker's main process or an eager call."""
    task = current_task
    request = getattr(task, "request", None) if task else None
    task_id = getattr(request, "id", None)
    if not task_id or getattr(request, "is_eager", False):
        return None
    return task_id if is_running_here(task_id) else None


# --- a pipeline step's end, with its result (scans.step_end) ---------------------------------
# The queued rows written before their publish, which after_task_publish then skips. A row
# whose publish then fails (the broker went away between the commit and the send) stays
# PENDING for a task that was never sent; the sweeper resumes its scan with a new chain.
_written_before_publish: set[str] = set()


def _next_step_rows(request: Any) -> list[TaskResult]:
    """The queued row of the step a chain passes the scan to next: Celery sends it after the
    running step returns, with the id and arguments the chain froze when it was applied."""
    remaining = getattr(request, "chain", None) or []
    if not remaining:
        return []
    step = remaining[-1]  # Celery pops the next step off the end
    options = step.get("options") or {}
    if not options.get("task_id") or options.get("ignore_result"):
        return []
    return [
        TaskResult(
            task_id=options["task_id"],
            task_name=step.get("task"),
            # as record_queued stores what json_argsrepr sent: a JSON string of the JSON
            task_args=json.dumps(json.dumps(list(step.get("args") or []), ensure_ascii=False)),
            task_kwargs=json.dumps(json.dumps(step.get("kwargs") or {}, ensure_ascii=False)),
            status=states.PENDING,
        )
    ]


def _write_step_end(task_id: str, request: Any) -> None:
    """In the step's final write (scans.step_end): its attempt's end, and the queued row of
    the step it passes the scan to."""
    close_attempt_on_success(task_id, AttemptOutcome.SUCCEEDED)
    rows = _next_step_rows(request)
    if rows:
        TaskResult.objects.bulk_create(rows, ignore_conflicts=True)
        ids = [row.task_id for row in rows]
        transaction.on_commit(partial(_written_before_publish.update, ids))


@signals.task_prerun.connect
def _expect_step_end(sender=None, task_id=None, task=None, **kwargs) -> None:
    if task_id and getattr(task, "name", None) in SCAN_PIPELINE_TASKS:
        request = task.request
        if not getattr(request, "is_eager", False):
            expect_step_end(partial(_write_step_end, task_id, request))


def write_queued_rows(publisher_id: str) -> None:
    """Write the queued rows of the tasks ``publisher_id`` sent, in one INSERT; a row a worker
    already wrote (the task ran meanwhile) stays as it is."""
    rows = _queued_by.pop(publisher_id, None)
    if not rows:
        return
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            TaskResult.objects.bulk_create(rows, ignore_conflicts=True)
    except DatabaseError:  # history must never break a task
        logger.warning("no queued rows for %s", [r.task_id for r in rows], exc_info=True)


@signals.task_postrun.connect
def _write_queued_rows_left(sender=None, task_id=None, **kwargs) -> None:
    """Those of a task whose end stored no result (ignore_result, an idle periodic job)."""
    expect_step_end(None)
    if task_id:
        write_queued_rows(task_id)


# --- a pipeline step's end is in the attempt ledger (scans.result_backend) -------------------
# A step that succeeds leaves its queued row as it was: the scan holds its result and the
# ledger its attempt. What the history shows of a task comes from both.
LEDGER_HELD_STATES = (states.PENDING, states.RETRY, states.STARTED)
SUCCESS_OUTCOMES = (AttemptOutcome.SUCCEEDED, AttemptOutcome.SKIPPED)


def with_last_attempt(rows: QuerySet[TaskResult]) -> QuerySet[TaskResult]:
    """The rows with their latest attempt's queue, number, outcome, worker and end (one
    subquery each on the attempts of the row's task id, not a query per row)."""
    latest = TaskAttempt.objects.filter(task_id=OuterRef("task_id")).order_by("-started_at", "-id")
    return rows.annotate(
        last_queue=Subquery(latest.values("queue")[:1]),
        last_attempt=Subquery(latest.values("attempt")[:1]),
        last_outcome=Subquery(latest.values("outcome")[:1]),
        last_worker=Subquery(latest.values("worker")[:1]),
        last_finished_at=Subquery(latest.values("finished_at")[:1]),
    )


def succeeded_in_ledger() -> Q:
    """Rows (of with_last_attempt) whose success only the ledger records."""
    return Q(status__in=LEDGER_HELD_STATES, last_outcome__in=SUCCESS_OUTCOMES)


def with_state(rows: QuerySet[TaskResult], state: str) -> QuerySet[TaskResult]:
    """The rows (of with_last_attempt) the history shows in ``state``."""
    if state == states.SUCCESS:
        return rows.filter(Q(status=states.SUCCESS) | succeeded_in_ledger())
    if state in LEDGER_HELD_STATES:
        return rows.filter(status=state).exclude(succeeded_in_ledger())
    return rows.filter(status=state)


def shown_state(row: TaskResult) -> str:
    """A row's state as the history shows it (row of with_last_attempt)."""
    if row.status in LEDGER_HELD_STATES and getattr(row, "last_outcome", None) in SUCCESS_OUTCOMES:
        return states.SUCCESS
    return row.status


def decode_arguments(text: str | None, empty: Any) -> Any:
    """The arguments of a TaskResult row: a JSON string holding our JSON argsrepr, or (rows
    from before) a Python repr. Raises ValueError/SyntaxError when unreadable."""
    if not text:
        return empty
    value = json.loads(text)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return ast.literal_eval(value)  # literals only: never evaluates code


def rerun_task(result: TaskResult, *, actor: str = "") -> str:
    """Send the task again with the same name and arguments; return the new task id."""
    args = decode_arguments(result.task_args, [])
    kwargs = decode_arguments(result.task_kwargs, {})
    new_id = str(uuid.uuid4())
    app.send_task(result.task_name, args=list(args), kwargs=dict(kwargs), task_id=new_id)
    TaskRerun.objects.create(
        original_task_id=result.task_id,
        new_task_id=new_id,
        task_name=result.task_name,
        requested_by=actor,
    )
    return new_id


@dataclass
class Revocation:
    """What revoking some tasks did, for the admin to say."""

    waiting: int = 0  # not started: marked REVOKED; the worker discards them on receipt
    running: list[str] = field(default_factory=list)  # already started
    signalled: int = 0  # running ones sent SIGTERM (terminate; prefork workers)
    # running AI steps asked to terminate: Celery's threads pool cannot stop a task, so their
    # scans were cancelled here instead (the step finishes and its result is discarded)
    cancelled_in_place: int = 0


def revoke_tasks(task_ids: list[str], *, terminate: bool) -> Revocation:
    """Revoke tasks: a worker discards a revoked task when it receives it, and with
    ``terminate`` a running one gets SIGTERM (prefork). A pipeline step that is discarded or
    terminated cancels its scan (cancel_revoked_scan, in the worker).

    The AI steps run on a threads pool, where Celery cannot terminate a task (the pool raises
    NotImplementedError in the worker): they are only revoked, and a running one has its scan
    cancelled here; the step's provider call finishes and its result is discarded.
    """
    names = dict(
        TaskResult.objects.filter(task_id__in=task_ids).values_list("task_id", "task_name")
    )
    running = running_task_ids(task_ids)
    on_threads = [task_id for task_id in task_ids if names.get(task_id) in SCAN_AI_TASKS]
    others = [task_id for task_id in task_ids if task_id not in on_threads]
    if others:
        app.control.revoke(others, terminate=terminate, signal="SIGTERM")
    if on_threads:
        app.control.revoke(on_threads)
    report = Revocation(running=[task_id for task_id in task_ids if task_id in running])
    if terminate:
        report.signalled = len(running.intersection(others))
        for task_id in running.intersection(on_threads):
            scan_id = _scan_id_of(
                TaskResult.objects.filter(task_id=task_id).values_list("task_args", flat=True)
            )
            step = _step_of(names[task_id])
            if scan_id and services.cancel_scan(scan_id, step, "terminated"):
                report.cancelled_in_place += 1
    # waiting: queued and never started (a step that ran keeps its queued row: the ledger
    # holds its end)
    started = TaskAttempt.objects.filter(task_id__in=task_ids).values("task_id")
    report.waiting = (
        TaskResult.objects.filter(task_id__in=task_ids, status=states.PENDING)
        .exclude(task_id__in=running)
        .exclude(task_id__in=started)
        .update(status=states.REVOKED)
    )
    return report


def _step_of(task_name: str) -> str:
    return next((step for step, name in services.STEP_TASK_NAMES.items() if name == task_name), "")


def _scan_id_of(task_args: Iterable[str | None]) -> str | None:
    """The scan id of a pipeline step from its stored (or sent) arguments, else None."""
    for text in task_args:
        try:
            return str(uuid.UUID(str(decode_arguments(text, [None])[0])))
        except (ValueError, SyntaxError, IndexError, TypeError):
            return None
    return None


@signals.task_revoked.connect
def cancel_revoked_scan(
    sender=None, request=None, terminated=False, expired=False, **kwargs
) -> None:
    """In the worker, when it discards a revoked pipeline step (revoked before it started, or
    expired) or has terminated a running one: the rest of the chain will not run, so the scan
    ends now, cancelled, instead of waiting for the sweeper to run it again silently."""
    if getattr(sender, "name", None) not in SCAN_PIPELINE_TASKS or request is None:
        return
    # the worker's request context has no args; argsrepr is their JSON (json_argsrepr above)
    scan_id = _scan_id_of([json.dumps(getattr(request, "argsrepr", None))])
    how = "terminated" if terminated else "expired" if expired else "revoked"
    if terminated:
        close_attempt(request.id, AttemptOutcome.FAILED, TaskRevokedError("terminated"))
    if scan_id and services.cancel_scan(scan_id, sender.step, how):
        logger.warning(
            "scan %s cancelled: task %s (%s) was %s", scan_id, request.id, sender.name, how
        )
