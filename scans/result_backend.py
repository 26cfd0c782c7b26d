"""The result backend: django-celery-results' task history table, written in fewer round trips.

django-celery-results stores a state with ``get_or_create`` and ``save``: a SELECT and an
UPDATE, each its own transaction in a worker (autocommit). Every task already has its row
from the moment it was sent (scans.task_history.record_queued), so here a state is one
UPDATE, and the insert path runs only when the row is missing (a task sent with
ignore_result that stores a failure, a row pruned meanwhile). A task's success is stored in
one transaction with the close of its attempt (scans.ledger), which the ledger's
``task_postrun`` receiver would otherwise write in a transaction of its own, and with the
queued rows of the tasks it sent (its chain's next step: scans.task_history), which were a
transaction per publish.

A pipeline step whose final write recorded its end (scans.step_end: its attempt and its next
step's queued row, in the transaction of its result) costs nothing here at all.

A pipeline step's success is not written over its queued row: the scan row holds its result,
the attempt its end, worker and duration; the task history shows the row with them
(scans.task_history.shown_state). Only a missing row is inserted (INSERT ... ON CONFLICT DO
NOTHING: no row written when it exists). Failures, retries and every other task are stored.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from celery import states
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend

from eco2.queues import SCAN_PIPELINE_TASKS

from .ledger import close_attempt_on_success, closed_with_result, has_open_attempt
from .task_history import write_queued_rows


class HistoryBackend(DatabaseBackend):
    """django-celery-results' database backend: a state in one UPDATE; a success together
    with its attempt's close."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        if status == states.SUCCESS and closed_with_result(task_id) and self._held_by_scan(request):
            # the step's final write recorded its end and its next step's queued row: the
            # history has it all, and a success costs no statement here
            write_queued_rows(task_id)  # none, unless it sent more after that write
            return result
        closes = status == states.SUCCESS and has_open_attempt(task_id)
        with transaction.atomic(using=using) if closes else nullcontext():
            write_queued_rows(task_id)  # of the tasks it sent: its chain's next step, a retry
            if closes and self._held_by_scan(request):
                # the row only if it is missing (its sender died before writing it): the
                # history then still has the task; an existing row is left as it is
                self._rows(using).bulk_create(
                    [
                        self.TaskModel(
                            task_id=task_id, **self._fields(result, status, None, request)
                        )
                    ],
                    ignore_conflicts=True,
                )
            elif (
                not self._rows(using)
                .filter(task_id=task_id)
                .update(**self._fields(result, status, traceback, request))
            ):
                super()._store_result(task_id, result, status, traceback, request, using)
            if closes:
                close_attempt_on_success(task_id, result)
        return result

    @staticmethod
    def _held_by_scan(request: Any) -> bool:
        """A pipeline step's success: its result is the scan's (the step stored it), its end
        is its attempt's. Not stored here, unless a chord or group counts on it (a batch's
        members: Celery joins their results)."""
        return (
            getattr(request, "task", None) in SCAN_PIPELINE_TASKS
            and not getattr(request, "chord", None)
            and not getattr(request, "group", None)
        )

    def _rows(self, using: str | None) -> Any:
        manager = self.TaskModel._default_manager
        return manager.using(using) if using else manager.all()

    def _fields(self, result: Any, status: str, traceback: str | None, request: Any) -> dict:
        """What DatabaseBackend._store_result and TaskResult.objects.store_result write."""
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        fields: dict[str, Any] = {
            "content_encoding": content_encoding,
            "content_type": content_type,
            "meta": encoded_meta,
            "result": encoded,
            "status": status,
            "traceback": traceback,
            **self._get_extended_properties(request, traceback),
            "date_done": timezone.now(),  # auto_now, which update() does not apply
        }
        if status == states.STARTED:
            fields["date_started"] = Now()
        return fields
