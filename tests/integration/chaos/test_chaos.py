"""Nothing lost, nothing twice, under the faults a production pipeline meets.

Each test injects one fault into a running system (real worker subprocess, RabbitMQ,
PostgreSQL, Redis, the fake OpenAI server) and ends with the invariant check.
"""

import threading
import time

import pytest
from django.db import connection

from scans import services
from scans.models import AttemptOutcome, Scan, ScanStatus, TaskAttempt
from scans.progress import read_progress
from tests.fakes.openai_server import ok, rate_limited, refusal, server_error, slow, storm
from tests.integration.chaos.conftest import (
    assert_all_completed,
    assert_invariants,
    rabbitmq,
    redis_start,
    redis_stop,
    run_poison_beside_healthy,
    upload_many,
    wait_all_terminal,
)
from tests.integration.pipeline.test_pipeline_openai import (
    ANSWER,
    GUIDANCE,
    PET_BOTTLE,
    VISION,
    hint_of,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

OPENAI_ENV = {
    "SCAN_VISION_PROVIDER": "scans.providers.openai.OpenAIVisionProvider",
    "SCAN_ANSWER_PROVIDER": "scans.providers.openai.OpenAIAnswerProvider",
    "OPENAI_API_KEY": "test-key",
    "OPENAI_TIMEOUT": "5",
}


@pytest.fixture
def openai_env(fake_openai, rulebase):
    fake_openai.set_default_for_schema(ANSWER, lambda body: ok(GUIDANCE))
    return {**OPENAI_ENV, "OPENAI_BASE_URL": fake_openai.base_url}


def test_1_sigkill_of_the_worker_during_vision_loses_nothing(
    worker_manager, fake_openai, openai_env, api
):
    fake_openai.set_default_for_schema(VISION, lambda body: slow(0.4, ok(PET_BOTTLE)))
    concurrency = 4
    worker_manager.ensure(concurrency=concurrency, **openai_env)
    ids = upload_many(api, 50)
    wait_for(
        lambda: len(fake_openai.requests_for_schema(VISION)) >= 8, 30, "vision calls in flight"
    )

    worker_manager.kill()  # parent and pool processes, mid-vision: nothing acked, nothing reported
    in_flight = concurrency
    worker_manager.ensure(concurrency=concurrency, **openai_env)

    scans = wait_all_terminal(ids, timeout=120)
    assert_all_completed(scans)
    assert len(fake_openai.requests_for_schema(VISION)) <= len(ids) + in_flight
    assert_invariants(ids)


def test_2_rabbitmq_restart_mid_run(worker_manager, fake_openai, openai_env, api):
    fake_openai.set_default_for_schema(VISION, lambda body: slow(0.3, ok(PET_BOTTLE)))
    worker_manager.ensure(concurrency=4, **openai_env)
    ids = upload_many(api, 30)
    wait_for(lambda: len(fake_openai.requests_for_schema(VISION)) >= 6, 30, "the pipeline running")

    rabbitmq("stop_app")
    try:
        time.sleep(3)
    finally:
        rabbitmq("start_app")

    scans = wait_all_terminal(ids, timeout=150)
    assert_all_completed(scans)
    assert_invariants(ids)


def test_3_scans_accepted_while_the_broker_is_down_complete_after_it_returns(
    worker_manager, fake_openai, openai_env, api, beat
):
    fake_openai.set_default_for_schema(VISION, lambda body: ok(PET_BOTTLE))
    worker_manager.ensure(**openai_env)
    rabbitmq("stop_app")
    try:
        started = time.monotonic()
        ids = upload_many(api, 10)  # each answered 202 although nothing could be published
        accept_seconds = time.monotonic() - started
        assert Scan.objects.filter(pk__in=ids, dispatched_at=None).count() == 10
    finally:
        rabbitmq("start_app")

    scans = wait_all_terminal(ids, timeout=90)  # the relay (beat, every 10 s) publishes them
    assert all(scan.status == ScanStatus.COMPLETED for scan in scans)
    assert accept_seconds < 10, (
        f"accepting 10 scans with the broker down took {accept_seconds:.1f}s"
    )
    assert all(scan.dispatch_attempts >= 2 for scan in scans), (
        "published by the relay, not the request"
    )
    assert_invariants(ids)


def test_4_redis_stopped_mid_run_scans_complete_and_status_comes_from_the_db(
    worker_manager, fake_openai, openai_env, api
):
    fake_openai.set_default_for_schema(VISION, lambda body: slow(0.2, ok(PET_BOTTLE)))
    worker_manager.ensure(**openai_env)
    ids = upload_many(api, 12)
    wait_for(lambda: len(fake_openai.requests_for_schema(VISION)) >= 3, 30, "the pipeline running")

    redis_stop()
    try:
        statuses = [api.get(f"/api/v1/scans/{task_id}") for task_id in ids]
        assert all(response.status_code == 200 for response in statuses)
        scans = wait_all_terminal(ids, timeout=90)
        final = api.get(f"/api/v1/scans/{ids[-1]}").json()
    finally:
        redis_start()

    assert all(scan.status == ScanStatus.COMPLETED for scan in scans)
    assert final["status"] == "completed"
    assert_invariants(ids)


def test_5_provider_429_and_500_storm_every_scan_terminal_attempts_bounded(
    worker_manager, fake_openai, openai_env, api
):
    faults = storm(
        rate=0.5, fault=rate_limited(0.1), otherwise=lambda body: ok(PET_BOTTLE), seed=11
    )
    errors = storm(rate=0.3, fault=server_error(503), otherwise=faults, seed=12)
    fake_openai.set_default_for_schema(VISION, errors)
    fake_openai.set_default_for_schema(
        ANSWER,
        storm(rate=0.3, fault=server_error(500), otherwise=lambda body: ok(GUIDANCE), seed=13),
    )
    worker_manager.ensure(concurrency=4, **openai_env)
    ids = upload_many(api, 20)

    scans = wait_all_terminal(ids, timeout=150)

    calls: dict[str, int] = {}
    for request in fake_openai.requests_for_schema(VISION):
        calls[hint_of(request)] = calls.get(hint_of(request), 0) + 1
    assert max(calls.values()) <= 4, calls
    for scan in scans:
        for step in ("vision", "rule", "answer"):
            assert TaskAttempt.objects.filter(scan=scan, step=step).count() <= 4
        if scan.status == ScanStatus.FAILED:
            assert scan.error_code in {"provider_rate_limited", "provider_unavailable"}
    assert sum(scan.status == ScanStatus.COMPLETED for scan in scans) >= 10
    assert_invariants(ids)


def test_6_a_poison_task_is_dead_lettered_after_bounded_deliveries(worker_manager, rulebase, api):
    worker_manager.ensure(concurrency=2)  # offline provider; "#poison" kills its process
    dead, ids = run_poison_beside_healthy(api, healthy=5)
    # the worker's main process mirrored each lost delivery where live streams read them
    mirrored = read_progress(str(dead.id))["retries"]
    assert (mirrored["step"], mirrored["count"], mirrored["last_outcome"]) == (
        "vision",
        4,
        "worker_lost",
    )
    assert_invariants(ids)


def test_7_two_concurrent_admin_retries_re_enqueue_each_scan_once(
    worker_manager, fake_openai, openai_env, api
):
    fake_openai.enqueue_for_schema(VISION, *[refusal("no") for _ in range(10)])
    fake_openai.set_default_for_schema(VISION, lambda body: ok(PET_BOTTLE))
    worker_manager.ensure(concurrency=2, **openai_env)
    ids = upload_many(api, 10)
    failed = wait_all_terminal(ids, timeout=60)
    assert all(scan.status == ScanStatus.FAILED for scan in failed)

    barrier = threading.Barrier(2)
    retried = []

    def admin(name: str) -> None:
        try:
            barrier.wait()
            retried.append(services.retry_scans(ids, actor=name))
        finally:
            connection.close()

    threads = [threading.Thread(target=admin, args=(name,)) for name in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(retried) == 10, retried
    scans = wait_all_terminal(ids, timeout=60)
    assert all(scan.status == ScanStatus.COMPLETED and scan.retry_count == 1 for scan in scans)
    assert len(fake_openai.requests_for_schema(VISION)) == 20, "10 refused + 10 retried, not 30"
    assert_invariants(ids)


def _drop_other_database_connections() -> int:
    """What a PostgreSQL failover, a pooler's restart or an operator's pg_terminate_backend
    does to the worker: every other session of this database ends at once."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_8_database_connections_dropped_mid_step_scans_retry_and_complete(
    worker_manager, fake_openai, openai_env, api
):
    # the prefork children keep their connection through the provider's call (eco2/celery.py):
    # the step's final write is the first statement to meet the dropped session
    fake_openai.set_default_for_schema(VISION, lambda body: slow(1.0, ok(PET_BOTTLE)))
    worker_manager.ensure(concurrency=2, **openai_env)
    ids = upload_many(api, 6)
    wait_for(
        lambda: len(fake_openai.requests_for_schema(VISION)) >= 2, 30, "vision calls in flight"
    )

    assert _drop_other_database_connections() >= 2

    scans = wait_all_terminal(ids, timeout=90)
    assert_all_completed(scans)
    retried = TaskAttempt.objects.filter(scan_id__in=ids, outcome=AttemptOutcome.RETRY)
    assert retried.filter(exception_class="OperationalError").exists(), list(
        retried.values_list("step", "exception_class", "exception_message")
    )
    assert_invariants(ids)
