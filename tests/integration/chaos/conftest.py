"""Chaos tests: real worker and beat subprocesses, real RabbitMQ/PostgreSQL/Redis, faults injected.

They run in the real-services pass only (RabbitMQ redelivers unacked messages; the embedded
filesystem broker cannot), and every test ends with ``assert_invariants``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from scans.broker import dead_letter_depth
from scans.models import (
    TERMINAL_STATUSES,
    AttemptOutcome,
    DeadLetter,
    Scan,
    ScanStatus,
    TaskAttempt,
)
from tests.conftest import BASE_DIR, SERVICES_MODE, subprocess_env
from tests.fakes.providers import POISON_HINT
from tests.scans.test_image_preparation import jpeg_with_exif
from tests.support.processes import stop
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chaos


def pytest_collection_modifyitems(config, items):
    if SERVICES_MODE:
        return
    skip = pytest.mark.skip(
        reason="chaos tests need RabbitMQ, PostgreSQL and Redis (the real-services pass)"
    )
    for item in items:
        if "tests/integration/chaos/" in str(item.fspath):
            item.add_marker(skip)


# --- broker and Redis control ---------------------------------------------------------------
def rabbitmq(action: str) -> None:
    """rabbitmqctl stop_app / start_app: the node stays up, the broker goes away and back."""
    subprocess.run(["rabbitmqctl", action], check=True, capture_output=True, timeout=60)
    if action == "start_app":
        subprocess.run(
            ["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=60
        )


REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "", "--appendonly", "no"]  # fmt: skip


def redis_stop() -> None:
    subprocess.run(
        ["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True, timeout=10
    )


def redis_start() -> None:
    subprocess.run(REDIS_START, check=True, capture_output=True, timeout=10)
    for _ in range(50):
        if (
            subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True).stdout.strip()
            == b"PONG"
        ):
            return
        time.sleep(0.1)
    raise RuntimeError("Redis did not come back")


# --- scans ----------------------------------------------------------------------------------
@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def distinct_photo(n: int) -> SimpleUploadedFile:
    """Photos differ by size, so none is a cache hit of another and calls can be counted."""
    return SimpleUploadedFile(
        f"p{n}.jpg", jpeg_with_exif(size=(64 + n, 48)), content_type="image/jpeg"
    )


def upload_many(api: APIClient, count: int, hint: str = "생수병") -> list[str]:
    ids = []
    for n in range(count):
        response = api.post(
            "/api/v1/scans", {"image": distinct_photo(n), "hint": f"{hint} {n}"}, format="multipart"
        )
        assert response.status_code == 202, response.content
        ids.append(response.json()["task_id"])
    return ids


def assert_all_completed(scans: list[Scan]) -> None:
    """Every scan completed; otherwise the failures' codes and messages say why."""
    failures = sorted(
        {(s.error_code, s.error_message) for s in scans if s.status != ScanStatus.COMPLETED}
    )
    assert not failures, failures


def wait_all_terminal(ids: list[str], timeout: float) -> list[Scan]:
    deadline = time.monotonic() + timeout
    while True:
        scans = list(Scan.objects.filter(pk__in=ids))
        waiting = [s for s in scans if s.status not in TERMINAL_STATUSES]
        if not waiting:
            return scans
        if time.monotonic() > deadline:
            states = sorted({(s.status, s.step) for s in waiting})
            pytest.fail(
                f"{len(waiting)} of {len(ids)} scans not terminal after {timeout}s: {states}"
            )
        time.sleep(0.25)


def run_poison_beside_healthy(api: APIClient, healthy: int) -> tuple[Scan, list[str]]:
    """One scan whose recognition step kills its pool process every time (POISON_HINT),
    beside ``healthy`` scans: all end; the poisoned one fails as worker_lost after the first
    run and max_retries (3) re-sends, every attempt lost, its dead letter recorded and its
    message on scan.ai.dlq; the others complete. Returns the poisoned scan and all the ids."""
    before = dead_letter_depth()
    assert before is not None, "scan.ai.dlq is declared (RabbitMQ)"
    poison = upload_many(api, 1, hint=POISON_HINT)
    others = upload_many(api, healthy, hint="콜라 캔")

    by_id = {str(scan.id): scan for scan in wait_all_terminal(poison + others, timeout=90)}
    dead = by_id[poison[0]]
    assert (dead.status, dead.error_code) == (ScanStatus.FAILED, "worker_lost")
    deliveries = TaskAttempt.objects.filter(scan=dead, step="vision")
    assert deliveries.count() == 4, "the first run and max_retries (3) re-sends, then no more"
    assert set(deliveries.values_list("outcome", flat=True)) == {AttemptOutcome.WORKER_LOST}
    assert DeadLetter.objects.get(scan=dead).reason_code == "worker_lost"
    wait_for(lambda: dead_letter_depth() == before + 1, 10, "the message on scan.ai.dlq")
    assert all(by_id[scan_id].status == ScanStatus.COMPLETED for scan_id in others)
    return dead, poison + others


def assert_invariants(ids: list[str]) -> None:
    """Over all scans: one terminal state each (completed, failed, or needs_input: a question
    with its choices and no answer), a reason for every failure, one stored result per step,
    and no scan left behind."""
    scans = list(Scan.objects.filter(pk__in=ids))
    assert len(scans) == len(ids)
    for scan in scans:
        assert scan.status in TERMINAL_STATUSES, (scan.id, scan.status)
        assert scan.finished_at is not None
        if scan.status == ScanStatus.FAILED:
            assert scan.error_code and scan.error_message, scan.id
        elif scan.status == ScanStatus.NEEDS_INPUT:
            assert not scan.error_code and scan.answer is None, scan.id
            assert isinstance(scan.choices, list) and scan.outcome == "ambiguous", scan.id
        else:
            assert not scan.error_code and scan.answer is not None
        # "succeeded" is recorded only by the run whose conditional write stored the result
        stored = TaskAttempt.objects.filter(scan=scan, outcome=AttemptOutcome.SUCCEEDED)
        steps = list(stored.values_list("step", flat=True))
        assert len(steps) == len(set(steps)), f"a step stored its result twice: {scan.id} {steps}"
        if scan.status == ScanStatus.COMPLETED:
            # a run cancelled after its write (broker connection lost) records no success,
            # but its result is there, once
            assert scan.classification is not None and scan.progress == 100, scan.id
    assert not Scan.objects.filter(pk__in=ids, status__in=["queued", "processing"]).exists()


# --- beat -----------------------------------------------------------------------------------
@pytest.fixture
def beat(tmp_path):
    """A real ``celery beat`` with the database scheduler and the project's schedules."""
    from scans.schedules import ensure_schedules

    ensure_schedules()  # transactional tests flush the rows the data migration made
    log = (tmp_path / "beat.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "eco2", "beat", "--loglevel=INFO", "--max-interval=1",
         f"--pidfile={tmp_path / f'beat-{uuid.uuid4().hex[:6]}.pid'}"],
        cwd=BASE_DIR, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield process
    stop(process)
    log.close()
