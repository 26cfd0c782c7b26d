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
from typing import Any

from celery import signals, states
from django.db import DatabaseError
from django_celery_results.models import TaskResult

from eco2.celery import app
from eco2.db import insert_unless_exists

from .models import TaskRerun

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
    for a task sent with ignore_result (tasks.RecordedWhenBusy: the relays)."""
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
    try:
        # One INSERT (every publish pays this; bulk_create would wrap it in BEGIN/COMMIT). A
        # row the worker already wrote (a fast task) or an earlier publish of the same id
        # stays as it is.
        insert_unless_exists(row)
    except DatabaseError:  # history must never break sending
        logger.warning("no queued row for task %s", headers.get("id"), exc_info=True)


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


def revoke_tasks(task_ids: list[str], *, terminate: bool) -> int:
    """Revoke tasks (waiting ones are discarded when a worker gets them; with ``terminate``,
    running ones get SIGTERM). Waiting rows are marked REVOKED right away."""
    app.control.revoke(task_ids, terminate=terminate, signal="SIGTERM")
    return TaskResult.objects.filter(task_id__in=task_ids, status=states.PENDING).update(
        status=states.REVOKED
    )
