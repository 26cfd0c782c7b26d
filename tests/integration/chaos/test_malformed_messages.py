"""Malformed messages on both scan queues, between ordinary uploads, on both worker pools:
each one ends on scan.ai.dlq and in the DeadLetter table, and the worker keeps running
(tests/integration/pipeline/test_malformed_messages.py has the cases and the story)."""

import pytest

from eco2.celery import app
from eco2.queues import SCAN_IMAGE_QUEUE, SCAN_PIPELINE_QUEUE
from scans.broker import DEAD_LETTER_QUEUE
from tests.integration.chaos.conftest import (
    assert_all_completed,
    assert_invariants,
    upload_many,
    wait_all_terminal,
)
from tests.integration.pipeline.test_malformed_messages import (
    CASE_HEADER,
    letters_of,
    malformed_messages,
    publish_raw,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def dead_lettered_cases() -> list[str]:
    """Take every message off scan.ai.dlq (raw, nothing decoded); the test cases they were."""
    cases = []
    with app.connection_for_write() as conn:
        queue = DEAD_LETTER_QUEUE(conn.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            cases.append((message.headers or {}).get(CASE_HEADER, "?"))
    return cases


@pytest.fixture
def empty_dead_letter_queue():
    dead_lettered_cases()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_running(
    pool, worker_manager, rulebase, api, empty_dead_letter_queue
):
    worker = worker_manager.ensure(concurrency=2, pool=pool)
    ai = malformed_messages("scans.tasks.vision_scan")
    image = malformed_messages("scans.tasks.prepare_image")

    before = upload_many(api, 3, hint="콜라 캔")
    publish_raw(SCAN_PIPELINE_QUEUE, ai)
    publish_raw(SCAN_IMAGE_QUEUE, image)
    after = upload_many(api, 3, hint="생수병")

    scans = wait_all_terminal(before + after, timeout=90)
    assert_all_completed(scans)
    expected = sorted([*ai, *image])
    seen: list[str] = []
    wait_for(
        lambda: seen.extend(dead_lettered_cases()) or len(seen) >= len(expected),
        30,
        f"{len(expected)} messages on scan.ai.dlq",
    )
    assert sorted(seen) == expected
    assert worker.process.poll() is None, "the worker exited"
    assert worker_manager.current is worker, "the worker was restarted"
    # each one recorded, for the admin and the dead-letter alert
    recorded = letters_of(ai, image)
    assert recorded.count() == len(expected), list(recorded.values_list("task_id", "reason"))
    assert not recorded.exclude(scan=None).exists() and recorded.pending().count() == len(expected)
    assert_invariants(before + after)
