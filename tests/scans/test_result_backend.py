"""The task history's writes (scans/result_backend.py): what the admin shows, in fewer writes."""

from types import SimpleNamespace

import pytest
from celery import states
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from eco2.celery import app
from scans.ledger import finish_attempt, open_attempt
from scans.models import AttemptOutcome, TaskAttempt
from scans.task_history import record_queued, revoke_tasks, shown_state, with_last_attempt
from scans.tasks import regenerate_thumbnail_task, rule_match_task

pytestmark = pytest.mark.django_db(transaction=True)  # workers run in autocommit


@pytest.fixture(autouse=True)
def _attempts_start_in_the_ledger(settings):
    """The path where an attempt's row is written when it starts (a worker without Redis, a
    redelivery): closing it is an UPDATE. A first delivery that Redis holds while it runs:
    tests/scans/test_running_attempts.py."""
    settings.REDIS_URL = ""


def _statements(queries) -> list[str]:
    """The statements run, without the transaction's own (SQLite logs BEGIN and COMMIT)."""
    words = [q["sql"].split()[0].upper() for q in queries]
    return [w for w in words if w not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]


def _running(task_id: str, name: str = rule_match_task.name, **request) -> SimpleNamespace:
    """A task as a worker runs it: its queued row, its attempt opened (task_prerun)."""
    TaskResult.objects.create(task_id=task_id, task_name=name, status=states.PENDING)
    context = SimpleNamespace(
        **{"chord": None, "group": None, **request},
        id=task_id,
        delivery_info={"routing_key": "scan.ai.pipeline"},
        retries=0,
        hostname="w@host",
        task=name,
        argsrepr='["scan"]',
        kwargsrepr="{}",
        periodic_task_name=None,
    )
    task = SimpleNamespace(name=name, step="rule", request=context)
    open_attempt(task_id=task_id, task=task, args=["not-a-scan"])
    return task


def _end(task: SimpleNamespace, retval: dict) -> tuple[list[str], list[str]]:
    """What the worker writes at the task's success: the result, then task_postrun."""
    task_id = task.request.id
    with CaptureQueriesContext(connection) as stored:
        app.backend.store_result(task_id, retval, states.SUCCESS, request=task.request)
    with CaptureQueriesContext(connection) as postrun:
        finish_attempt(task_id=task_id, task=task, retval=retval, state="SUCCESS")
    return _statements(stored.captured_queries), _statements(postrun.captured_queries)


def test_a_task_success_is_one_update_with_its_attempt_closed_in_the_same_transaction():
    task = _running("t-1", regenerate_thumbnail_task.name)

    stored, postrun = _end(task, {"done": True})

    row = TaskResult.objects.get(task_id="t-1")
    assert (row.status, row.worker, row.date_done is not None) == (states.SUCCESS, "w@host", True)
    attempt = TaskAttempt.objects.get(task_id="t-1")
    assert attempt.outcome == AttemptOutcome.SUCCEEDED and attempt.finished_at is not None
    # no SELECT first (django-celery-results' get_or_create); the attempt closed with it
    assert (stored, postrun) == (["UPDATE", "UPDATE"], [])


def test_a_pipeline_steps_success_is_its_attempt_and_the_history_shows_it(user):
    task = _running("t-2")
    queued_at = TaskResult.objects.get(task_id="t-2").date_done

    stored, postrun = _end(task, {"step": "rule", "outcome": "skipped"})

    # the row is not written over (an INSERT that finds it), the attempt closed
    assert (stored, postrun) == (["INSERT", "UPDATE"], [])
    assert TaskResult.objects.get(task_id="t-2").date_done == queued_at
    attempt = TaskAttempt.objects.get(task_id="t-2")
    assert attempt.outcome == AttemptOutcome.SKIPPED and attempt.finished_at is not None
    row = with_last_attempt(TaskResult.objects.filter(task_id="t-2")).get()
    assert row.status == states.PENDING and shown_state(row) == states.SUCCESS
    user.is_staff = user.is_superuser = True
    user.save()
    client = Client()
    client.force_login(user)
    listed = client.get("/admin/django_celery_results/taskresult/?status=SUCCESS").content.decode()
    assert "t-2" in listed and "w@host" in listed
    queued = client.get("/admin/django_celery_results/taskresult/?status=PENDING").content.decode()
    assert "t-2" not in queued
    # nor is it waiting any more for a revoke
    assert revoke_tasks(["t-2"], terminate=False).waiting == 0


def test_a_pipeline_step_without_its_queued_row_gets_it_with_its_success():
    """Its sender died between the publish and writing the row: the history still has it."""
    task = _running("t-9")
    TaskResult.objects.filter(task_id="t-9").delete()

    _end(task, {"step": "rule", "outcome": "succeeded"})

    row = TaskResult.objects.get(task_id="t-9")
    assert (row.status, row.task_name, row.worker) == (
        states.SUCCESS,
        rule_match_task.name,
        "w@host",
    )


def test_a_batch_members_success_is_stored_for_its_chord():
    task = _running("t-3", chord={"task": "scans.tasks.aggregate_results"})

    _end(task, {"step": "answer", "outcome": "succeeded"})

    assert TaskResult.objects.get(task_id="t-3").status == states.SUCCESS


def test_a_state_of_a_task_without_a_queued_row_is_inserted():
    app.backend.store_result("t-4", ValueError("boom"), states.FAILURE, traceback="tb")

    row = TaskResult.objects.get(task_id="t-4")
    assert row.status == states.FAILURE and "boom" in row.result


def test_a_retry_is_stored_and_leaves_its_attempt_to_the_retry_signal():
    task = _running("t-5")

    app.backend.store_result("t-5", ValueError("again"), states.RETRY, request=task.request)

    assert TaskResult.objects.get(task_id="t-5").status == states.RETRY
    assert TaskAttempt.objects.get(task_id="t-5").outcome == AttemptOutcome.STARTED


def test_the_next_step_sent_by_a_running_step_is_queued_in_the_history_with_its_end():
    from celery._state import _task_stack

    task = _running("t-6")
    sent = {"id": "t-7", "task": "scans.tasks.answer_gen", "argsrepr": '["s"]', "kwargsrepr": "{}"}

    _task_stack.push(task)  # what the worker does while the task runs
    try:
        record_queued(headers=sent)  # its chain's next step, published before its end
        assert not TaskResult.objects.filter(task_id="t-7").exists()
        stored, _ = _end(task, {"outcome": "succeeded"})
    finally:
        _task_stack.pop()

    queued = TaskResult.objects.get(task_id="t-7")
    assert (queued.status, queued.task_name) == (states.PENDING, "scans.tasks.answer_gen")
    assert stored == ["INSERT", "INSERT", "UPDATE"], "in the transaction that closes the attempt"
    record_queued(headers={**sent, "id": "t-8"})  # sent from no running task: written at once
    assert TaskResult.objects.filter(task_id="t-8").exists()
