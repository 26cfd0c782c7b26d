"""A pipeline step's running attempt (scans/ledger.py): with Redis, a first delivery is held
there while it runs and written to the ledger once, when it ends; whoever learns that its
process died records it."""

from types import SimpleNamespace

import pytest
from billiard.exceptions import WorkerLostError

from scans import services
from scans.ledger import close_attempt, open_attempt, running_task_ids
from scans.models import AttemptOutcome, TaskAttempt
from scans.tasks import vision_scan_task
from tests.conftest import SERVICES_MODE

pytestmark = [
    pytest.mark.django_db(transaction=True),  # workers run in autocommit
    pytest.mark.skipif(not SERVICES_MODE, reason="running attempts are held in Redis"),
]


@pytest.fixture
def scan(user, photo):
    return services.create_scan(owner=user, image=photo(), hint="캔")


def _start(task_id: str, scan_id, *, redelivered: bool = False) -> None:
    """A worker starting a vision step (task_prerun)."""
    request = SimpleNamespace(
        id=task_id,
        delivery_info={"routing_key": "scan.ai.pipeline", "redelivered": redelivered},
        retries=0,
        hostname="w@host",
        is_eager=False,
    )
    task = SimpleNamespace(name=vision_scan_task.name, step="vision", request=request)
    open_attempt(task_id=task_id, task=task, args=[str(scan_id)])


def _die_in_this_process(task_id: str) -> None:
    """The process that ran it is gone: nothing of it is left in memory here."""
    from scans import ledger

    ledger._open_attempts.pop(ledger._delivery(task_id))
    ledger._running_here.discard(task_id)


def test_a_first_delivery_is_seen_running_and_written_once_when_it_ends(scan):
    _start("v-1", scan.id)

    assert running_task_ids(["v-1"]) == {"v-1"}, "the admin's revoke sees it running"
    assert not TaskAttempt.objects.filter(task_id="v-1").exists(), "no row while it runs"

    close_attempt("v-1", AttemptOutcome.SUCCEEDED)

    (attempt,) = TaskAttempt.objects.filter(task_id="v-1")
    assert (attempt.scan_id, attempt.step, attempt.outcome) == (scan.id, "vision", "succeeded")
    assert attempt.worker == "w@host" and attempt.queue == "scan.ai.pipeline"
    assert attempt.started_at <= attempt.finished_at
    assert running_task_ids(["v-1"]) == set()


def test_the_main_process_records_the_attempt_of_a_pool_process_that_died(scan):
    _start("v-2", scan.id)
    _die_in_this_process("v-2")

    # the worker's main process: task_retry / task_failure with WorkerLostError
    close_attempt("v-2", AttemptOutcome.WORKER_LOST, WorkerLostError("signal 9"))

    (attempt,) = TaskAttempt.objects.filter(task_id="v-2")
    assert (attempt.outcome, attempt.exception_class) == ("worker_lost", "WorkerLostError")
    assert attempt.scan_id == scan.id and attempt.duration_ms is not None
    assert attempt.started_at < attempt.finished_at, "its start, as its process announced it"
    assert running_task_ids(["v-2"]) == set()


def test_a_redelivery_records_the_delivery_whose_whole_worker_died(scan):
    """A threads-pool worker killed outright: no process is left to record its attempt; the
    broker delivers the message again, and that delivery records it before its own."""
    _start("v-3", scan.id)
    _die_in_this_process("v-3")

    _start("v-3", scan.id, redelivered=True)

    attempts = list(TaskAttempt.objects.filter(task_id="v-3").order_by("id"))
    assert [(a.outcome, a.redelivered) for a in attempts] == [
        (AttemptOutcome.WORKER_LOST, False),
        (AttemptOutcome.STARTED, True),  # a redelivery writes its row when it starts
    ]
    close_attempt("v-3", AttemptOutcome.SUCCEEDED)
    assert list(
        TaskAttempt.objects.filter(task_id="v-3").order_by("id").values_list("outcome", flat=True)
    ) == [AttemptOutcome.WORKER_LOST, AttemptOutcome.SUCCEEDED]
