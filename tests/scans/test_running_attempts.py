"""A pipeline step's running attempt (scans/ledger.py): with Redis, a first delivery is held
there while it runs and written to the ledger once, when it ends; whoever learns that its
process died records it."""

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from billiard.exceptions import WorkerLostError
from django.db import connection, transaction

from scans import ledger, services
from scans.ledger import (
    close_attempt,
    close_attempt_on_success,
    finish_attempt,
    open_attempt,
    running_task_ids,
)
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


def _vision_task(task_id: str, *, redelivered: bool = False) -> SimpleNamespace:
    request = SimpleNamespace(
        id=task_id,
        delivery_info={"routing_key": "scan.ai.pipeline", "redelivered": redelivered},
        retries=0,
        hostname="w@host",
        is_eager=False,
    )
    return SimpleNamespace(name=vision_scan_task.name, step="vision", request=request)


def _start(task_id: str, scan_id, *, redelivered: bool = False) -> None:
    """A worker starting a vision step (task_prerun)."""
    task = _vision_task(task_id, redelivered=redelivered)
    open_attempt(task_id=task_id, task=task, args=[str(scan_id)])


def _final_write(task_id: str) -> None:
    """The step's final write (scans.step_end): its result and its attempt's end commit."""
    with transaction.atomic():
        close_attempt_on_success(task_id, {"outcome": AttemptOutcome.SUCCEEDED})


def _end(task_id: str, retval: dict) -> None:
    """task_postrun of a step that returned ``retval``."""
    finish_attempt(task_id=task_id, task=_vision_task(task_id), retval=retval, state="SUCCESS")


class _Delivery:
    """One delivery of a task on a thread of its own, as a threads-pool worker runs it: after
    a broker connection is cut, a redelivery can run beside its original in one process."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1)

    def __call__(self, fn, *args, **kwargs):
        return self._thread.submit(fn, *args, **kwargs).result()

    def stop(self) -> None:
        self(lambda: connection.close())  # this thread's connection
        self._thread.shutdown()


@pytest.fixture
def deliveries() -> Iterator[Callable[[], _Delivery]]:
    started = []

    def start() -> _Delivery:
        started.append(_Delivery())
        return started[-1]

    yield start
    for delivery in started:
        delivery.stop()


def _outcomes(task_id: str) -> list[tuple[str, bool]]:
    return list(
        TaskAttempt.objects.filter(task_id=task_id)
        .order_by("id")
        .values_list("outcome", "redelivered")
    )


def _die_in_this_process(task_id: str) -> None:
    """The process that ran it is gone: nothing of it is left in memory here."""
    ledger._open_attempts.pop(ledger._delivery(task_id))
    ledger._running_here.discard(ledger._delivery(task_id))


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


def test_a_redelivery_beside_its_ended_original_does_not_close_the_originals_attempt(
    scan, deliveries
):
    """The order a chaos run showed (test_network_faults): the original's final write, then
    its redelivery's whole run, then the original's postrun."""
    original, redelivery = deliveries(), deliveries()
    original(_start, "v-4", scan.id)
    original(_final_write, "v-4")
    redelivery(_start, "v-4", scan.id, redelivered=True)
    redelivery(_end, "v-4", {"outcome": AttemptOutcome.SKIPPED})  # found the result stored
    original(_end, "v-4", {"outcome": AttemptOutcome.SUCCEEDED})

    assert _outcomes("v-4") == [
        (AttemptOutcome.SUCCEEDED, False),
        (AttemptOutcome.SKIPPED, True),
    ], "each delivery closes its own attempt, once"
    assert running_task_ids(["v-4"]) == set()


def test_an_original_still_running_when_its_redelivery_starts_is_not_recorded_as_lost(
    scan, deliveries
):
    """A redelivery cannot tell a dead worker from a cut connection: it records the attempt
    before it as lost, and that record goes when the original ends after all."""
    original, redelivery = deliveries(), deliveries()
    original(_start, "v-5", scan.id)
    redelivery(_start, "v-5", scan.id, redelivered=True)
    assert _outcomes("v-5") == [
        (AttemptOutcome.WORKER_LOST, False),  # as far as anyone can tell yet
        (AttemptOutcome.STARTED, True),
    ]

    original(_final_write, "v-5")
    original(_end, "v-5", {"outcome": AttemptOutcome.SUCCEEDED})
    redelivery(_end, "v-5", {"outcome": AttemptOutcome.SKIPPED})

    assert _outcomes("v-5") == [
        (AttemptOutcome.SKIPPED, True),
        (AttemptOutcome.SUCCEEDED, False),
    ], "one row an attempt: the original's end replaced its lost record"
    assert running_task_ids(["v-5"]) == set()


def test_an_original_ending_while_its_redelivery_records_it_lost_keeps_one_row(
    scan, deliveries, monkeypatch
):
    """The original's end falls between the redelivery's read of its Redis copy and the
    redelivery's lost record."""
    original, redelivery = deliveries(), deliveries()
    original(_start, "v-6", scan.id)
    insert = ledger._insert

    def original_ends_first(attempt):
        if attempt.outcome == AttemptOutcome.WORKER_LOST:
            original(_final_write, "v-6")
        insert(attempt)

    monkeypatch.setattr(ledger, "_insert", original_ends_first)
    redelivery(_start, "v-6", scan.id, redelivered=True)
    monkeypatch.setattr(ledger, "_insert", insert)
    original(_end, "v-6", {"outcome": AttemptOutcome.SUCCEEDED})

    assert _outcomes("v-6") == [
        (AttemptOutcome.SUCCEEDED, False),
        (AttemptOutcome.STARTED, True),
    ]
