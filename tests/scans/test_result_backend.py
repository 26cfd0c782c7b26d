"""The task history's writes (scans/result_backend.py): what the admin shows, in fewer round trips."""

from types import SimpleNamespace

import pytest
from celery import states
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from eco2.celery import app
from scans.ledger import finish_attempt, open_attempt
from scans.models import AttemptOutcome, TaskAttempt
from scans.tasks import rule_match_task

pytestmark = pytest.mark.django_db(transaction=True)  # workers run in autocommit


def _statements(queries) -> list[str]:
    """The statements run, without the transaction's own (SQLite logs BEGIN and COMMIT)."""
    words = [q["sql"].split()[0].upper() for q in queries]
    return [w for w in words if w not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]


def _step_task(task_id: str) -> SimpleNamespace:
    request = SimpleNamespace(
        id=task_id,
        delivery_info={"routing_key": "scan.ai.pipeline"},
        retries=0,
        hostname="w@host",
        task=rule_match_task.name,
        argsrepr='["scan"]',
        kwargsrepr="{}",
        periodic_task_name=None,
    )
    return SimpleNamespace(name=rule_match_task.name, step="rule", request=request)


def test_a_success_is_one_update_of_its_queued_row_with_its_attempt_closed_in_one_transaction():
    TaskResult.objects.create(task_id="t-1", task_name=rule_match_task.name, status=states.PENDING)
    task = _step_task("t-1")
    open_attempt(task_id="t-1", task=task, args=["not-a-scan"])

    with CaptureQueriesContext(connection) as stored:
        app.backend.store_result(
            "t-1", {"step": "rule", "outcome": "skipped"}, states.SUCCESS, request=task.request
        )
    with CaptureQueriesContext(connection) as postrun:
        finish_attempt(task_id="t-1", task=task, retval={"outcome": "skipped"}, state="SUCCESS")

    row = TaskResult.objects.get(task_id="t-1")
    assert (row.status, row.worker, row.date_done is not None) == (states.SUCCESS, "w@host", True)
    assert '"skipped"' in row.result
    attempt = TaskAttempt.objects.get(task_id="t-1")
    assert attempt.outcome == AttemptOutcome.SKIPPED and attempt.finished_at is not None
    # no SELECT first (django-celery-results' get_or_create); both in one transaction
    assert _statements(stored.captured_queries) == ["UPDATE", "UPDATE"]
    assert postrun.captured_queries == [], "the attempt was closed with the result"


def test_a_state_of_a_task_without_a_queued_row_is_inserted():
    app.backend.store_result("t-2", ValueError("boom"), states.FAILURE, traceback="tb")

    row = TaskResult.objects.get(task_id="t-2")
    assert row.status == states.FAILURE and "boom" in row.result


def test_a_retry_keeps_its_attempt_for_the_retry_signal():
    TaskResult.objects.create(task_id="t-3", task_name=rule_match_task.name, status=states.PENDING)
    task = _step_task("t-3")
    open_attempt(task_id="t-3", task=task, args=["not-a-scan"])

    app.backend.store_result("t-3", ValueError("again"), states.RETRY, request=task.request)

    assert TaskResult.objects.get(task_id="t-3").status == states.RETRY
    assert TaskAttempt.objects.get(task_id="t-3").outcome == AttemptOutcome.STARTED


def test_the_next_step_sent_by_a_running_step_is_queued_in_the_history_with_its_result():
    from celery._state import _task_stack

    from scans.task_history import record_queued

    TaskResult.objects.create(task_id="t-4", task_name=rule_match_task.name, status=states.PENDING)
    task = _step_task("t-4")
    open_attempt(task_id="t-4", task=task, args=["not-a-scan"])
    sent = {"id": "t-5", "task": "scans.tasks.answer_gen", "argsrepr": '["s"]', "kwargsrepr": "{}"}

    _task_stack.push(task)  # what the worker does while the task runs
    try:
        record_queued(headers=sent)  # its chain's next step, published before the result
        assert not TaskResult.objects.filter(task_id="t-5").exists()
        with CaptureQueriesContext(connection) as stored:
            app.backend.store_result(
                "t-4", {"outcome": "succeeded"}, states.SUCCESS, request=task.request
            )
    finally:
        _task_stack.pop()

    queued = TaskResult.objects.get(task_id="t-5")
    assert (queued.status, queued.task_name) == (states.PENDING, "scans.tasks.answer_gen")
    assert _statements(stored.captured_queries) == ["INSERT", "UPDATE", "UPDATE"]
    record_queued(headers={**sent, "id": "t-6"})  # sent from no running task: written at once
    assert TaskResult.objects.filter(task_id="t-6").exists()
